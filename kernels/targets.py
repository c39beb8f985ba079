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

All four outputs are float32. The Triton kernel writes all four densely; the torch twin returns scmap_weights as
a broadcast view when it is constant along some axes (see `_weights`). `make_targets` runs the Triton kernel for
CUDA tensors and the torch twin for CPU tensors; both are public (`make_targets_triton`, `make_targets_torch`) so
tests can compare them.
"""

from __future__ import annotations

import functools
import math
import struct
import threading
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from fastpose.kernels._common import DEFAULT_STRIDE, LAUNCH_OPTIONS, check_inputs, covers, tile

DEFAULT_LOCREF_STDEV = 7.2801
_use_count = getattr(torch._C, "_storage_Use_Count", None)  # private torch API; without it no buffer is reused
_FAR = 2.0**100  # where the twin moves absent joints: finite in float32, its square is not
# The largest float32. The twin's misses (absent joints, cells past the grid) have d2 = inf, so a t^2 that overflows
# to inf (t > 1.8e19) is lowered to it: every finite distance is still within reach, as in the kernel.
_F32_MAX = torch.finfo(torch.float32).max
_PRESENCE_WEIGHTS = torch.tensor([0.0, 0.0, 1.0])  # (x, y, present) weights: see make_targets_torch


class Targets(NamedTuple):
    """The four target tensors of one batch (all float32)."""

    scmap: torch.Tensor  # (B, K, H, W)
    scmap_weights: torch.Tensor  # (B, K, H, W)
    locref: torch.Tensor  # (B, 2K, H, W)
    locref_mask: torch.Tensor  # (B, 2K, H, W)


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


def _weights(present: torch.Tensor, ignore: torch.Tensor | None, present_only: bool, shape: tuple) -> torch.Tensor:
    """scmap_weights (B, K, H, W) from the joints' presence (B, P, K) and ignore (B, 1, H, W).

    The weights vary along at most two of their four axes, so the twin returns them as a broadcast (expanded) view
    unless both `present_only` and `ignore` are given: the values are those of the spec, without writing B K H W
    floats that say nothing (an in-place write to the view raises instead of aliasing). `.contiguous()` materialises
    it where a dense tensor is needed.
    """
    b, k, h, w = shape
    if present_only:
        weights = present.any(dim=1).to(torch.float32)[:, :, None, None]  # (B, K, 1, 1) present in any person
        if ignore is not None:
            return weights * (1.0 - ignore.to(device=present.device, dtype=torch.float32))  # (B, K, H, W)
        return weights.expand(b, k, h, w)
    if ignore is not None:
        return (1.0 - ignore.to(device=present.device, dtype=torch.float32)).expand(b, k, h, w)  # (B, 1, H, W)
    return torch.ones((), dtype=torch.float32, device=present.device).expand(b, k, h, w)


_POOL = threading.local()  # per thread: two threads never get the same buffer


def _buffer(numel: int, device: torch.device) -> torch.Tensor:
    """An uninitialised float32 buffer: one of this thread's two latest CPU buffers when no tensor still uses it.

    Targets are made every step with the same sizes. glibc hands a freed buffer of this size (megabytes) back to the
    system at times, and the next call then faults every page in again while zeroing it: measured at 2-5 ms instead
    of 0.35 ms in about one call of ten. Reusing the buffer avoids that. A buffer is reused only when nothing but
    the pool refers to its storage (the caller dropped all four outputs, autograd saved none of them), so outputs of
    different calls never alias; two slots let a loop that holds the previous targets while making the next ones
    alternate between them. CUDA has its own caching allocator and skips the pool.
    """
    if device.type != "cpu" or _use_count is None:
        return torch.empty(numel, dtype=torch.float32, device=device)
    slots = getattr(_POOL, "slots", None)
    if slots is None:
        slots = _POOL.slots = []
    inference = torch.is_inference_mode_enabled()  # a buffer made in inference mode cannot serve autograd later
    for buf in slots:
        # 2 = the pool's tensor + the temporary storage object made to ask; more means some tensor still uses it.
        if buf.numel() == numel and buf.is_inference() == inference and _use_count(buf.untyped_storage()._cdata) == 2:
            return buf
    buf = torch.empty(numel, dtype=torch.float32, device=device)
    slots.insert(0, buf)
    del slots[2:]
    return buf


def _f32(x: float) -> float:
    """x rounded to float32 (to the nearest, as torch rounds; beyond float32's range, inf as torch gives)."""
    try:
        return struct.unpack("f", struct.pack("f", x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


@functools.lru_cache(maxsize=8)
def _zero(device: torch.device) -> torch.Tensor:
    """A float32 scalar 0 (cached, read only)."""
    with torch.inference_mode():
        return torch.zeros((), dtype=torch.float32, device=device)


@functools.lru_cache(maxsize=32)
def _window(n: int, stride: float, h: int, w: int, device: torch.device):
    """Constants of an n x n window, the same for every batch of a run (cached; made in inference mode, read only).

    Returns (centres (2, n, n) float32: channel 0 the centre offset s * stride + stride / 2 of the column, channel 1
    of the row; offsets (n, n) int64: row * W + column; outside (n, n) bool: the cells past the grid's edge when the
    grid is narrower than n, else None).
    """
    with torch.inference_mode():
        steps = torch.arange(n, device=device)
        c = steps.to(torch.float32) * stride + stride / 2.0  # (n,)
        centres = torch.stack([c[None, :].expand(n, n), c[:, None].expand(n, n)])  # (2, n, n)
        offsets = steps[:, None] * w + steps[None, :]  # (n, n)
        outside = None
        if n > w or n > h:
            outside = (steps[None, :] >= w) | (steps[:, None] >= h)
        return centres, offsets, outside


def _candidates(joints, present, grid, stride, t_col, t2, n):
    """Tests the n x n window of candidate cells of every joint.

    Returns d (B, P, K, 2, n, n) = joint - cell centre (channel 0 dx, varying along the columns; channel 1 dy, along
    the rows: laid out like a (locref, locref + 1) channel pair), d2 (B, P, K, n, n) = dx^2 + dy^2, hit = d2 <= t^2,
    and cell (B, P, K, n, n) int64 = the cell's index j * W + i within its (b, k) plane. t_col is the threshold as a
    float or (B, 1, 1, 1), t2 its float32 square as a float or (B, 1, 1, 1, 1).
    """
    h, w = grid
    # Absent joints move far away: their window clamps into the grid and every d2 there overflows to inf, a miss,
    # while dx / stdev stays finite.
    xy = torch.where(present[..., None], joints[..., :2], _FAR)  # (B, P, K, 2)
    lo = torch.div(xy - (t_col + stride / 2.0), stride, rounding_mode="floor")  # (B, P, K, 2) window start (x, y)
    if h == w:
        lo.clamp_(0, max(w - n, 0))
    else:
        lo[..., 0].clamp_(0, max(w - n, 0))
        lo[..., 1].clamp_(0, max(h - n, 0))
    centres, offsets, outside = _window(n, float(stride), h, w, joints.device)
    # d = (xy - lo * stride) - centres is the kernel's xy - (lo * stride + centre) to the bit: lo * stride is 0 or a
    # multiple of the stride below xy, so the first difference is exact (for |xy| < 2^24; a joint that far away
    # misses anyway) and only the second rounds, once, as the kernel's single subtraction does.
    d = torch.add(xy, lo, alpha=-stride)[..., None, None] - centres  # (B, P, K, 2, n, n)
    sq = d * d
    d2 = sq[..., 1, :, :] + sq[..., 0, :, :]  # (B, P, K, n, n) dy^2 + dx^2, rounded as in the kernel
    if outside is not None:  # a grid narrower than a window: lo is 0 and the cells past its edge hit nothing
        d2.masked_fill_(outside, math.inf)
    hit = d2 <= t2  # (B, P, K, n, n)
    base = torch.add(lo[..., 0], lo[..., 1], alpha=w).to(torch.int64)  # (B, P, K) window's first cell j * W + i
    cell = torch.add(offsets, base[..., None, None])  # (B, P, K, n, n)
    return d, d2, hit, cell


def _scatter_all(buf, d, hit, cell, shape, locref_stdev) -> None:
    """One person, grid at least a window wide: writes every candidate into the zeroed buffer, a miss as 0.

    The n x n cells of one joint's window are distinct and no other joint writes to its (b, k) plane, so each
    output element has one writer: no selection of the hits.
    """
    b, k, h, w = shape
    hw, n = h * w, d.shape[-1]
    n_s = b * k * hw
    locref, locref_mask, scmap = buf[: 2 * n_s], buf[2 * n_s : 4 * n_s], buf[4 * n_s :]
    hitf = hit.view(b * k, 1, n * n).to(torch.float32)  # (BK, 1, nn)
    idx = cell.view(b * k, 1, n * n)
    scmap.view(b * k, 1, hw).scatter_(2, idx, hitf)
    idx2 = idx.expand(b * k, 2, n * n)  # the same cell in channels 2k and 2k + 1
    locref_mask.view(b * k, 2, hw).scatter_(2, idx2, hitf.expand(b * k, 2, n * n))
    # 0 + d * hit: a miss gives +0 (d * 0 alone would be -0 for a negative d). (B, 1, K, 2, n, n)
    vals = torch.addcmul(_zero(d.device), d, hitf.view(b, 1, k, 1, n, n)).div_(locref_stdev)
    locref.view(b * k, 2, hw).scatter_(2, idx2, vals.view(b * k, 2, n * n))


def _scatter_hits(buf, d, d2, hit, cell, shape, locref_stdev) -> None:
    """Several persons or a narrow grid: selects the hits, keeps the nearest person's per cell, scatters those.

    Among the persons hitting one cell the nearest wins (ties: the lower person index): one int64 key per hit,
    max-reduced per cell, with locref_mask (not yet written) as the scratch.
    """
    b, p, k, h, w = shape
    hw, nn = h * w, d.shape[-1] ** 2
    n_s = b * k * hw
    locref, locref_mask, scmap = buf[: 2 * n_s], buf[2 * n_s : 4 * n_s], buf[4 * n_s :]
    plane = torch.arange(0, n_s, hw, device=d.device).view(b, 1, k, 1, 1)  # (B, 1, K, 1, 1) start of plane
    cell = cell + plane  # (B, P, K, n, n) index into (B, K, H, W)
    cflat = cell.view(-1)
    sel = hit.view(-1).nonzero().squeeze(1)  # (M,) flat (b, p, k, row, col) of the hits, ascending
    cell_w = cflat.index_select(0, sel)
    if p > 1:
        # Non-negative float32 bits order like the values, and among the candidates of one cell the flat position
        # orders like the person. Inverted so that the max wins; the max over a cell's hits ignores the scratch's
        # old contents.
        span = cflat.numel()  # positions < span, and span * 2^31 < 2^63 for any batch that fits in memory
        keys = locref_mask.view(torch.int64)  # (n_s,): offset 2 n_s floats, aligned
        inv = (2**31 * span) - (d2.view(-1).index_select(0, sel).view(torch.int32).to(torch.int64) * span + sel)
        keys.scatter_reduce_(0, cell_w, inv, "amax", include_self=False)
        win = (keys.gather(0, cell_w) == inv).nonzero().squeeze(1)
        sel, cell_w = sel.index_select(0, win), cell_w.index_select(0, win)
        locref_mask.zero_()
    # One writer per cell: plain scatters of the winners.
    ones = torch.ones((), dtype=torch.float32, device=d.device).expand(2 * cell_w.numel())
    scmap.scatter_(0, cell_w, ones[: cell_w.numel()])
    first_w = torch.add(cell_w, torch.div(cell_w, hw, rounding_mode="floor"), alpha=hw)  # (M,) channel 2k
    idx2 = torch.stack([first_w, first_w + hw], dim=-1).view(-1)  # (2M,) channels 2k, 2k + 1 interleaved
    locref_mask.scatter_(0, idx2, ones)
    # d (B P K, 2, nn): the hit at flat bpk * nn + rc has its dx at bpk * 2 nn + rc and its dy nn further.
    at = torch.add(sel, torch.div(sel, nn, rounding_mode="floor"), alpha=nn)  # (M,)
    at = torch.stack([at, at + nn], dim=-1).view(-1)  # (2M,) like idx2
    locref.scatter_(0, idx2, d.view(-1).index_select(0, at).div_(locref_stdev))


def make_targets_torch(
    joints: torch.Tensor,
    grid: tuple[int, int],
    stride: float = DEFAULT_STRIDE,
    dist_thresh: float | torch.Tensor = 17.0,
    locref_stdev: float = DEFAULT_LOCREF_STDEV,
    ignore: torch.Tensor | None = None,
    present_only: bool = False,
) -> Targets:
    """Vectorised torch twin: each joint tests a window of n x n candidate cells; the results are scattered.

    A joint at x reaches the columns i with |i * stride + stride / 2 - x| <= t, i.e. at most floor(2t / stride) + 1
    of them; the window starts at floor((x - t - stride / 2) / stride) and is n = floor(2t / stride) + 2 wide so
    that rounding in that start can never drop a column. The start is then clamped into the grid (the shifted
    window still holds every in-grid column within reach), so no candidate needs an out-of-grid test unless the
    grid is narrower than n. Every candidate is tested exactly (d2 <= t^2 in float32).

    With one person per sample and a grid at least n wide every candidate is scattered as it is (`_scatter_all`);
    otherwise the hits are selected and the nearest person's win (`_scatter_hits`).

    scmap, locref and locref_mask are views of one zeroed buffer: one allocation, which the allocator reuses from
    call to call (with several, it returned pages to the system and faulted them in again at times, which cost more
    than the rest); scmap_weights is a broadcast view (see `_weights`).
    """
    h, w, thresh = check_inputs(joints, grid, stride, dist_thresh, locref_stdev, ignore)
    device = joints.device
    joints = joints.to(torch.float32)
    b, p, k, _ = joints.shape
    hw = h * w
    n_s = b * k * hw  # elements of scmap; locref and its mask have 2 * n_s
    buf = _buffer(5 * n_s, device)
    locref, locref_mask, scmap = buf[: 2 * n_s], buf[2 * n_s : 4 * n_s], buf[4 * n_s :]
    # x * 0 + y * 0 + present: nan unless x and y are finite, so > 0 only for finite, present joints.
    present = (joints * _PRESENCE_WEIGHTS.to(device)).sum(-1) > 0  # (B, P, K)
    weights = _weights(present, ignore, present_only, (b, k, h, w))  # made out here: a normal tensor
    # The outputs are views made out here (normal tensors); the work on them skips autograd's bookkeeping.
    with torch.inference_mode():
        if isinstance(dist_thresh, torch.Tensor):
            t_min, t_max = (float(t) for t in torch.aminmax(thresh)) if b > 0 else (0.0, 0.0)
            if t_min < 0:  # checked here only: on a GPU the check would cost a host sync
                raise ValueError(f"dist_thresh must be >= 0; got a minimum of {t_min}")
            t_col = thresh[:, None, None, None]  # (B, 1, 1, 1)
            t2 = (thresh * thresh).clamp_(max=_F32_MAX)[:, None, None, None, None]  # (B, 1, 1, 1, 1)
        else:
            # The common float threshold: scalars, no reduction and no host sync. t^2 is rounded to float32 as the
            # tensor path (and the Triton kernel) computes it, so a joint exactly on the threshold counts the same.
            t_max = t_col = float(dist_thresh)
            t_f32 = _f32(t_max)
            t2 = min(_f32(t_f32 * t_f32), _F32_MAX)  # the product of two float32 is exact in a double
        if not math.isfinite(t_max):
            raise ValueError(f"dist_thresh must be finite; got a maximum of {t_max}")
        # Window side in cells; a window as wide as the grid already holds every cell (it is clamped to start at 0).
        n = min(int(math.floor(2.0 * t_max / stride)) + 2, max(h, w))
        dense = p == 1 and n <= w and n <= h
        # With several persons, locref_mask first serves as an int64 scratch and is zeroed after it. No person (P = 0:
        # a batch of images without any) runs no scatter at all, so the whole buffer is zeroed here too.
        if p <= 1 or n_s == 0:
            buf.zero_()
        else:
            locref.zero_()
            scmap.zero_()
        if b * p * k > 0:
            d, d2, hit, cell = _candidates(joints, present, (h, w), stride, t_col, t2, n)
            if dense:
                _scatter_all(buf, d, hit, cell, (b, k, h, w), locref_stdev)
            else:
                _scatter_hits(buf, d, d2, hit, cell, (b, p, k, h, w), locref_stdev)

    return Targets(scmap.view(b, k, h, w), weights, locref.view(b, 2 * k, h, w), locref_mask.view(b, 2 * k, h, w))


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
    bk, b, k, c, valid, cx, cy, t2 = tile(thresh_ptr, K, H, W, tiles, stride, BLOCK)
    hw = H * W

    best = tl.full((BLOCK,), float("inf"), tl.float32)
    best_dx = tl.zeros((BLOCK,), tl.float32)
    best_dy = tl.zeros((BLOCK,), tl.float32)
    any_present = 0.0
    for p in range(P):
        ok, dx, dy, d2, closer = covers(joints_ptr, b, p, k, P, K, cx, cy, t2, best)
        any_present = tl.maximum(any_present, tl.where(ok, 1.0, 0.0))
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
    # div_rn: the correctly rounded quotient of the twin (a plain / compiles to the GPU's approximate division).
    tl.store(locref_ptr + lx, tl.where(hit, tl.div_rn(best_dx, stdev), 0.0), mask=valid)
    tl.store(locref_ptr + lx + hw, tl.where(hit, tl.div_rn(best_dy, stdev), 0.0), mask=valid)
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
    h, w, thresh = check_inputs(joints, grid, stride, dist_thresh, locref_stdev, ignore)
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
            **LAUNCH_OPTIONS,
        )
    return Targets(scmap, weights, locref, locref_mask)
