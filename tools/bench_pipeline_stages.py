"""CPU cost per image of each augmentation stage of the DALI pipeline, beside the PIL/numpy loader's for the same stage.

Each row builds both loaders (`fastpose.bench.compare_loaders`) with the shared DeepLabCut frames (as in
tools/bench_pipeline.py) and one stage on every sample on top of the rotation (the single resampling every augmented
sample goes through); the last row turns every stage on (`fastpose.bench.AUGMENTED`). A stage's cost is its row's CPU
milliseconds per image (the loader's process and its data workers, user + system) minus the rotation row's. CPU time,
not wall time, so that other work on the machine distorts the figures little (run it under `nice -n -5` all the same;
on a loaded 2-core machine a row still varies by ~5 ms between runs). The PIL/numpy rows whose image stays uint8 to the
end (rotation alone, colour alone) pay for numpy's float16 `rint` of uint8 in `pil_augmented`'s last rounding (~35 ms);
with blur or noise the image is float32 or int16 there:

    .venv/bin/python tools/bench_pipeline_stages.py --iters 10 --batch-size 8 [--jpeg]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench_pipeline import dlc_shards

from fastpose import config
from fastpose.bench import AUGMENTED, compare_loaders

# Each stage's settings at AUGMENTED's strength, probability 1 (on top of ROTATION except the first row).
ROTATION = {k: AUGMENTED[k] for k in ("rotation_range", "rotation_p")}
STAGES = {
    "resize (no rotation)": {},
    "warp_affine (rotation)": ROTATION,
    "+ color_twist": {**ROTATION, **{k: AUGMENTED[k] for k in ("brightness_range", "contrast_range",
                                                              "saturation_range", "hue_range", "color_p")}},
    "+ gaussian blur": {**ROTATION, **{k: AUGMENTED[k] for k in ("gaussian_blur_range", "gaussian_blur_p")}},
    "+ motion blur": {**ROTATION, **{k: AUGMENTED[k] for k in ("motion_blur_range", "motion_blur_p")}},
    "+ noise": {**ROTATION, **{k: AUGMENTED[k] for k in ("gaussian_noise_range", "gaussian_noise_p")}},
    "every augmentation": AUGMENTED,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--jpeg", action="store_true", help="the frames re-encoded as JPEG q95 (default: PNG as stored)")
    ap.add_argument("--only", nargs="*", default=None, help="rows to run (prefixes of their names)")
    args = ap.parse_args()
    base = [f"num_workers={args.workers}", f"num_threads={args.threads}", "mirror=true", "scale_jitter_lo=0.85",
            "scale_jitter_up=1.15"]
    with tempfile.TemporaryDirectory() as tmp:
        root = dlc_shards(Path(tmp) / "frames", 95 if args.jpeg else None)
        ref = None
        for name, settings in STAGES.items():
            if args.only is not None and not any(name.startswith(o) for o in args.only):
                continue
            cfg = config.load(None, base + [f"{k}={v}" for k, v in settings.items()])
            r = compare_loaders(cfg, root, "train", args.batch_size, args.iters)
            dali, pil = r["dali_cpu_ms_per_img"], r["pil_cpu_ms_per_img"]
            if name.startswith("warp_affine"):
                ref = (dali, pil)
            extra = ""
            if name.startswith("+") and ref is not None:
                extra = f"  (stage: DALI {dali - ref[0]:+.1f} ms, PIL/numpy {pil - ref[1]:+.1f} ms)"
            print(f"{name:24s} CPU per image: DALI {dali:6.1f} ms, PIL/numpy {pil:6.1f} ms; wall DALI "
                  f"{r['dali_img_s']:5.1f} img/s, PIL/numpy {r['pil_img_s']:5.1f} img/s, ratio {r['ratio']:.2f}x"
                  f"{extra}", flush=True)


if __name__ == "__main__":
    main()
