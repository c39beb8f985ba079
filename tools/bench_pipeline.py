"""Benchmark the DALI pipeline against a per-sample PIL/numpy loader doing the same work.

Both loaders read the same shards and apply the same per-sample geometry (`fastpose.pipeline.sample_params`: scale
jitter, clamp, mirror coin): decode, bilinear resize to floor(W s) x floor(H s), mirror, subtract mean_pixel, CHW, pad
the batch to multiples of 16 (the PIL loader is `fastpose.baselines.pil_batches`; the timing is
`fastpose.bench.compare_loaders`, what `fastpose bench data` runs). This script converts the shared DeepLabCut frames
(../shared/data/deeplabcut, 55 PNGs) into shards, once as stored (PNG) and once re-encoded as JPEG q95, and prints both,
each as configured (mirror, scale jitter) and with every training augmentation on every sample
(`fastpose.bench.AUGMENTED`: rotation, colour, Gaussian and motion blur, noise):

    .venv/bin/python tools/bench_pipeline.py --iters 30 --batch-size 8
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from fastpose import config
from fastpose.bench import augmented, compare_loaders
from fastpose.shards import Sample, ShardWriter

DLC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "deeplabcut" / "Reaching-Mackenzie-2018-08-30"


def dlc_shards(out: Path, jpeg_quality: int | None = None) -> Path:
    """The shared DeepLabCut frames and labels as shards (images as stored, or re-encoded as JPEG)."""
    rows = list(csv.reader((DLC / "labeled-data" / "reachingvideo1" / "CollectedData_Mackenzie.csv").open()))
    parts = rows[1][1::2]
    with ShardWriter(out, len(parts), joint_names=parts, samples_per_shard=64) as w:
        for row in rows[3:]:
            path = DLC / row[0]
            data = path.read_bytes()
            with Image.open(path) as im:
                rgb = im.convert("RGB")
            fmt = "png"
            if jpeg_quality is not None:
                buf = io.BytesIO()
                rgb.save(buf, "JPEG", quality=jpeg_quality)
                data, fmt = buf.getvalue(), "jpeg"
            values = [float(v) if v else math.nan for v in row[1:]]
            joints = np.zeros((1, len(parts), 3), np.float32)
            for k in range(len(parts)):
                x, y = values[2 * k], values[2 * k + 1]
                if not (math.isnan(x) or math.isnan(y)):
                    joints[0, k] = (x, y, 2)
            w.add(Sample(image=data, image_format=fmt, size=(3, rgb.height, rgb.width), joints=joints))
        w.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    cfg = config.load(None, [f"num_workers={args.workers}", f"num_threads={args.threads}", "mirror=true",
                             "scale_jitter_lo=0.85", "scale_jitter_up=1.15"])
    with tempfile.TemporaryDirectory() as tmp:
        for name, quality in (("png", None), ("jpeg-q95", 95)):
            root = dlc_shards(Path(tmp) / name, quality)
            for what, c in (("", cfg), (" + every augmentation", augmented(cfg))):
                r = compare_loaders(c, root, "train", args.batch_size, args.iters)
                print(f"{name + what:31s} batch {r['batch_size']} x {r['iters']} on {r['device']} ({r['num_workers']} "
                      f"workers, {r['num_threads']} threads): DALI {r['dali_img_s']:.1f} img/s, PIL/numpy "
                      f"{r['pil_img_s']:.1f} img/s, ratio {r['ratio']:.2f}x; CPU per image: DALI "
                      f"{r['dali_cpu_ms_per_img']:.0f} ms, PIL/numpy {r['pil_cpu_ms_per_img']:.0f} ms")


if __name__ == "__main__":
    main()
