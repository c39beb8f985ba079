"""What `tools/gpu_check.sh` needs on a lent GPU machine that has torch and triton but nothing else of ours.

The device image (Python 3.12, torch with CUDA, triton, numpy, scipy, h5py, pandas, opencv, typer, rich, onnx,
onnxruntime, cmake, nanobind, scikit-build-core) lacks DALI, PyAV, PyTables, pycocotools and the TF-checkpoint
libraries, and nothing can be fetched there. One device call carries at most 64 MiB with the working tree (~6 MB), and
the DALI wheel alone is 199 MB. So, here:

    python3 tools/gpu_kit.py prepare          # downloads the cp312 wheels into .whl/ and cuts them into .whl/c1..cN

(.whl/ must be ignored: `echo /.whl/ >> .git/info/exclude`), then N device calls back to back (the machine stays warm
~30 s after a call, and ignored paths stay there between calls): calls 1..N-1 carry one chunk each and copy it aside
(`mkdir -p /tmp/whl && cp .whl/cI/* /tmp/whl/`, carry `[".whl/cI"]`), the last carries `.whl/cN` and runs
`bash tools/gpu_check.sh`, which joins the parts, installs, and makes its own data with

    python3 tools/gpu_kit.py data DIR         # JPEG shards of ~400 px synthetic figures and a 640x480 H.264 clip
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

# The wheels the device lacks (versions as in this project's .venv), their own needs that the image lacks too, and
# the C++ build's tools at the versions pyproject asks for.
WHEELS = [
    "nvidia-dali-cuda130==2.4.0", "nvidia-libnvcomp-cu13==5.3.0.16", "nvidia-nvimgcodec-cu13==0.9.0.20",
    "nvidia-nvjpeg==13.3.2.43", "nvidia-nvjpeg2k-cu13==0.11.0.51", "nvidia-nvtiff-cu13==0.8.0.82",
    "astunparse==1.6.3", "gast==0.6.0", "optree", "nvtx", "makefun", "libcst~=1.8",  # DALI's
    "av==18.1.0", "tables==3.11.1", "blosc2==4.14.1", "numexpr==2.14.2", "ndindex", "pydantic", "pydantic-core",
    "typing-inspection", "annotated-types",  # PyTables'
    "pycocotools==2.0.11", "cramjam==2.14.0", "google-crc32c==1.9.0",
    "scikit-build-core>=0.11", "nanobind>=2.4",
]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64", "any"]
CHUNK = 54 * 2**20  # bytes per device call: 64 MiB less the working tree (~6.3 MB) and some room


def prepare(out: Path) -> list[Path]:
    """Download the wheels for CPython 3.12 on x86-64 into `out`, then pack them into chunks out/c1.. of <= CHUNK
    bytes, cutting any larger wheel into `<wheel>.partNN` pieces (gpu_check.sh joins them in order)."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           "3.12", "--implementation", "cp", "-d", str(out)]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    subprocess.run(cmd + WHEELS, check=True)
    pieces: list[tuple[str, bytes | Path]] = []  # (name in the chunk, bytes of a part or a whole wheel's path)
    for wheel in sorted(out.glob("*.whl")):
        if wheel.stat().st_size <= CHUNK:
            pieces.append((wheel.name, wheel))
            continue
        data = wheel.read_bytes()
        for i in range(0, len(data), CHUNK):
            pieces.append((f"{wheel.name}.part{i // CHUNK:02d}", data[i:i + CHUNK]))
    chunks: list[list[tuple[str, bytes | Path]]] = []  # first fit, largest first: the fewest device calls
    room: list[int] = []
    for name, what in sorted(pieces, key=lambda p: -_size(p[1])):
        n = _size(what)
        i = next((i for i, r in enumerate(room) if r >= n), len(room))
        if i == len(room):
            chunks.append([])
            room.append(CHUNK)
        chunks[i].append((name, what))
        room[i] -= n
    folders = []
    for i, chunk in enumerate(chunks, 1):
        folder = out / f"c{i}"
        folder.mkdir(exist_ok=True)
        for name, what in chunk:
            (folder / name).write_bytes(what if isinstance(what, bytes) else what.read_bytes())
        folders.append(folder)
    return folders


def _size(what: bytes | Path) -> int:
    return len(what) if isinstance(what, bytes) else what.stat().st_size


def data(out: Path, n: int = 256, frames: int = 600) -> None:
    """out/shards: n JPEG (q95) synthetic figures of 360-440 px a side (fastpose.convert.synth's drawing);
    out/clip.mp4: `frames` 640x480 H.264 frames at 30 fps of the figures moving (issue 13's GPU goal's video)."""
    # Imported here: `prepare` runs before these are installed on the device (and with any python3 here).
    import av
    import cv2
    import numpy as np

    from fastpose.convert.synth import JOINT_NAMES, draw_sample
    from fastpose.shards import Sample, ShardWriter

    rng = np.random.default_rng(0)
    with ShardWriter(out / "shards", len(JOINT_NAMES), list(JOINT_NAMES), samples_per_shard=128) as w:
        for i in range(n):
            img, joints = draw_sample(rng, (360, 440))  # (H, W, 3) RGB, (K, 3)
            ok, jpg = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
            w.add(Sample(image=jpg.tobytes(), image_format="jpeg", size=(3, *img.shape[:2]),
                         joints=joints[None].astype(np.float32), source_index=i))
        w.close()
    figures = [draw_sample(rng, (200, 240))[0] for _ in range(8)]
    with av.open(str(out / "clip.mp4"), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 640, 480, "yuv420p"
        for t in range(frames):
            frame = np.full((480, 640, 3), 40, np.uint8)
            fig = figures[(t // 30) % len(figures)]
            x, y = (7 * t) % (640 - fig.shape[1]), (3 * t) % (480 - fig.shape[0])
            frame[y:y + fig.shape[0], x:x + fig.shape[1]] = fig
            for packet in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("prepare", help="download and chunk the wheels (here)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / ".whl")
    d = sub.add_parser("data", help="make the check's shards and clip (there)")
    d.add_argument("out", type=Path)
    d.add_argument("--n", type=int, default=256)
    d.add_argument("--frames", type=int, default=600)
    args = ap.parse_args()
    if args.what == "prepare":
        for folder in prepare(args.out):
            size = sum(f.stat().st_size for f in folder.iterdir())
            print(f"{folder}: {size / 2**20:.1f} MiB, {len(list(folder.iterdir()))} files")
    else:
        data(args.out, args.n, args.frames)


if __name__ == "__main__":
    main()
