"""Benchmark the DALI pipeline against a per-sample PIL/numpy loader doing the same work.

Both loaders read the same shards and apply the same per-sample geometry (`fastpose.pipeline.sample_params`: scale
jitter, clamp, mirror coin): decode, bilinear resize to floor(W s) x floor(H s), mirror, subtract mean_pixel, CHW, pad
the batch to multiples of 16. `bench_data(cfg, dataset_dir, split, batch_size, iters)` returns img/s of both and their
ratio (the future `fastpose bench data` calls it). Run as a script, it converts the shared DeepLabCut frames
(../shared/data/deeplabcut, 55 PNGs) into shards, once as stored (PNG) and once re-encoded as JPEG q95, and prints both:

    .venv/bin/python tools/bench_pipeline.py --iters 30 --batch-size 8
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fastpose import config
from fastpose.pipeline import ALIGN, Augment, build_loader, epoch_order, sample_params, symmetric_permutation
from fastpose.shards import Sample, ShardDataset, ShardWriter

DLC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "deeplabcut" / "Reaching-Mackenzie-2018-08-30"


def pil_sample(data: bytes, res_w: int, res_h: int, flip: bool, mean: list[float]) -> np.ndarray:
    """(3, res_h, res_w) float32: decoded, bilinear-resized, mirrored, mean-subtracted (the reference's work)."""
    with Image.open(io.BytesIO(data)) as im:
        img = im.convert("RGB").resize((res_w, res_h), Image.BILINEAR)
    a = np.asarray(img, np.float32)  # (H, W, 3)
    if flip:
        a = a[:, ::-1]
    a = a - np.asarray(mean, np.float32)
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def pil_batch(samples: list[np.ndarray]) -> torch.Tensor:
    """(B, 3, H, W) float32, zero-padded to the batch maximum rounded up to a multiple of 16."""
    h = math.ceil(max(s.shape[1] for s in samples) / ALIGN) * ALIGN
    w = math.ceil(max(s.shape[2] for s in samples) / ALIGN) * ALIGN
    out = np.zeros((len(samples), 3, h, w), np.float32)
    for i, s in enumerate(samples):
        out[i, :, :s.shape[1], :s.shape[2]] = s
    return torch.from_numpy(out)


def pil_batches(cfg, dataset_dir, split: str, batch_size: int, train: bool = True):
    """Endless generator of (B, 3, H, W) batches, same order and geometry as `build_loader` (rank 0 of 1)."""
    ds = ShardDataset(dataset_dir, split)
    aug = Augment(train=train, global_scale=cfg.global_scale, jitter_lo=cfg.scale_jitter_lo,
                  jitter_up=cfg.scale_jitter_up, mirror=cfg.mirror, max_input_size=cfg.max_input_size, crop_w=0,
                  crop_h=0, seed=cfg.seed, perm=symmetric_permutation(ds.num_joints, ds.all_joints))
    epoch = 0
    while True:
        order = epoch_order(len(ds), epoch, seed=cfg.seed, batch_size=batch_size, train=train,
                            shuffle=cfg.shuffle and train)
        for b in range(len(order) // batch_size):
            samples = []
            for index in order[b * batch_size:(b + 1) * batch_size]:
                s = ds[int(max(index, 0))]
                p = sample_params(aug, epoch, int(index), s.size[2], s.size[1], s.joints)
                samples.append(pil_sample(s.image, p.res_w, p.res_h, p.flip, cfg.mean_pixel))
            yield pil_batch(samples)
        epoch += 1


def _rate(batches, batch_size: int, iters: int) -> float:
    """img/s over `iters` batches after one warm-up batch."""
    it = iter(batches)
    next(it)
    t = time.perf_counter()
    for _ in range(iters):
        next(it)
    return iters * batch_size / (time.perf_counter() - t)


def _dali_batches(loader):
    while True:
        yield from loader


def bench_data(cfg, dataset_dir, split: str = "train", batch_size: int = 8, iters: int = 30) -> dict:
    """img/s of the DALI loader and of the PIL/numpy per-sample loader on the same data and work, and the ratio."""
    loader = build_loader(cfg, dataset_dir, split, train=True, batch_size=batch_size)
    try:
        dali = _rate(_dali_batches(loader), batch_size, iters)
        device = str(loader.device)
    finally:
        loader.close()
    pil = _rate(pil_batches(cfg, dataset_dir, split, batch_size), batch_size, iters)
    return {"dataset": str(dataset_dir), "split": split, "batch_size": batch_size, "iters": iters, "device": device,
            "num_workers": cfg.num_workers, "num_threads": cfg.num_threads, "dali_img_s": dali, "pil_img_s": pil,
            "ratio": dali / pil}


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
            r = bench_data(cfg, root, "train", args.batch_size, args.iters)
            print(f"{name:9s} batch {r['batch_size']} x {r['iters']} on {r['device']} ({r['num_workers']} workers, "
                  f"{r['num_threads']} threads): DALI {r['dali_img_s']:.1f} img/s, PIL/numpy {r['pil_img_s']:.1f} "
                  f"img/s, ratio {r['ratio']:.2f}x")


if __name__ == "__main__":
    main()
