"""`fastpose config init`: a commented starting config chosen from a shards folder's statistics.

What is measured (`dataset_stats`, on the training split): the number of frames, the median image size, the
distances from each labelled joint to the nearest other labelled joint of the same person (dataset pixels) and the
symmetric pairs of the manifest. What follows from them (`choose`), each with the numbers it came from:

- `global_scale`: the median image's long side scaled to TARGET_SIDE px (middle-low of the 300-400 px that DeeperCut
  networks are trained at: compute grows with its square, and the CPU is the common lab machine); never above 1.
- `pos_dist_thresh` (dataset pixels): the reference's 1.7 cells (17 px at global_scale 0.8 over stride 8) at the
  chosen scale, never below `config.min_pos_dist_thresh` at the smallest scale jitter (every joint has a positive
  cell); the 10th percentile of the nearest-other-joint distances is reported beside it. A first rule, half that
  percentile, gave one-cell discs that learnt too slowly (README, *Your own data*).
- the number of frames: batch size (8, fewer frames than that: all), iterations (EPOCHS passes), and the
  augmentation strength (fewer frames, stronger augmentation: the tiers of AUGMENTATION), unless the iterations give
  fewer than MIN_AUGMENTED_EPOCHS passes over the frames: then only the reference's scale jitter (LIGHT), because a
  network that has not yet fitted the frames themselves gains nothing from harder versions of them (on a validation
  split of the Reaching project's training frames, at equal cost and ~60 epochs: strong 9.26 px, light 7.42-8.06 px,
  README *Your own data*).
- Adam at a rate decayed along a cosine to 0 at the last iteration (`adam_schedule: cosine`): a constant rate leaves
  the weights where the last noisy steps put them (there: training error 4.65 px against 7.1 px at equal cost).
- `mirror` only when the manifest knows symmetric pairs (mirroring otherwise swaps nothing and teaches a left joint
  on the right); `net_type`, `freeze_bn` and the learning rate from whether ImageNet weights are given.

`render` writes the YAML with one comment line above each key; `fastpose.config.load` reads it back unchanged.
"""

from __future__ import annotations

import math
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fastpose.atomic import write_atomic
from fastpose.config import Config, min_pos_dist_thresh
from fastpose.errors import UserError, out_file
from fastpose.shards import ShardDataset

TARGET_SIDE = 320  # network input long side (px) aimed at
STRIDE = Config().stride  # the output stride the written config keeps (8): the radius rule is in its cells
REFERENCE_RADIUS_CELLS = 17 * 0.8 / 8  # the reference's pos_dist_thresh 17 at global_scale 0.8, in stride-8 cells
NEAREST_PERCENTILE = 10  # a low percentile: the closest joints, not the typical ones, must keep apart
EPOCHS = 200  # DeepLabCut 3's default number of epochs for a project
# Fewer passes than half DeepLabCut 3's default: the network is still fitting the frames, augment lightly (LIGHT).
MIN_AUGMENTED_EPOCHS = EPOCHS // 2
MAX_BATCH = 8
# ImageNet-initialised training uses DeepLabCut 3's Adam rate; from random weights the usual Adam 1e-3 (fastpose's
# adam_lr default, 1e-4, is the reference's rate for fine-tuning with batch 1 and learns too slowly from scratch).
LR_PRETRAINED = 5e-4
LR_SCRATCH = 1e-3
# Augmentation by training frames: fewer frames, stronger (DeepLabCut 3 applies rotation +-30 with p = 0.5 and scale
# 0.5-1.25 by default; mmpose adds colour jitter). Each tier: (frames below, name, settings).
AUGMENTATION = (
    (100, "strong", dict(scale_jitter=(0.75, 1.25), rotation_range=[-30.0, 30.0], rotation_p=0.5,
                         colour=(0.7, 1.3, 10.0), color_p=0.5, gaussian_blur_range=[0.5, 1.5], gaussian_blur_p=0.2,
                         motion_blur_range=[3.0, 7.0], motion_blur_p=0.1, gaussian_noise_range=[0.0, 10.0],
                         gaussian_noise_p=0.2)),
    (1000, "medium", dict(scale_jitter=(0.8, 1.2), rotation_range=[-20.0, 20.0], rotation_p=0.4,
                          colour=(0.8, 1.2, 6.0), color_p=0.4, gaussian_blur_range=[0.5, 1.0], gaussian_blur_p=0.1,
                          motion_blur_range=[3.0, 5.0], motion_blur_p=0.05, gaussian_noise_range=[0.0, 6.0],
                          gaussian_noise_p=0.1)),
    (math.inf, "mild", dict(scale_jitter=(0.9, 1.1), rotation_range=[-10.0, 10.0], rotation_p=0.3,
                            colour=(0.9, 1.1, 3.0), color_p=0.3, gaussian_blur_range=[0.5, 1.0], gaussian_blur_p=0.05,
                            motion_blur_range=[3.0, 5.0], motion_blur_p=0.0, gaussian_noise_range=[0.0, 4.0],
                            gaussian_noise_p=0.05)),
)
# Short runs (< MIN_AUGMENTED_EPOCHS): a scale jitter near the reference's MPII 0.85-1.15, nothing else.
LIGHT = dict(scale_jitter=(0.9, 1.1))


@dataclass
class Stats:
    """What config init reads from a split."""

    frames: int
    width: float  # median image width (px)
    height: float  # median image height (px)
    sizes: int  # distinct image sizes
    joints: int  # labelled joints
    nearest: float  # NEAREST_PERCENTILE of the nearest-other-joint distances (dataset px); nan without any pair
    pairs: int  # distances measured
    symmetric: list[list[int]]  # the manifest's pairs [left, right]
    joint_names: list[str]


def nearest_distances(joints: np.ndarray) -> np.ndarray:
    """For each labelled joint, the distance to the nearest other labelled joint of the same person.

    joints (P, K, 3): x, y, visibility (> 0: labelled). Returns a flat array (one value per joint that has a partner).
    """
    out = []
    for person in joints:
        xy = person[person[:, 2] > 0, :2].astype(np.float64)  # (n, 2)
        if len(xy) < 2:
            continue
        d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)  # (n, n)
        np.fill_diagonal(d, np.inf)
        out.append(d.min(axis=1))
    return np.concatenate(out) if out else np.zeros(0)


def dataset_stats(shards: str | Path, split: str = "train") -> Stats:
    """Frames, median size, nearest-joint distances and symmetric pairs of one split of a shards folder."""
    ds = ShardDataset(shards, split)  # UserError for a folder that is no dataset, or a missing split
    try:
        if len(ds) == 0:
            raise UserError(f"{shards}: split '{split}' has no samples, so there is nothing to measure. Pass the "
                            f"split you train on with --split, or convert the data again with frames in it.")
        sizes = ds.column("size").reshape(-1, 3)  # (N, 3) C, H, W
        joints = ds.column("joints").reshape(-1, ds.num_joints, 3)  # (P, K, 3)
        labelled = int((joints[..., 2] > 0).sum())
        if labelled == 0:
            raise UserError(f"{shards}: split '{split}' has {len(ds)} frames but no labelled joint, so neither a "
                            f"scale nor a target radius can be chosen. Label some frames, convert again, and rerun.")
        near = nearest_distances(joints)
        return Stats(frames=len(ds), width=float(np.median(sizes[:, 2])), height=float(np.median(sizes[:, 1])),
                     sizes=len(np.unique(sizes, axis=0)), joints=labelled,
                     nearest=float(np.percentile(near, NEAREST_PERCENTILE)) if len(near) else math.nan,
                     pairs=len(near), symmetric=[list(g) for g in ds.all_joints if len(g) == 2],
                     joint_names=list(ds.joint_names))
    finally:
        ds.close()


def choose(stats: Stats, dataset: str, iters: int | None = None, init_weights: str = "",
           out_dir: str = "run") -> list[tuple[str, Any, str]]:
    """The starting config as (key, value, why) rows, in the order they are written."""
    rows: list[tuple[str, Any, str]] = [("dataset", dataset, f"{stats.frames} training frames, "
                                        f"{len(stats.joint_names)} joints ({', '.join(stats.joint_names[:12])})")]
    if init_weights:
        rows += [("net_type", "resnet_50", "ImageNet weights given: DeepLabCut's default network"),
                 ("init_weights", init_weights, "ImageNet-initialised (fastpose weights download resnet50)"),
                 ("freeze_bn", True, "pretrained batch-norm statistics are kept, as the reference")]
        lr = LR_PRETRAINED
    else:
        rows += [("net_type", "resnet_18", "no ImageNet weights (--init-weights): a small network learns fastest "
                  "from random weights; with weights, rerun with --init-weights for resnet_50"),
                 ("freeze_bn", False, "random init: batch-norm statistics must be learnt")]
        lr = LR_SCRATCH

    long_side = max(stats.width, stats.height)
    scale = min(1.0, round(TARGET_SIDE / long_side, 2))
    rows.append(("global_scale", scale, f"median frame {stats.width:.0f} x {stats.height:.0f} px ({stats.sizes} "
                 f"size{'s' if stats.sizes > 1 else ''}) -> {stats.width * scale:.0f} x {stats.height * scale:.0f} "
                 f"network input (long side aimed at {TARGET_SIDE} px, never enlarged)"))

    batch = min(MAX_BATCH, stats.frames)
    steps = iters if iters is not None else max(1, math.ceil(EPOCHS * stats.frames / batch))
    epochs = steps * batch / stats.frames
    _, tier, aug = next(t for t in AUGMENTATION if stats.frames < t[0])
    why = f"{stats.frames} frames -> {tier} augmentation (< 100 frames strong, < 1000 medium, else mild)"
    if epochs < MIN_AUGMENTED_EPOCHS:
        why = (f"{epochs:.0f} epochs (< {MIN_AUGMENTED_EPOCHS}) -> light augmentation, scale jitter only, not the "
               f"{tier} tier of {stats.frames} frames: in so few passes the network is still fitting the frames "
               f"themselves (train longer for the {tier} tier)")
        tier, aug = "light", LIGHT
    lo, up = aug["scale_jitter"]
    rows += [("scale_jitter_lo", lo, why), ("scale_jitter_up", up, "")]
    if stats.symmetric:
        names = ", ".join(f"{stats.joint_names[a]}/{stats.joint_names[b]}" for a, b in stats.symmetric[:6])
        rows.append(("mirror", True, f"the manifest's symmetric pairs ({names}) swap when mirrored"))
    else:
        rows.append(("mirror", False, "no symmetric pairs in the manifest: a mirrored frame would teach left joints "
                     "on the right"))
    if tier == "light":
        rows += [("rotation_range", [], "off (light augmentation, above); the colour, blur and noise ranges too")]
        rows += [(key, [], "") for key in ("brightness_range", "contrast_range", "saturation_range", "hue_range",
                                           "gaussian_blur_range", "motion_blur_range", "gaussian_noise_range")]
    else:
        b, c, h = aug["colour"]
        rows += [("rotation_range", aug["rotation_range"], why + " (the joints turn with the frame)"),
                 ("rotation_p", aug["rotation_p"], ""), ("brightness_range", [b, c], why + ": lighting differs "
                 "between sessions"), ("contrast_range", [b, c], ""), ("saturation_range", [b, c], ""),
                 ("hue_range", [-h, h], ""), ("color_p", aug["color_p"], "")]
        rows += [(key, aug[key], why + ": focus, fast limbs and sensor noise" if key == "gaussian_blur_range" else "")
                 for key in ("gaussian_blur_range", "gaussian_blur_p", "motion_blur_range", "motion_blur_p",
                             "gaussian_noise_range", "gaussian_noise_p")]

    lowest = min_pos_dist_thresh(STRIDE, scale, lo)
    # The reference's radius in cells, whatever the scale. Not half the nearest-joint distance: each joint has its own
    # score map, so overlapping discs do not compete, and on the Reaching project that radius (one cell) left the
    # score maps without a confident peak after 111 iterations where 1.7 cells had them after 50 (README).
    radius = REFERENCE_RADIUS_CELLS * STRIDE / scale
    basis = f"the reference's 1.7 cells ({radius:.1f} px at scale {scale})"
    if not math.isnan(stats.nearest):
        basis += (f"; the {NEAREST_PERCENTILE}th percentile of the {stats.pairs} nearest-other-joint distances is "
                  f"{stats.nearest:.1f} px (neighbours' discs may overlap: each joint has its own score map)")
    # rounded before ceil so that 80.00000000000001 (float noise of 13.6 / 0.17) is 80; never below the floor
    thresh = float(max(math.ceil(round(radius, 6)), math.ceil(lowest)))
    rows.append(("pos_dist_thresh", thresh, f"dataset px: {basis}, at least {lowest:.1f} px (stride / sqrt(2) at "
                 f"scale {scale} x {lo}) so every joint has a positive cell; {thresh * scale:.1f} px in the network"))
    rows += [("location_refinement", True, "sub-cell precision: the score map alone is 8 px coarse"),
             ("locref_loss_weight", 0.05, "DeepLabCut's weight for the refinement loss")]

    rows += [("optimizer", "adam", "Adam needs no schedule tuning for a new dataset"),
             ("adam_lr", lr, f"{'ImageNet weights: DeepLabCut 3' if init_weights else 'random init: the usual'} "
              f"Adam rate at the start"),
             ("adam_schedule", "cosine", "decayed along a cosine to 0 at the last iteration: at a constant rate the "
              "weights end where the last noisy steps put them (on the Reaching project: README, Your own data)"),
             ("multi_step", [[lr, steps]], f"{steps} iterations = {epochs:.0f} epochs of {stats.frames} frames "
              f"(with adam_schedule cosine, multi_step sets only the length)"
              + ("" if iters is not None else f" (DeepLabCut 3's default {EPOCHS} epochs)")),
             ("batch_size", batch, f"{stats.frames} frames: batch {batch}"),
             ("save_iters", steps, "one snapshot, at the end"),
             ("out_dir", out_dir, "snapshots and logs, relative to this file")]
    return rows


def _yaml_value(value: Any) -> str:
    """A flow-style YAML value that PyYAML reads back as the same Python value (floats always with a dot)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        return text if "e" not in text and "inf" not in text and "nan" not in text else f"{value:.12f}".rstrip("0")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(rows: list[tuple[str, Any, str]], source: str) -> str:
    """The YAML text: a header, then per key the comment saying why (wrapped at 120 columns; a key with an empty
    why shares the comment above it) and the `key: value` line."""
    lines = textwrap.wrap(f"Written by `fastpose config init {source}` from the dataset's statistics; a starting "
                          f"point: edit freely.", 118, initial_indent="# ", subsequent_indent="# ") + [""]
    for key, value, why in rows:
        lines += textwrap.wrap(why, 118, initial_indent="# ", subsequent_indent="# ") if why else []
        lines.append(f"{key}: {_yaml_value(value)}")
    return "\n".join(lines) + "\n"


def init(shards: str | Path, out: str | Path, split: str = "train", iters: int | None = None,
         init_weights: str | Path | None = None) -> tuple[Path, list[tuple[str, Any, str]]]:
    """Write the starting config for `shards` to `out` (atomically); returns the path and the rows."""
    out = out_file(out, "--out", "my.yaml")
    if iters is not None and iters <= 0:
        raise UserError(f"--iters {iters}: the number of training iterations must be positive, e.g. --iters 1000.")
    weights = ""
    if init_weights is not None:
        if not Path(init_weights).is_file():
            raise UserError(f"--init-weights {init_weights} is not a file. Download ImageNet weights with "
                            f"`fastpose weights download resnet50` and pass the printed path.")
        weights = os.path.relpath(Path(init_weights).resolve(), out.resolve().parent)
    stats = dataset_stats(shards, split)
    dataset = os.path.relpath(Path(shards).resolve(), out.resolve().parent)  # load() resolves against out's folder
    rows = choose(stats, dataset, iters, weights)
    write_atomic(out, render(rows, str(shards)))
    return out, rows
