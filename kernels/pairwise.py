"""Training targets for the pairwise head: normalised offsets from the cells of joint s to the other joints e.

Semantics (the reference's multi-person targets, for a whole batch at once):

- `joints` (B, P, K, 3) x, y, present and `grid`, `stride`, `dist_thresh` exactly as `make_targets`
  (fastpose.kernels.targets): cell (row j, column i) has its centre c = (i * stride + stride / 2, j * stride +
  stride / 2), and joint s of person p covers the cell when present and |joint - c|^2 <= dist_thresh^2 (float32).
- The cell's owner for joint s is the nearest covering person (squared distance; ties go to the lower person index),
  the same person `make_targets` takes for its locref there.
- `mean`, `std` (B, K, K, 2) float: each sample's statistics in network-input pixels (fastpose.pairwise.sample_stats:
  dataset statistics times the sample's scale, mirrored pairs for mirrored samples).
- Channels: the ordered pair (s, e), s != e, has pair id = (K - 1) * s + e - [s < e] (row-major order of the K x K
  pairs without the diagonal); its x value is channel 2 * id, its y value channel 2 * id + 1 (x, y interleaved per
  pair, the order of the reference's (H, W, K(K-1), 2) reshape). The model's pairwise head (fastpose.model,
  2K(K-1) channels) and the assembly (fastpose.assembly) read the same layout: prediction * std[s, e] + mean[s, e]
  is the offset joint_e - cell centre in network-input pixels.
- `target` (B, 2K(K-1), H, W): at a cell owned by person p for joint s and for each joint e present in p,
  ((joint_e - c) - mean[s, e]) / std[s, e] per axis; 0 elsewhere. `mask` (B, 2K(K-1), H, W): 1 there, else 0
  (both channels of a pair together).

The loss is `fastpose.kernels.losses.locref_loss(pred, target, mask, huber)` (a masked Huber or squared error: the
same math). Both outputs are float32 and contiguous. `make_pairwise_targets` runs the Triton kernel for CUDA tensors and
the torch twin for CPU tensors; both are public (`*_triton`, `*_torch`) so tests can compare them.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import triton
import triton.language as tl

from fastpose.kernels._common import DEFAULT_STRIDE, LAUNCH_OPTIONS, check_inputs, covers, tile


class PairwiseTargets(NamedTuple):
    """The pairwise target and its mask (float32, (B, 2K(K-1), H, W))."""

    target: torch.Tensor
    mask: torch.Tensor


def pair_id(s, e, k: int):
    """Channel pair id of ordered pairs (s, e), s != e: (K - 1) s + e - [s < e] (the row-major K x K pairs without
    the diagonal). s, e: ints or integer arrays of one shape (the assembly asks for many at once); the head's x, y
    values of the pair are channels 2 * id and 2 * id + 1. The one definition of the layout: the model's pairwise head,
    these targets, the statistics and the assembly all index by it."""
    if isinstance(s, int | np.integer) and isinstance(e, int | np.integer):
        if s == e or not (0 <= s < k and 0 <= e < k):
            raise ValueError(f"pair ({s}, {e}) is not an ordered pair of distinct joints in 0..{k - 1}")
        return int((k - 1) * s + e - (1 if s < e else 0))
    s, e = np.asarray(s), np.asarray(e)
    return (k - 1) * s + e - (s < e)


def pair_channels(k: int) -> torch.Tensor:
    """(K(K-1),) long: flat s * K + e of each pair id in order (the inverse of `pair_id`)."""
    flat = torch.zeros(k * (k - 1), dtype=torch.long)
    for s in range(k):
        for e in range(k):
            if s != e:
                flat[pair_id(s, e, k)] = s * k + e
    return flat


def _check_stats(joints: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> None:
    b, _, k, _ = joints.shape
    for name, t in (("mean", mean), ("std", std)):
        if tuple(t.shape) != (b, k, k, 2):
            raise ValueError(f"{name} must have shape (B, K, K, 2) = ({b}, {k}, {k}, 2); got {tuple(t.shape)}")


def make_pairwise_targets(
    joints: torch.Tensor,
    grid: tuple[int, int],
    mean: torch.Tensor,
    std: torch.Tensor,
    stride: float = DEFAULT_STRIDE,
    dist_thresh: float | torch.Tensor = 17.0,
) -> PairwiseTargets:
    """Pairwise targets for a batch: Triton for CUDA tensors, the torch twin otherwise (see the module docstring)."""
    if joints.is_cuda:
        return make_pairwise_targets_triton(joints, grid, mean, std, stride, dist_thresh)
    return make_pairwise_targets_torch(joints, grid, mean, std, stride, dist_thresh)


def make_pairwise_targets_torch(
    joints: torch.Tensor,
    grid: tuple[int, int],
    mean: torch.Tensor,
    std: torch.Tensor,
    stride: float = DEFAULT_STRIDE,
    dist_thresh: float | torch.Tensor = 17.0,
) -> PairwiseTargets:
    """Torch twin over the whole grid: owner per (b, s, cell) by argmin over persons, then a gather of its joints.

    Memory is O(B P K H W + B K^2 H W), fine for the CPU batches this path serves.
    """
    h, w, thresh = check_inputs(joints, grid, stride, dist_thresh, 1.0, None)
    _check_stats(joints, mean, std)
    if thresh.numel() and not math.isfinite(float(thresh.max())):
        raise ValueError(f"dist_thresh must be finite; got a maximum of {float(thresh.max())}")
    device = joints.device
    joints = joints.to(torch.float32)
    b, p, k, _ = joints.shape
    npairs = k * (k - 1)
    if b * p * k == 0 or npairs == 0:
        zeros = torch.zeros((b, 2 * npairs, h, w), dtype=torch.float32, device=device)
        return PairwiseTargets(zeros, zeros.clone())
    x, y, vis = joints.unbind(-1)  # (B, P, K)
    present = (vis > 0) & torch.isfinite(x) & torch.isfinite(y)
    x, y = torch.where(present, x, 0.0), torch.where(present, y, 0.0)
    half = stride / 2.0
    cx = torch.arange(w, device=device, dtype=torch.float32) * stride + half  # (W,)
    cy = torch.arange(h, device=device, dtype=torch.float32) * stride + half  # (H,)
    dx = x[..., None, None] - cx  # (B, P, K, 1, W)
    dy = y[..., None, None] - cy[:, None]  # (B, P, K, H, 1)
    d2 = dy * dy + dx * dx  # (B, P, K, H, W)
    t2 = torch.where(present, (thresh * thresh)[:, None, None], -1.0)  # (B, P, K); absent joints cover nothing
    d2 = torch.where(d2 <= t2[..., None, None], d2, math.inf)
    best, owner = d2.min(dim=1)  # (B, K, H, W); min returns the first (lowest) person index among equal values
    hit = best < math.inf

    # The owner's joints e at every (b, s, cell): (B, K_s, H, W, K_e, 3) = x, y, present.
    flat = torch.stack([x, y, present.to(torch.float32)], dim=-1).reshape(b, p, k * 3)  # (B, P, 3K)
    g = flat.gather(1, owner.reshape(b, k * h * w, 1).expand(-1, -1, 3 * k)).reshape(b, k, h, w, k, 3)
    m = mean.to(device=device, dtype=torch.float32)[:, :, None, None]  # (B, K_s, 1, 1, K_e, 2)
    sd = std.to(device=device, dtype=torch.float32)[:, :, None, None]
    tx = ((g[..., 0] - cx[:, None]) - m[..., 0]) / sd[..., 0]  # (B, K_s, H, W, K_e)
    ty = ((g[..., 1] - cy[:, None, None]) - m[..., 1]) / sd[..., 1]
    on = hit[..., None] & (g[..., 2] > 0)  # (B, K_s, H, W, K_e)
    target = torch.stack([torch.where(on, tx, 0.0), torch.where(on, ty, 0.0)], dim=-1)  # (B, K_s, H, W, K_e, 2)
    mask = on[..., None].expand_as(target).to(torch.float32)
    ids = pair_channels(k).to(device)

    def channels(t: torch.Tensor) -> torch.Tensor:  # (B, K_s, H, W, K_e, 2) -> (B, 2K(K-1), H, W)
        t = t.permute(0, 1, 4, 5, 2, 3).reshape(b, k * k, 2, h, w)[:, ids]  # (B, K(K-1), 2, H, W)
        return t.reshape(b, 2 * npairs, h, w).contiguous()

    return PairwiseTargets(channels(target), channels(mask))


@triton.jit
def _pairwise_kernel(
    joints_ptr,  # (B, P, K, 3) float32
    thresh_ptr,  # (B,) float32
    mean_ptr,  # (B, K, K, 2) float32
    std_ptr,  # (B, K, K, 2) float32
    target_ptr,  # (B, 2K(K-1), H, W) float32
    mask_ptr,  # (B, 2K(K-1), H, W) float32
    P,
    K,
    H,
    W,
    tiles,
    stride,
    BLOCK: tl.constexpr,
):
    # One program per (b, s, tile of BLOCK cells): finds the owner of each cell for joint s (as the targets kernel),
    # then writes the 2 (K - 1) channels of the pairs (s, e) for the tile (every element: no zero fill needed).
    bs, b, s, c, valid, cx, cy, t2 = tile(thresh_ptr, K, H, W, tiles, stride, BLOCK)  # c: (BLOCK,) cells j * W + i
    hw = H * W

    best = tl.full((BLOCK,), float("inf"), tl.float32)
    owner = tl.zeros((BLOCK,), tl.int32)
    for p in range(P):
        ok, dx, dy, d2, closer = covers(joints_ptr, b, p, s, P, K, cx, cy, t2, best)
        best = tl.where(closer, d2, best)
        owner = tl.where(closer, p, owner)

    hit = best < float("inf")
    npairs = K * (K - 1)
    for e in range(K):
        other = e != s
        pair = (K - 1) * s + e - tl.where(s < e, 1, 0)
        jbase = ((b * P + owner) * K + e) * 3  # (BLOCK,) the owner's joint e
        ex = tl.load(joints_ptr + jbase, mask=valid & hit, other=0.0)
        ey = tl.load(joints_ptr + jbase + 1, mask=valid & hit, other=0.0)
        ev = tl.load(joints_ptr + jbase + 2, mask=valid & hit, other=0.0)
        on = hit & (ev > 0) & (ex - ex == 0) & (ey - ey == 0)
        sbase = ((b * K + s) * K + e) * 2
        mx = tl.load(mean_ptr + sbase)
        my = tl.load(mean_ptr + sbase + 1)
        sx = tl.where(other, tl.load(std_ptr + sbase), 1.0)  # the diagonal is never written; avoid 0 / 0 there
        sy = tl.where(other, tl.load(std_ptr + sbase + 1), 1.0)
        tx = tl.div_rn((ex - cx) - mx, sx)  # correctly rounded, as the twin (a plain / is approximate on GPUs)
        ty = tl.div_rn((ey - cy) - my, sy)
        out = (b * (2 * npairs) + 2 * pair) * hw + c
        keep = valid & other
        tl.store(target_ptr + out, tl.where(on, tx, 0.0), mask=keep)
        tl.store(target_ptr + out + hw, tl.where(on, ty, 0.0), mask=keep)
        one = tl.where(on, 1.0, 0.0)
        tl.store(mask_ptr + out, one, mask=keep)
        tl.store(mask_ptr + out + hw, one, mask=keep)


def make_pairwise_targets_triton(
    joints: torch.Tensor,
    grid: tuple[int, int],
    mean: torch.Tensor,
    std: torch.Tensor,
    stride: float = DEFAULT_STRIDE,
    dist_thresh: float | torch.Tensor = 17.0,
    block: int = 256,
) -> PairwiseTargets:
    """Triton path (one launch per batch, no host sync); also runs on CPU tensors under TRITON_INTERPRET=1."""
    h, w, thresh = check_inputs(joints, grid, stride, dist_thresh, 1.0, None)
    _check_stats(joints, mean, std)
    device = joints.device
    b, p, k, _ = joints.shape
    npairs = k * (k - 1)
    joints = joints.to(torch.float32).contiguous()
    target = torch.empty((b, 2 * npairs, h, w), dtype=torch.float32, device=device)
    mask = torch.empty_like(target)
    if p == 0:  # nobody covers any cell
        return PairwiseTargets(target.zero_(), mask.zero_())
    tiles = triton.cdiv(h * w, block)
    if b * npairs > 0:
        _pairwise_kernel[(b * k * tiles,)](
            joints,
            thresh.contiguous(),
            mean.to(device=device, dtype=torch.float32).contiguous(),
            std.to(device=device, dtype=torch.float32).contiguous(),
            target,
            mask,
            p,
            k,
            h,
            w,
            tiles,
            float(stride),
            BLOCK=block,
            **LAUNCH_OPTIONS,
        )
    return PairwiseTargets(target, mask)


__all__ = ["PairwiseTargets", "make_pairwise_targets", "make_pairwise_targets_torch", "make_pairwise_targets_triton",
           "pair_channels", "pair_id"]
