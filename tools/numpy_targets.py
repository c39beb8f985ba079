"""Score-map and locref targets the way the reference computed them: a numpy loop per sample, person and joint.

This is the baseline for `tools/bench_targets.py` and the independent oracle of `tests/test_targets.py`; it shares
no code with `fastpose.kernels.targets`. Each joint visits only the cells within reach of its threshold (a window
one cell wider than needed on every side, clipped to the grid) and marks those with dx^2 + dy^2 <= t^2. The
arithmetic is float32 with the same operations as the kernels (dx = x - centre, d2 = dy*dy + dx*dx, t2 = t*t), so
cells exactly on the threshold agree bit for bit. A nearer person overwrites the locref of a cell; a tie keeps the
earlier person (the reference's strict `>` comparison of normalised distances).
"""

from __future__ import annotations

import math

import numpy as np


def numpy_targets(joints, grid, stride=8, dist_thresh=17.0, locref_stdev=7.2801, ignore=None, present_only=False):
    """Returns (scmap, scmap_weights, locref, locref_mask) as float32 numpy arrays; see fastpose.kernels.targets.

    joints (B, P, K, 3) array-like; dist_thresh a float or (B,) array-like; ignore None or (B, 1, H, W).
    """
    joints = np.asarray(joints, dtype=np.float32)
    b, p, k, _ = joints.shape
    h, w = int(grid[0]), int(grid[1])
    thresh = np.broadcast_to(np.asarray(dist_thresh, dtype=np.float32), (b,))
    f32 = np.float32
    half = f32(stride) / f32(2)
    cols = np.arange(w, dtype=np.float32) * f32(stride) + half  # (W,) cell centres x
    rows = np.arange(h, dtype=np.float32) * f32(stride) + half  # (H,) cell centres y
    stdev = f32(locref_stdev)

    scmap = np.zeros((b, k, h, w), np.float32)
    locref = np.zeros((b, k, 2, h, w), np.float32)
    for s in range(b):
        t = thresh[s]
        t2 = t * t
        best = np.full((k, h, w), np.inf, np.float32)  # squared distance of the person holding each cell
        for person in range(p):
            for j in range(k):
                x, y, v = joints[s, person, j]
                if not (v > 0 and math.isfinite(x) and math.isfinite(y)):
                    continue
                # Window of candidate cells, one spare cell on each side; the exact test below decides.
                lo_i = max(int(math.floor((float(x) - float(t) - float(half)) / stride)) - 1, 0)
                hi_i = min(int(math.ceil((float(x) + float(t) - float(half)) / stride)) + 1, w - 1)
                lo_j = max(int(math.floor((float(y) - float(t) - float(half)) / stride)) - 1, 0)
                hi_j = min(int(math.ceil((float(y) + float(t) - float(half)) / stride)) + 1, h - 1)
                if lo_i > hi_i or lo_j > hi_j:
                    continue
                dx = x - cols[lo_i : hi_i + 1]  # (wi,)
                dy = y - rows[lo_j : hi_j + 1]  # (wj,)
                d2 = dy[:, None] * dy[:, None] + dx[None, :] * dx[None, :]  # (wj, wi)
                covered = d2 <= t2
                win = best[j, lo_j : hi_j + 1, lo_i : hi_i + 1]  # a view: updated in place
                nearer = covered & (d2 < win)
                win[nearer] = d2[nearer]
                scmap[s, j, lo_j : hi_j + 1, lo_i : hi_i + 1][covered] = 1.0
                lx = locref[s, j, 0, lo_j : hi_j + 1, lo_i : hi_i + 1]
                ly = locref[s, j, 1, lo_j : hi_j + 1, lo_i : hi_i + 1]
                lx[nearer] = np.broadcast_to(dx[None, :] / stdev, d2.shape)[nearer]
                ly[nearer] = np.broadcast_to(dy[:, None] / stdev, d2.shape)[nearer]

    weights = np.ones((b, k, h, w), np.float32)
    if present_only:
        present = (joints[..., 2] > 0) & np.isfinite(joints[..., 0]) & np.isfinite(joints[..., 1])  # (B, P, K)
        weights *= present.any(axis=1).astype(np.float32)[:, :, None, None]
    if ignore is not None:
        weights *= 1.0 - np.asarray(ignore, dtype=np.float32)
    locref_mask = np.repeat(scmap, 2, axis=1)  # (B, 2K, H, W), channels 2k and 2k + 1 from scmap[:, k]
    return scmap, weights, locref.reshape(b, 2 * k, h, w), locref_mask
