"""The two training losses of the part detector, in Triton (forward and backward) with torch twins.

- `part_loss(logits, scmap, weights)` = sum(w * ce) / count_nonzero(w), ce = the sigmoid cross-entropy
  max(x, 0) - x * z + log(1 + exp(-|x|)) of logits x and targets z (the reference's SUM_BY_NONZERO_WEIGHTS: the mean
  with unit weights); 0 when no weight is nonzero.
- `locref_loss(pred, target, mask, huber=True)` = sum(mask * h(pred - target)) / count_nonzero(mask) with the Huber
  h(d) = 0.5 d^2 for |d| < 1 else |d| - 0.5 (delta 1), or h(d) = d^2 when `huber` is false (the reference's
  squared error); 0 when the mask is empty.

Logits / pred may be bfloat16 or float32; the sums run in float32 and the result is a float32 scalar. Gradients flow
to logits / pred only (targets, weights and masks are constants). CUDA tensors run the Triton kernels, CPU tensors
the torch twins; both are public (`*_triton`, `*_torch`). The Triton forward is deterministic: a fixed number of
programs each sums a grid-strided share of the elements, and torch sums the per-program partials; the division by
the count happens on the device (no host sync).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

_BLOCK = 1024
_MAX_PROGRAMS = 512  # fixed cap so the summation order depends on the size only, never on the device


def _check(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, names: tuple[str, str, str]) -> None:
    if a.shape != b.shape or a.shape != c.shape:
        raise ValueError(
            f"{names[0]}, {names[1]} and {names[2]} must have the same shape; "
            f"got {tuple(a.shape)}, {tuple(b.shape)}, {tuple(c.shape)}"
        )
    if a.dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"{names[0]} must be float32 or bfloat16; got {a.dtype}")


# ---------------------------------------------------------------------------------------------------- torch twins


def part_loss_torch(logits: torch.Tensor, scmap: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Torch twin of `part_loss` (differentiable through plain autograd)."""
    _check(logits, scmap, weights, ("logits", "scmap", "weights"))
    x = logits.float()
    z = scmap.float()
    w = weights.float()
    ce = F.softplus(x) - x * z  # softplus: stable, and its gradient is sigmoid(x) also at x = 0
    total = torch.where(w != 0, w * ce, 0.0).sum()
    return total / torch.count_nonzero(w).clamp(min=1)


def locref_loss_torch(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, huber: bool = True) -> torch.Tensor:
    """Torch twin of `locref_loss` (differentiable through plain autograd)."""
    _check(pred, target, mask, ("pred", "target", "mask"))
    d = pred.float() - target.float()
    m = mask.float()
    if huber:
        a = d.abs()
        h = torch.where(a < 1, 0.5 * d * d, a - 0.5)
    else:
        h = d * d
    total = torch.where(m != 0, m * h, 0.0).sum()
    return total / torch.count_nonzero(m).clamp(min=1)


# --------------------------------------------------------------------------------------------------------- Triton


@triton.jit
def _ce(x, z):
    # Stable sigmoid cross-entropy; log(1 + e) instead of log1p because the interpreter lacks log1p (error < 6e-8).
    return tl.maximum(x, 0.0) - x * z + tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def _huber(d, HUBER: tl.constexpr):
    if HUBER:
        a = tl.abs(d)
        h = tl.where(a < 1.0, 0.5 * d * d, a - 0.5)
    else:
        h = d * d
    return h


@triton.jit
def _loss_fwd_kernel(
    a_ptr,  # (N,) logits or pred, float32 or bfloat16
    b_ptr,  # (N,) scmap or target
    w_ptr,  # (N,) weights or mask
    sum_ptr,  # (programs,) float32 partial sums of w * loss
    cnt_ptr,  # (programs,) int32 partial counts of w != 0
    N,
    LOCREF: tl.constexpr,
    HUBER: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    acc = tl.zeros((BLOCK,), tl.float32)
    cnt = tl.zeros((BLOCK,), tl.int32)
    for start in range(pid * BLOCK, N, programs * BLOCK):
        offs = start + tl.arange(0, BLOCK)
        inb = offs < N
        a = tl.load(a_ptr + offs, mask=inb, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + offs, mask=inb, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + offs, mask=inb, other=0.0).to(tl.float32)
        if LOCREF:
            loss = _huber(a - b, HUBER)
        else:
            loss = _ce(a, b)
        on = w != 0.0  # a zero weight drops the element even where its loss is inf or nan
        acc += tl.where(on, w * loss, 0.0)
        cnt += on.to(tl.int32)
    tl.store(sum_ptr + pid, tl.sum(acc, axis=0))
    tl.store(cnt_ptr + pid, tl.sum(cnt, axis=0))


@triton.jit
def _loss_bwd_kernel(
    a_ptr,  # (N,) logits or pred
    b_ptr,  # (N,) scmap or target
    w_ptr,  # (N,) weights or mask
    scale_ptr,  # (1,) float32: grad_out / max(count, 1)
    grad_ptr,  # (N,) gradient w.r.t. a, in a's dtype
    N,
    LOCREF: tl.constexpr,
    HUBER: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inb = offs < N
    a = tl.load(a_ptr + offs, mask=inb, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + offs, mask=inb, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + offs, mask=inb, other=0.0).to(tl.float32)
    scale = tl.load(scale_ptr)
    if LOCREF:
        d = a - b
        if HUBER:
            g = tl.minimum(tl.maximum(d, -1.0), 1.0)  # d for |d| < 1, sign(d) beyond
        else:
            g = 2.0 * d
    else:
        g = tl.sigmoid(a) - b
    g = tl.where(w != 0.0, w * g, 0.0) * scale
    tl.store(grad_ptr + offs, g.to(grad_ptr.dtype.element_ty), mask=inb)


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(-1)


def _forward(a, b, w, locref: bool, huber: bool):
    """Launches the forward kernel; returns (loss (), count (), flat a, b, w)."""
    a, b, w = _flat(a), _flat(b.float()), _flat(w.float())
    n = a.numel()
    programs = max(1, min(triton.cdiv(n, _BLOCK), _MAX_PROGRAMS))
    sums = torch.empty(programs, dtype=torch.float32, device=a.device)
    cnts = torch.empty(programs, dtype=torch.int32, device=a.device)
    _loss_fwd_kernel[(programs,)](a, b, w, sums, cnts, n, LOCREF=locref, HUBER=huber, BLOCK=_BLOCK)
    count = cnts.sum(dtype=torch.int64)
    loss = sums.sum() / count.clamp(min=1).to(torch.float32)
    return loss, count, a, b, w


def _backward(grad_out, a, b, w, count, shape, locref: bool, huber: bool):
    n = a.numel()
    scale = (grad_out.float() / count.clamp(min=1).to(torch.float32)).reshape(1)
    grad = torch.empty_like(a)
    _loss_bwd_kernel[(triton.cdiv(n, _BLOCK),)](a, b, w, scale, grad, n, LOCREF=locref, HUBER=huber, BLOCK=_BLOCK)
    return grad.view(shape)


class _PartLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, scmap, weights):
        loss, count, a, b, w = _forward(logits, scmap, weights, locref=False, huber=False)
        ctx.save_for_backward(a, b, w, count)
        ctx.shape = logits.shape
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        a, b, w, count = ctx.saved_tensors
        return _backward(grad_out, a, b, w, count, ctx.shape, locref=False, huber=False), None, None


class _LocrefLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pred, target, mask, huber):
        loss, count, a, b, w = _forward(pred, target, mask, locref=True, huber=huber)
        ctx.save_for_backward(a, b, w, count)
        ctx.shape = pred.shape
        ctx.huber = huber
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        a, b, w, count = ctx.saved_tensors
        grad = _backward(grad_out, a, b, w, count, ctx.shape, locref=True, huber=ctx.huber)
        return grad, None, None, None


def part_loss_triton(logits: torch.Tensor, scmap: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Triton `part_loss` (runs on CPU tensors too under TRITON_INTERPRET=1)."""
    _check(logits, scmap, weights, ("logits", "scmap", "weights"))
    return _PartLoss.apply(logits, scmap.detach(), weights.detach())


def locref_loss_triton(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, huber: bool = True):
    """Triton `locref_loss` (runs on CPU tensors too under TRITON_INTERPRET=1)."""
    _check(pred, target, mask, ("pred", "target", "mask"))
    return _LocrefLoss.apply(pred, target.detach(), mask.detach(), bool(huber))


# ------------------------------------------------------------------------------------------------------- dispatch


def part_loss(logits: torch.Tensor, scmap: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum(w * sigmoid_ce(logits, scmap)) / count_nonzero(w); Triton on CUDA, the torch twin otherwise."""
    if logits.is_cuda:
        return part_loss_triton(logits, scmap, weights)
    return part_loss_torch(logits, scmap, weights)


def locref_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, huber: bool = True) -> torch.Tensor:
    """sum(mask * h(pred - target)) / count_nonzero(mask), h Huber or squared; Triton on CUDA, the twin otherwise."""
    if pred.is_cuda:
        return locref_loss_triton(pred, target, mask, huber)
    return locref_loss_torch(pred, target, mask, huber)
