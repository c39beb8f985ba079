"""The embedded demo (`make demo`): synthesise a dataset, convert it, train, evaluate, draw predictions.

Everything runs from the repository's configs/demo.yaml on data drawn by `fastpose synth`, so it needs no download:
a user sees the whole flow (convert -> train -> eval -> predict) work on their machine, on the CPU in a few minutes or
on a GPU when there is one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np

from fastpose.atomic import write_atomic
from fastpose.config import load
from fastpose.convert import mat, synth
from fastpose.draw import draw_pose
from fastpose.errors import UserError
from fastpose.evaluate import evaluate
from fastpose.pipeline import decode_rgb
from fastpose.shards import ShardDataset
from fastpose.train import train

# Small images keep the CPU demo to a few minutes (a ResNet step costs about the square of the side).
DEMO_SIZES = (112, 144)


def run(config: str | Path, out: str | Path, *, n: int = 600, overrides: list[str] | None = None,
        max_iters: int | None = None) -> dict:
    """Run the demo into `out`; returns {"metrics", "picture", "train", "shards"}. A previous demo run is replaced."""
    if n <= 0:
        raise UserError(f"--n {n}: the demo needs a positive number of synthetic images (default 600).")
    out = Path(out).resolve()
    shards = out / "shards"
    run_dir = out / "run"
    cfg = load(config, [f"dataset={shards}", f"out_dir={run_dir}", *(overrides or [])])
    if not (out / "synth" / "dataset.mat").is_file():
        synth.make_dataset(out / "synth", n=n, seed=cfg.seed, sizes=DEMO_SIZES)
    mat.convert(out / "synth" / "dataset.mat", shards, num_joints=cfg.num_joints, joint_names=cfg.joint_names,
                all_joints=cfg.all_joints, skeleton=cfg.skeleton, split="train=0.9,test=0.1", seed=cfg.seed,
                overwrite=True)
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run each time: the demo shows training from scratch
    result = train(cfg, max_iters=max_iters)
    model_cfg = result["config"]
    evaluation = evaluate(model_cfg, result["snapshot"], split="test")
    picture = draw_predictions(shards, evaluation, model_cfg, out / "predictions.png")
    return {"metrics": evaluation["metrics"], "picture": picture, "train": result, "shards": shards}


def draw_predictions(shards: Path, evaluation: dict, cfg, path: Path, count: int = 8) -> Path:
    """A 2 x 4 grid of held-out images with their predicted skeletons, written atomically as PNG."""
    ds = ShardDataset(shards, "test")
    tiles = []
    for i in range(min(count, len(ds))):
        img = decode_rgb(ds.image_bytes(i))  # (H, W, 3) RGB
        pred = evaluation["predictions"][i]  # (K, 3) x, y, score in sample pixels
        drawn = draw_pose(np.ascontiguousarray(img), pred[:, :2], pred[:, 2], cfg.skeleton)
        tiles.append(cv2.resize(drawn, (208, 208)))
    ds.close()
    while len(tiles) % 4:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[r:r + 4], axis=1) for r in range(0, len(tiles), 4)]
    grid = np.concatenate(rows, axis=0)
    return write_atomic(path, lambda tmp: cv2.imwrite(str(tmp), grid[:, :, ::-1]))
