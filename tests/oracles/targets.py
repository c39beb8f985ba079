"""Loop-by-loop numpy references of the training targets (fastpose.kernels.targets and .pairwise), written from
their module docstrings and not from their code: what the loss tests compare the training loss against.

Cell (row j, column i) has its centre (i * stride + stride / 2, j * stride + stride / 2); joint k of person p covers
it when present (> 0) and (dx^2 + dy^2) <= radius^2 in float32; the owner is the nearest covering person, ties to the
lower person index. Every function takes joints (B, P, K, 3) x, y, present and radius (B,), and returns float64.
"""

from __future__ import annotations

import numpy as np


def _owner(joints: np.ndarray, b: int, k: int, cx: float, cy: float, radius: float) -> int | None:
    """The person whose joint k covers the cell centre (cx, cy) nearest (the lower index on ties), or None."""
    best, owner = None, None
    for p in range(joints.shape[1]):
        x, y, present = (float(v) for v in joints[b, p, k])
        if not present > 0:
            continue
        d2 = np.float32(np.float32(x - cx) ** 2 + np.float32(y - cy) ** 2)
        if d2 <= np.float32(radius) ** 2 and (best is None or d2 < best):
            best, owner = d2, p
    return owner


def part_targets(joints, grid: tuple[int, int], stride: int, radius, locref_stdev: float, valid_hw):
    """(scmap (B, K, H, W), weights (B, K, H, W), locref (B, 2K, H, W), locref_mask (B, 2K, H, W)): weights are 0 on
    the cells whose centre lies outside the valid (unpadded) height or width valid_hw (B, 2), else 1."""
    joints = np.asarray(joints, np.float64)
    b_n, _, k_n, _ = joints.shape
    h, w = grid
    scmap, weights = np.zeros((b_n, k_n, h, w)), np.zeros((b_n, k_n, h, w))
    locref, mask = np.zeros((b_n, 2 * k_n, h, w)), np.zeros((b_n, 2 * k_n, h, w))
    for b in range(b_n):
        for j in range(h):
            for i in range(w):
                cx, cy = i * stride + stride / 2, j * stride + stride / 2
                weights[b, :, j, i] = float(cy < valid_hw[b][0] and cx < valid_hw[b][1])
                for k in range(k_n):
                    p = _owner(joints, b, k, cx, cy, float(radius[b]))
                    if p is None:
                        continue
                    scmap[b, k, j, i] = 1
                    mask[b, 2 * k:2 * k + 2, j, i] = 1
                    locref[b, 2 * k, j, i] = (joints[b, p, k, 0] - cx) / locref_stdev
                    locref[b, 2 * k + 1, j, i] = (joints[b, p, k, 1] - cy) / locref_stdev
    return scmap, weights, locref, mask


def pairwise_targets(joints, grid: tuple[int, int], stride: int, radius, mean, std):
    """(target (B, 2K(K-1), H, W), mask): pair (s, e), s != e, in channels 2 id, 2 id + 1 with id the row-major index
    of the off-diagonal pairs; ((joint_e - centre) - mean[b, s, e]) / std[b, s, e] at the cells whose owner for s has
    joint e. mean, std (B, K, K, 2) in the network input's pixels."""
    joints = np.asarray(joints, np.float64)
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    b_n, _, k_n, _ = joints.shape
    h, w = grid
    pairs = [(s, e) for s in range(k_n) for e in range(k_n) if s != e]
    target, mask = np.zeros((b_n, 2 * len(pairs), h, w)), np.zeros((b_n, 2 * len(pairs), h, w))
    for b in range(b_n):
        for j in range(h):
            for i in range(w):
                centre = np.array([i * stride + stride / 2, j * stride + stride / 2])
                for pid, (s, e) in enumerate(pairs):
                    p = _owner(joints, b, s, centre[0], centre[1], float(radius[b]))
                    if p is None or not joints[b, p, e, 2] > 0:
                        continue
                    target[b, 2 * pid:2 * pid + 2, j, i] = (joints[b, p, e, :2] - centre - mean[b, s, e]) / std[b, s, e]
                    mask[b, 2 * pid:2 * pid + 2, j, i] = 1
    return target, mask
