"""Pieces shared by the grid-target kernels (targets.py, pairwise.py): input checks, the launch options, and the two
Triton helpers that place a program's tile of cells and test one joint against it.

Both kernels run one program per (sample, joint, tile of BLOCK cells); cell (row j, column i) has its centre at
(i * stride + stride / 2, j * stride + stride / 2), and a present joint covers it when dx^2 + dy^2 <= t^2 in float32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

DEFAULT_STRIDE = 8
# The kernels compute dx^2 + dy^2 and compare it with t^2 like the twins: a multiply, a multiply, an add, each
# rounded. A fused multiply-add (what the GPU compiler does by default) rounds once less, so a joint exactly on the
# threshold could miss a cell the twin gives it; the targets are memory-bound, so the fusion buys no speed here.
LAUNCH_OPTIONS = {"enable_fp_fusion": False}


def check_inputs(joints, grid, stride, dist_thresh, locref_stdev, ignore) -> tuple[int, int, torch.Tensor]:
    """Validates shapes and returns (H, W, thresholds (B,) float32 on the joints' device)."""
    if joints.dim() != 4 or joints.shape[-1] != 3:
        raise ValueError(f"joints must have shape (B, P, K, 3) = x, y, present; got {tuple(joints.shape)}")
    if len(grid) != 2 or int(grid[0]) <= 0 or int(grid[1]) <= 0:
        raise ValueError(f"grid must be (H, W) with positive sizes; got {grid}")
    if stride <= 0 or locref_stdev <= 0:
        raise ValueError(f"stride and locref_stdev must be positive; got stride={stride}, locref_stdev={locref_stdev}")
    h, w = int(grid[0]), int(grid[1])
    b = joints.shape[0]
    if isinstance(dist_thresh, torch.Tensor):
        if dist_thresh.dim() == 0:
            dist_thresh = dist_thresh.reshape(1).expand(b)
        if tuple(dist_thresh.shape) != (b,):
            raise ValueError(f"dist_thresh must be a float or a ({b},) tensor; got shape {tuple(dist_thresh.shape)}")
        thresh = dist_thresh.to(device=joints.device, dtype=torch.float32)
    else:
        if not dist_thresh >= 0:
            raise ValueError(f"dist_thresh must be >= 0; got {dist_thresh}")
        thresh = torch.full((b,), float(dist_thresh), device=joints.device, dtype=torch.float32)
    if ignore is not None and tuple(ignore.shape) != (b, 1, h, w):
        raise ValueError(f"ignore must have shape ({b}, 1, {h}, {w}); got {tuple(ignore.shape)}")
    return h, w, thresh


@triton.jit
def tile(thresh_ptr, K, H, W, tiles, stride, BLOCK: tl.constexpr):
    # The program's (b, k) plane and tile of BLOCK cells: returns bk = b * K + k, b, k, the (BLOCK,) cell indices
    # j * W + i, which of them lie in the grid, the cells' centres (cx, cy) and t^2 of sample b.
    pid = tl.program_id(0)
    tile = pid % tiles
    bk = pid // tiles
    c = tile * BLOCK + tl.arange(0, BLOCK)
    cx = (c % W).to(tl.float32) * stride + stride * 0.5
    cy = (c // W).to(tl.float32) * stride + stride * 0.5
    t = tl.load(thresh_ptr + bk // K)
    return bk, bk // K, bk % K, c, c < H * W, cx, cy, t * t


@triton.jit
def covers(joints_ptr, b, p, k, P, K, cx, cy, t2, best):
    # Joint k of person p in sample b against the tile's cells: returns whether the joint counts (present and
    # finite), dx, dy and d2 = dy^2 + dx^2 per cell, and where it covers the cell nearer than `best` (strictly: ties
    # keep the lower person index).
    base = ((b * P + p) * K + k) * 3
    jx = tl.load(joints_ptr + base)
    jy = tl.load(joints_ptr + base + 1)
    jv = tl.load(joints_ptr + base + 2)
    # Absent or non-finite joints cover nothing (x - x != 0 catches inf and nan): their threshold becomes -1.
    ok = (jv > 0) & (jx - jx == 0) & (jy - jy == 0)
    dx = jx - cx
    dy = jy - cy
    d2 = dy * dy + dx * dx
    closer = (d2 <= tl.where(ok, t2, -1.0)) & (d2 < best)
    return ok, dx, dy, d2, closer
