"""Two synthetic people walking past each other, and a ResNet-18 PoseNet whose weights are set by hand so that it
finds them: the multi-person tests' frames and model, with nothing learnt (no training inside a test).

A person is three joints, each a Gaussian blob in its own colour channel on a black frame: head (red), left foot
(green), right foot (blue). The network's convolutions are zero except for three paths that carry colour channel c
to part map c: the stem conv blurs channel c into feature c, every residual branch is zero (so a block passes its
shortcut on), each `downsample` 1x1 conv copies channels 0-2, and the part head upsamples feature c bilinearly into
joint c's logits. Features are the stem's output subsampled at input pixels 16i (stride 16), so a blob centred on a
multiple of 16 gives one clear peak, at cell 2i + 1 of the stride-8 maps (x = 16i + 12 after `decode`'s half-cell
centring). Location refinement and pairwise heads are zero: the assembly predicts each offset as the pairwise
statistics' mean, which is the figure's own offsets, so the edges within a person are exact and the edges between
the two people miss by their separation (32 px at std 8).

The people are 64 x 96 px and step 16 px per frame (the grid allows no less): the tracker's first match of a track,
before it knows the velocity, is then OKS exp(-16^2 / (2 * 64 * 96 * 0.1^2)) = 0.125 against its 0.05 threshold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from fastpose import config as config_mod
from fastpose.model import build_model
from fastpose.pairwise import save_stats

NAMES = ["head", "l_foot", "r_foot"]
FIGURE = np.array([[0.0, 0.0], [-32.0, 96.0], [32.0, 96.0]])  # (K, 2) x, y of each joint from the head: on the grid
H, W, N = 176, 256, 12
STEP = 16  # px per frame: positions stay on multiples of 16 (one clear peak per blob, see the module doc)
SIGMA = 6.0  # blob radius (px): brighter than the mean pixel up to ~7 px from its centre
STD = 8.0  # pairwise statistics' std (px)
GAIN, BIAS = 4.0, 4.0  # part logit = GAIN * feature - BIAS: ~+4.5 at a blob's peak, -4 on black


def truth(n: int = N) -> np.ndarray:
    """(n, 2, K, 2) joint x, y of person A (head row 32, walking right from x 32) and B (head row 64, walking left
    from x 208): they pass each other between frames 5 and 6, their boxes overlapping (rows 64-128 are in both)."""
    f = np.arange(n, dtype=np.float64)[:, None]
    heads = np.stack([np.concatenate([32 + STEP * f, np.full_like(f, 32)], 1),
                      np.concatenate([208 - STEP * f, np.full_like(f, 64)], 1)], 1)  # (n, 2, 2)
    return heads[:, :, None, :] + FIGURE[None, None]


def frames(n: int = N) -> list[np.ndarray]:
    """n (H, W, 3) uint8 RGB frames of the two walkers: joint k a Gaussian blob of peak 255 in channel k."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    out = []
    for people in truth(n):
        img = np.zeros((H, W, 3))
        for person in people:
            for k, (x, y) in enumerate(person):
                img[:, :, k] += 255.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * SIGMA**2))
        out.append(np.clip(np.rint(img), 0, 255).astype(np.uint8))
    return out


def config(stats: Path, **extra):
    """The detector's config, with pairwise statistics (mean = the figure's offsets) saved to `stats`."""
    mean = FIGURE[None, :, :] - FIGURE[:, None, :]  # (K, K, 2): offset from joint s to joint e
    k = len(NAMES)
    save_stats(stats, mean, np.full((k, k, 2), STD), np.ones((k, k), np.int64))
    values = dict(net_type="resnet_18", num_joints=k, joint_names=NAMES, skeleton=[[0, 1], [0, 2]],
                  location_refinement=True, global_scale=1.0, device="cpu", precision="fp32", seed=0,
                  pairwise_stats_fn=str(stats), nms_radius=2.0)  # A's and B's heads are 4 cells apart
    values.update(extra)
    return config_mod.load(None, **values)


@torch.no_grad()
def detector(cfg) -> nn.Module:
    """The hand-set network of the module doc for cfg (a resnet_18 with K = 3), in eval mode."""
    model = build_model(cfg).eval()
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            m.weight.zero_()
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d):  # identity (up to eps)
            m.weight.fill_(1.0)
            m.bias.zero_()
            m.running_mean.zero_()
            m.running_var.fill_(1.0)
    r = torch.arange(7, dtype=torch.float32) - 3
    blur = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / 2)  # (7, 7) Gaussian, sigma 1 px
    bilinear = torch.tensor([0.5, 1.0, 0.5])
    for c in range(3):
        model.conv1.weight[c, c] = blur / blur.sum()
        model.part.deconv.weight[c, c] = GAIN * bilinear[:, None] * bilinear[None, :]  # (in, out, 3, 3)
        model.part.deconv.bias[c] = -BIAS
        for m in model.modules():
            if getattr(m, "downsample", None) is not None:
                m.downsample[0].weight[c, c] = 1.0  # (out, in, 1, 1)
    return model
