"""Training targets for the part detector: score maps, their weights, location refinement and its mask.

Semantics (the reference's per-sample numpy targets, for a whole batch at once):

- `joints` (B, P, K, 3) float: x, y, present for P persons (padded) and K joints, in the network input's pixel
  coordinates (after scaling and mirroring). A joint counts as present when present > 0 and x, y are finite.
- The output map has `grid` = (H, W) cells; cell (row j, column i) has its centre at
  (i * stride + stride / 2, j * stride + stride / 2).
- `dist_thresh` is a float or a (B,) tensor (pos_dist_thresh times the sample's scale).
- `scmap` (B, K, H, W) is 1 where some present joint k of some person has dx^2 + dy^2 <= dist_thresh^2, with
  (dx, dy) = joint - cell centre (computed in float32, so a joint exactly on the threshold counts), else 0.
- `scmap_weights` (B, K, H, W) is 1, or with `present_only` (the reference's weigh_only_present_joints) 1 only on
  the channels of joints present in any person of that sample; times (1 - ignore) where `ignore` (B, 1, H, W) marks
  cells whose score loss is ignored (crowd regions, batch padding).
- `locref` (B, 2K, H, W): channels 2k, 2k + 1 = dx / locref_stdev, dy / locref_stdev for the nearest person whose
  joint k covers the cell (squared distance; ties go to the lower person index); 0 elsewhere.
- `locref_mask` (B, 2K, H, W): 1 on channels 2k and 2k + 1 where scmap[:, k] is 1, else 0.

All four outputs are float32 and contiguous. `make_targets` runs the Triton kernel for CUDA tensors and the torch
twin for CPU tensors; both are public (`make_targets_triton`, `make_targets_torch`) so tests can compare them.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import triton
import triton.language as tl

DEFAULT_STRIDE = 8
DEFAULT_LOCREF_STDEV = 7.2801
_PRESENCE_WEIGHTS = torch.tensor([0.0, 0.0, 1.0])  # (x, y, present) weights: see make_targets_torch


class Targets(NamedTuple):
    """The four target tensors of one batch (all float32)."""

    scmap: torch.Tensor  # (B, K, H, W)
    scmap_weights: torch.Tensor  # (B, K, H, W)
    locref: torch.Tensor  # (B, 2K, H, W)
    locref_mask: torch.Tensor  # (B, 2K, H, W)


def _check_inputs(joints, grid, stride, dist_thresh, locref_stdev, ignore) -> tuple[int, int, torch.Tensor]:
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


def make_targets(
    joints: torch.Tensor,
    grid: tuple[int, int],
    stride: float = DEFAULT_STRIDE,
    dist_thresh: float | torch.Tensor = 17.0,
    locref_stdev: float = DEFAULT_LOCREF_STDEV,
    ignore: torch.Tensor | None = None,
    present_only: bool = False,
) -> Targets:
    """Targets for a batch: the Triton kernel for CUDA tensors, the torch twin otherwise (see the module docstring)."""
    if joints.is_cuda:
        return make_targets_triton(joints, grid, stride, dist_thresh, locref_stdev, ignore, present_only)
    return make_targets_torch(joints, grid, stride, dist_thresh, locref_stdev, ignore, present_only)


def _weights(out: torch.Tensor, present: torch.Tensor, ignore: torch.Tensor | None, present_only: bool) -> None:
    """Writes scmap_weights into `out` (B, K, H, W) from the joints' presence (B, P, K) and ignore (B, 1, H, W)."""
    if ignore is None and not present_only:
        out.fill_(1.0)
        return
    weights = torch.ones((), dtype=torch.float32, device=out.device)
    if present_only:
        weights = present.any(dim=1).to(torch.float32)[:, :, None, None]  # (B, K, 1, 1) present in any person
    if ignore is not None:
        weights = weights * (1.0 - ignore.to(device=out.device, dtype=torch.float32))  # times (B, 1, H, W)
    out.copy_(weights)


def make_targets_torch(
    joints: torch.Tensor,
    grid: tuple[int, int],
    stride: float = DEFAULT_STRIDE,
    dist_thresh: float | torch.Tensor = 17.0,
    locref_stdev: float = DEFAULT_LOCREF_STDEV,
    ignore: torch.Tensor | None = None,
    present_only: bool = False,
) -> Targets:
    """Vectorised torch twin: each joint tests a window of n x n candidate cells; the winners are scattered.

    A joint at x reaches the columns i with |i * stride + stride / 2 - x| <= t, i.e. at most floor(2t / stride) + 1
    of them; the window starts at floor((x - t - stride / 2) / stride) and is n = floor(2t / stride) + 2 wide so
    that rounding in that start can never drop a column. The start is then clamped into the grid (the shifted
    window still holds every in-grid column within reach), so no candidate needs an out-of-grid test unless the
    grid is narrower than n. Every candidate is tested exactly (d2 <= t^2 in float32). Among the persons hitting
    one cell the nearest wins (ties: the lower person index): one int64 key per hit, max-reduced per cell.
    All four outputs are views of one buffer: one allocation, which the allocator reuses from call to call (with
    four, it returned pages to the system and faulted them in again at times, which cost more than the rest).
    """
    h, w, thresh = _check_inputs(joints, grid, stride, dist_thresh, locref_stdev, ignore)
    device = joints.device
    joints = joints.to(torch.float32)
    b, p, k, _ = joints.shape
    hw = h * w
    n_s = b * k * hw  # elements of scmap; locref and its mask have 2 * n_s
    buf = torch.empty(6 * n_s, dtype=torch.float32, device=device)
    locref, locref_mask, scmap, weights = buf[: 2 * n_s], buf[2 * n_s : 4 * n_s], buf[4 * n_s : 5 * n_s], buf[5 * n_s :]
    # The outputs are views made out here (normal tensors); the work on them skips autograd's bookkeeping.
    with torch.inference_mode():
        xy = joints[..., :2]  # (B, P, K, 2)
        # x * 0 + y * 0 + present: nan unless x and y are finite, so > 0 only for finite, present joints.
        present = (joints * _PRESENCE_WEIGHTS.to(device)).sum(-1) > 0  # (B, P, K)
        # With several persons, scmap and weights first serve as an int64 scratch (offset 4 n_s floats: aligned) and
        # are written afterwards; otherwise they are written now.
        scratch = p > 1 and b * k * hw > 0
        buf[: 4 * n_s if scratch else 5 * n_s].zero_()
        if not scratch:
            _weights(weights.view(b, k, h, w), present, ignore, present_only)
        if isinstance(dist_thresh, torch.Tensor):
            t_max = float(thresh.max()) if b > 0 else 0.0
        else:
            t_max = float(dist_thresh)  # no reduction and host sync for the common float threshold
        if not math.isfinite(t_max):
            raise ValueError(f"dist_thresh must be finite; got a maximum of {t_max}")

        if b * p * k > 0:
            half = stride / 2.0
            n = int(math.floor(2.0 * t_max / stride)) + 2  # window side in cells
            # Absent joints move to infinity: their window clamps into the grid and every d2 there is inf, a miss.
            xy = torch.where(present[..., None], xy, math.inf)
            lo = ((xy - (thresh + half)[:, None, None, None]) / stride).floor_()  # (B, P, K, 2) window start (x, y)
            if h == w:
                lo.clamp_(0, max(w - n, 0))
            else:
                lo[..., 0].clamp_(0, max(w - n, 0))
                lo[..., 1].clamp_(0, max(h - n, 0))
            cand = lo[..., None] + torch.arange(n, dtype=torch.float32, device=device)  # (B, P, K, 2, n) columns, rows
            d = xy[..., None] - (cand * stride + half)  # (B, P, K, 2, n): dx per column, dy per row
            ci = cand.to(torch.int64)
            sq = d * d
            if n > w or n > h:  # a grid narrower than a window: the candidates past its edge hit nothing
                sq[..., 0, :].masked_fill_(ci[..., 0, :] >= w, math.inf)
                sq[..., 1, :].masked_fill_(ci[..., 1, :] >= h, math.inf)
            d2 = sq[..., 1, :, None] + sq[..., 0, None, :]  # (B, P, K, n, n) dy^2 + dx^2
            hit = d2 <= (thresh * thresh)[:, None, None, None, None]  # (B, P, K, n, n)
            plane = torch.arange(0, n_s, hw, device=device).view(b, 1, k, 1)  # (B, 1, K, 1) start of plane (b, k)
            cell = torch.add((ci[..., 0, :] + plane)[..., None, :], ci[..., 1, :, None], alpha=w)  # (B, P, K, n, n)
            first = cell + plane[..., None]  # index of channel 2k into (B, 2K, H, W)
            cflat = cell.view(-1)
            sel = hit.view(-1).nonzero().squeeze(1)  # (M,) flat (b, p, k, row, col) of the hits, ascending
            cell_w = cflat.index_select(0, sel)
            if p > 1:
                # The nearest person wins a cell, ties to the lower person: non-negative float32 bits order like the
                # values, and among the candidates of one cell the flat position orders like the person. Inverted so
                # that the max wins; the max over a cell's hits ignores the scratch's old contents.
                span = cflat.numel()  # positions < span, and span * 2^31 < 2^63 for any batch that fits in memory
                keys = buf[4 * n_s :].view(torch.int64)  # (n_s,) over scmap and weights
                inv = (2**31 * span) - (d2.view(-1).index_select(0, sel).view(torch.int32).to(torch.int64) * span + sel)
                keys.scatter_reduce_(0, cell_w, inv, "amax", include_self=False)
                win = (keys.gather(0, cell_w) == inv).nonzero().squeeze(1)
                sel, cell_w = sel.index_select(0, win), cell_w.index_select(0, win)
                scmap.zero_()
                _weights(weights.view(b, k, h, w), present, ignore, present_only)
            # One writer per cell: plain scatters of the winners.
            scmap.scatter_(0, cell_w, 1.0)
            first_w = first.view(-1).index_select(0, sel)
            idx2 = torch.stack([first_w, first_w + hw], dim=-1).view(-1)  # (2M,) channels 2k, 2k + 1 interleaved
            locref_mask.scatter_(0, idx2, 1.0)
            ds = d / locref_stdev  # (B, P, K, 2, n)
            dsxy = torch.stack(
                [ds[..., 0, None, :].expand(b, p, k, n, n), ds[..., 1, :, None].expand(b, p, k, n, n)], dim=-1
            )  # (B, P, K, n, n, 2) like idx2
            locref.scatter_(0, idx2, dsxy.view(-1, 2).index_select(0, sel).view(-1))

    return Targets(
        scmap.view(b, k, h, w),
        weights.view(b, k, h, w),
        locref.view(b, 2 * k, h, w),
        locref_mask.view(b, 2 * k, h, w),
    )


@triton.jit
def _targets_kernel(
    joints_ptr,  # (B, P, K, 3) float32
    thresh_ptr,  # (B,) float32
    ignore_ptr,  # (B, H, W) float32 (only read when HAS_IGNORE)
    scmap_ptr,  # (B, K, H, W) float32
    weights_ptr,  # (B, K, H, W) float32
    locref_ptr,  # (B, 2K, H, W) float32
    mask_ptr,  # (B, 2K, H, W) float32
    P,
    K,
    H,
    W,
    tiles,
    stride,
    stdev,
    HAS_IGNORE: tl.constexpr,
    PRESENT_ONLY: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # One program per (b, k, tile of BLOCK cells): loops over the persons, keeps the nearest covering one and
    # writes every output element of its tile (so the outputs need no zero fill).
    pid = tl.program_id(0)
    tile = pid % tiles
    bk = pid // tiles
    b = bk // K
    k = bk % K
    hw = H * W
    c = tile * BLOCK + tl.arange(0, BLOCK)  # (BLOCK,) cell indices j * W + i
    valid = c < hw
    ci = (c % W).to(tl.float32)
    cj = (c // W).to(tl.float32)
    cx = ci * stride + stride * 0.5
    cy = cj * stride + stride * 0.5
    t = tl.load(thresh_ptr + b)
    t2 = t * t

    best = tl.full((BLOCK,), float("inf"), tl.float32)
    best_dx = tl.zeros((BLOCK,), tl.float32)
    best_dy = tl.zeros((BLOCK,), tl.float32)
    any_present = 0.0
    for p in range(P):
        base = ((b * P + p) * K + k) * 3
        jx = tl.load(joints_ptr + base)
        jy = tl.load(joints_ptr + base + 1)
        jv = tl.load(joints_ptr + base + 2)
        # Absent or non-finite joints cover nothing (x - x != 0 catches inf and nan): their threshold becomes -1.
        ok = (jv > 0) & (jx - jx == 0) & (jy - jy == 0)
        any_present = tl.maximum(any_present, tl.where(ok, 1.0, 0.0))
        t2_p = tl.where(ok, t2, -1.0)
        dx = jx - cx
        dy = jy - cy
        d2 = dy * dy + dx * dx
        closer = (d2 <= t2_p) & (d2 < best)  # strict: ties keep the lower person index
        best = tl.where(closer, d2, best)
        best_dx = tl.where(closer, dx, best_dx)
        best_dy = tl.where(closer, dy, best_dy)

    hit = best < float("inf")
    on = tl.where(hit, 1.0, 0.0)
    out = bk * hw + c
    tl.store(scmap_ptr + out, on, mask=valid)
    if PRESENT_ONLY:
        wgt = tl.zeros((BLOCK,), tl.float32) + any_present
    else:
        wgt = tl.full((BLOCK,), 1.0, tl.float32)
    if HAS_IGNORE:
        ign = tl.load(ignore_ptr + b * hw + c, mask=valid, other=0.0)
        wgt = wgt * (1.0 - ign)
    tl.store(weights_ptr + out, wgt, mask=valid)
    lx = b * (2 * K) * hw + (2 * k) * hw + c
    tl.store(locref_ptr + lx, tl.where(hit, best_dx / stdev, 0.0), mask=valid)
    tl.store(locref_ptr + lx + hw, tl.where(hit, best_dy / stdev, 0.0), mask=valid)
    tl.store(mask_ptr + lx, on, mask=valid)
    tl.store(mask_ptr + lx + hw, on, mask=valid)


def make_targets_triton(
    joints: torch.Tensor,
    grid: tuple[int, int],
    stride: float = DEFAULT_STRIDE,
    dist_thresh: float | torch.Tensor = 17.0,
    locref_stdev: float = DEFAULT_LOCREF_STDEV,
    ignore: torch.Tensor | None = None,
    present_only: bool = False,
    block: int = 256,
) -> Targets:
    """Triton path (one launch per batch, no host sync); also runs on CPU tensors under TRITON_INTERPRET=1."""
    h, w, thresh = _check_inputs(joints, grid, stride, dist_thresh, locref_stdev, ignore)
    device = joints.device
    b, p, k, _ = joints.shape
    joints = joints.to(torch.float32).contiguous()
    scmap = torch.empty((b, k, h, w), dtype=torch.float32, device=device)
    weights = torch.empty_like(scmap)
    locref = torch.empty((b, 2 * k, h, w), dtype=torch.float32, device=device)
    locref_mask = torch.empty_like(locref)
    if ignore is not None:
        ignore_f = ignore.to(device=device, dtype=torch.float32).contiguous()
    else:
        ignore_f = scmap  # never read
    tiles = triton.cdiv(h * w, block)
    if b * k > 0:
        _targets_kernel[(b * k * tiles,)](
            joints,
            thresh.contiguous(),
            ignore_f,
            scmap,
            weights,
            locref,
            locref_mask,
            p,
            k,
            h,
            w,
            tiles,
            float(stride),
            float(locref_stdev),
            HAS_IGNORE=ignore is not None,
            PRESENT_ONLY=present_only,
            BLOCK=block,
        )
    return Targets(scmap, weights, locref, locref_mask)
