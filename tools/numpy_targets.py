"""Score-map and locref targets the way the reference computed them: a numpy loop per sample, person and joint.

This is the baseline for `tools/bench_targets.py` and the independent oracle of `tests/test_targets.py`; it shares
no code with `fastpose.kernels.targets`. Like the reference, it visits cell by cell in Python, but only the cells
within reach of the threshold (a window one cell wider than needed on every side, clipped to the grid), and marks
those with dx^2 + dy^2 <= t^2. A nearer person overwrites the locref of a cell; a tie keeps the earlier person (the
reference's strict `>` comparison of normalised distances). The arithmetic is Python float (float64), as in the
reference; the kernels use float32, so the two can disagree only for a cell within float32 rounding of the
threshold (or of a tie between two persons), and locref differs in the last float32 bit at most.
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
    half = stride / 2.0

    scmap = np.zeros((b, k, h, w), np.float32)
    locref = np.zeros((b, k, 2, h, w), np.float32)
    best = np.full((k, h, w), np.inf)  # squared distance of the person holding each cell (one sample)
    for s in range(b):
        t = float(thresh[s])
        t2 = t * t
        best.fill(np.inf)
        for person in range(p):
            for j in range(k):
                x, y, v = (float(c) for c in joints[s, person, j])
                if not (v > 0 and math.isfinite(x) and math.isfinite(y)):
                    continue
                # Window of candidate cells, one spare cell on each side; the exact test below decides.
                lo_i = max(math.floor((x - t - half) / stride) - 1, 0)
                hi_i = min(math.ceil((x + t - half) / stride) + 1, w - 1)
                lo_j = max(math.floor((y - t - half) / stride) - 1, 0)
                hi_j = min(math.ceil((y + t - half) / stride) + 1, h - 1)
                for r in range(lo_j, hi_j + 1):
                    dy = y - (r * stride + half)
                    for c in range(lo_i, hi_i + 1):
                        dx = x - (c * stride + half)
                        d2 = dx * dx + dy * dy
                        if d2 <= t2:
                            scmap[s, j, r, c] = 1.0
                            if d2 < best[j, r, c]:  # strict: a tie keeps the earlier person
                                best[j, r, c] = d2
                                locref[s, j, 0, r, c] = dx / locref_stdev
                                locref[s, j, 1, r, c] = dy / locref_stdev

    weights = np.ones((b, k, h, w), np.float32)
    if present_only:
        present = (joints[..., 2] > 0) & np.isfinite(joints[..., 0]) & np.isfinite(joints[..., 1])  # (B, P, K)
        weights *= present.any(axis=1).astype(np.float32)[:, :, None, None]
    if ignore is not None:
        weights *= 1.0 - np.asarray(ignore, dtype=np.float32)
    locref_mask = np.repeat(scmap, 2, axis=1)  # (B, 2K, H, W), channels 2k and 2k + 1 from scmap[:, k]
    return scmap, weights, locref.reshape(b, 2 * k, h, w), locref_mask
