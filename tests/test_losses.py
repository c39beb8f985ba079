"""Part and locref losses: hand-computed values, torch.nn.functional equivalents, gradients, the empty mask, and the
Triton kernels against the torch twins (interpreter on CPU, compiled on CUDA when present)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fastpose.kernels import losses
from fastpose.kernels.losses import (
    locref_loss,
    locref_loss_torch,
    locref_loss_triton,
    part_loss,
    part_loss_torch,
    part_loss_triton,
)

PART = {"torch": part_loss_torch, "triton": part_loss_triton}
LOCREF = {"torch": locref_loss_torch, "triton": locref_loss_triton}
# (loss rtol, grad rtol, grad atol) per input dtype: bf16 gradients are rounded to bf16 (8 bits of mantissa).
TOL = {torch.float32: (1e-5, 1e-5, 1e-7), torch.bfloat16: (1e-5, 2**-7, 1e-6)}


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@pytest.mark.parametrize("impl", PART)
def test_part_loss_hand_computed_value_and_gradient(impl):
    x = torch.tensor([0.0, 2.0, -1.0, 5.0], requires_grad=True)
    z = torch.tensor([1.0, 0.0, 1.0, 1.0])
    w = torch.tensor([1.0, 0.5, 2.0, 0.0])  # the last element carries no weight and is not counted
    loss = PART[impl](x, z, w)
    ce = [math.log(2.0), 2.0 + math.log1p(math.exp(-2.0)), 1.0 + math.log1p(math.exp(-1.0))]
    expected = (1.0 * ce[0] + 0.5 * ce[1] + 2.0 * ce[2]) / 3
    assert loss.dtype == torch.float32 and loss.shape == ()
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    (grad,) = torch.autograd.grad(loss, x)
    g = [1.0 * (0.5 - 1.0) / 3, 0.5 * (_sigmoid(2.0) - 0.0) / 3, 2.0 * (_sigmoid(-1.0) - 1.0) / 3, 0.0]
    torch.testing.assert_close(grad, torch.tensor(g), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("impl", LOCREF)
def test_locref_loss_hand_computed_huber_and_squared(impl):
    pred = torch.tensor([0.5, -2.0, 3.0, 0.1], requires_grad=True)
    target = torch.zeros(4)
    mask = torch.tensor([1.0, 1.0, 0.0, 1.0])
    huber = LOCREF[impl](pred, target, mask, huber=True)
    assert huber.item() == pytest.approx((0.125 + 1.5 + 0.005) / 3, rel=1e-6)
    (grad,) = torch.autograd.grad(huber, pred)
    torch.testing.assert_close(grad, torch.tensor([0.5, -1.0, 0.0, 0.1]) / 3, rtol=1e-6, atol=1e-8)

    squared = LOCREF[impl](pred, target, mask, huber=False)  # plain d^2, not 0.5 d^2
    assert squared.item() == pytest.approx((0.25 + 4.0 + 0.01) / 3, rel=1e-6)
    (grad,) = torch.autograd.grad(squared, pred)
    torch.testing.assert_close(grad, torch.tensor([1.0, -4.0, 0.0, 0.2]) / 3, rtol=1e-6, atol=1e-8)


def _inputs(shape, dtype, gen, zero_frac=0.3):
    a = (3 * torch.randn(shape, generator=gen)).to(dtype)
    b = (torch.rand(shape, generator=gen) > 0.8).float()
    w = torch.rand(shape, generator=gen) * (torch.rand(shape, generator=gen) > zero_frac)
    return a, b, w


@pytest.mark.parametrize("impl", PART)
def test_part_loss_equals_functional_bce_by_nonzero_weights(gen, impl):
    logits, scmap, weights = _inputs((2, 5, 6, 7), torch.float32, gen)
    x = logits.clone().requires_grad_()
    y = logits.clone().requires_grad_()
    got = PART[impl](x, scmap, weights)
    want = F.binary_cross_entropy_with_logits(y, scmap, weight=weights, reduction="sum") / (weights != 0).sum()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=0)
    torch.testing.assert_close(torch.autograd.grad(got, x)[0], torch.autograd.grad(want, y)[0], rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("huber", [True, False])
@pytest.mark.parametrize("impl", LOCREF)
def test_locref_loss_equals_functional_huber_and_mse(gen, impl, huber):
    pred, _, mask = _inputs((2, 6, 5, 7), torch.float32, gen)
    target = torch.randn(pred.shape, generator=gen)
    mask = (mask > 0).float()  # the locref mask is 0/1
    x = pred.clone().requires_grad_()
    y = pred.clone().requires_grad_()
    got = LOCREF[impl](x, target, mask, huber=huber)
    if huber:
        elem = F.huber_loss(y, target, reduction="none", delta=1.0)
    else:
        elem = F.mse_loss(y, target, reduction="none")
    want = (elem * mask).sum() / mask.sum()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=0)
    torch.testing.assert_close(torch.autograd.grad(got, x)[0], torch.autograd.grad(want, y)[0], rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_finite_differences_match_the_gradient(gen, impl):
    logits, scmap, weights = _inputs((6,), torch.float32, gen, zero_frac=0.0)
    pred, target = torch.randn(6, generator=gen) * 2, torch.randn(6, generator=gen)
    mask = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 1.0])
    cases = [
        (lambda a: PART[impl](a, scmap, weights), logits),
        (lambda a: LOCREF[impl](a, target, mask, huber=True), pred),
        (lambda a: LOCREF[impl](a, target, mask, huber=False), pred),
    ]
    eps = 1e-2
    for fn, at in cases:
        a = at.clone().requires_grad_()
        (grad,) = torch.autograd.grad(fn(a), a)
        fd = torch.stack([(fn(at + eps * e) - fn(at - eps * e)) / (2 * eps) for e in torch.eye(6)])
        torch.testing.assert_close(grad, fd, rtol=0, atol=2e-3)


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_empty_mask_gives_zero_loss_and_zero_gradient(impl):
    a = torch.randn(2, 3, 4, 4).requires_grad_()
    zeros = torch.zeros(2, 3, 4, 4)
    for loss in (
        PART[impl](a, torch.ones_like(zeros), zeros),
        LOCREF[impl](a, torch.ones_like(zeros), zeros, huber=True),
        LOCREF[impl](a, torch.ones_like(zeros), zeros, huber=False),
    ):
        assert loss.item() == 0.0
        (grad,) = torch.autograd.grad(loss, a)
        assert torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_matches_torch_twin_forward_and_backward(gen, monkeypatch, dtype):
    # 4 programs over 3 * 4 * 1024 + 5 elements: every program loops over several blocks, the last one partial.
    monkeypatch.setattr(losses, "_MAX_PROGRAMS", 4)
    n = 3 * 4 * 1024 + 5
    loss_rtol, grad_rtol, grad_atol = TOL[dtype]
    a, b, w = _inputs((n,), dtype, gen)
    target = torch.randn(n, generator=gen)
    for twin, kernel, args in (
        (part_loss_torch, part_loss_triton, (b, w)),
        (lambda *t: locref_loss_torch(*t, huber=True), lambda *t: locref_loss_triton(*t, huber=True), (target, w)),
        (lambda *t: locref_loss_torch(*t, huber=False), lambda *t: locref_loss_triton(*t, huber=False), (target, w)),
    ):
        x = a.clone().requires_grad_()
        y = a.clone().requires_grad_()
        want, got = twin(x, *args), kernel(y, *args)
        assert got.dtype == torch.float32 and got.shape == ()
        torch.testing.assert_close(got, want, rtol=loss_rtol, atol=0)
        gx, gy = torch.autograd.grad(want, x)[0], torch.autograd.grad(got, y)[0]
        assert gy.dtype == dtype
        torch.testing.assert_close(gy.float(), gx.float(), rtol=grad_rtol, atol=grad_atol)


def test_triton_forward_is_deterministic(gen, monkeypatch):
    monkeypatch.setattr(losses, "_MAX_PROGRAMS", 3)
    a, b, w = _inputs((5000,), torch.float32, gen)
    first = part_loss_triton(a, b, w)
    assert torch.equal(part_loss_triton(a, b, w), first)
    assert torch.equal(part_loss_triton(a.clone(), b.clone(), w.clone()), first)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_dispatch_matches_torch_twin(gen, dtype):
    loss_rtol, grad_rtol, grad_atol = TOL[dtype]
    a, b, w = _inputs((8, 17, 64, 64), dtype, gen)
    target = torch.randn(a.shape, generator=gen)
    for twin, dispatched, args in (
        (part_loss_torch, part_loss, (b, w)),
        (locref_loss_torch, locref_loss, (target, (w > 0).float())),
    ):
        x = a.clone().requires_grad_()
        y = a.cuda().requires_grad_()
        want, got = twin(x, *args), dispatched(y, *(t.cuda() for t in args))
        torch.testing.assert_close(got.cpu(), want, rtol=loss_rtol, atol=0)
        gx, gy = torch.autograd.grad(want, x)[0], torch.autograd.grad(got, y)[0]
        torch.testing.assert_close(gy.float().cpu(), gx.float(), rtol=grad_rtol, atol=grad_atol)


def test_shape_and_dtype_errors():
    with pytest.raises(ValueError, match="same shape"):
        part_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        locref_loss(torch.zeros(4, dtype=torch.float64), torch.zeros(4), torch.zeros(4))


def test_twins_one_weighted_cell_and_their_messages():
    z = torch.zeros(1, 1, 2, 2)  # (B, K, H, W)
    one = z.clone()
    one[0, 0, 1, 0] = 1.0
    # one weighted cell: its own loss, divided by 1 (ce(0, target 1) = softplus(0) = ln 2)
    assert losses.part_loss_torch(z, one, one).item() == pytest.approx(math.log(2), rel=1e-6)
    pred = z.clone()
    pred[0, 0, 1, 0] = 3.0
    assert losses.locref_loss_torch(pred, z, one).item() == pytest.approx(2.5)  # Huber by default: |3| - 0.5
    assert losses.locref_loss_torch(pred, z, one, huber=False).item() == pytest.approx(9.0)
    _assert_argument_messages(losses.part_loss_torch, losses.locref_loss_torch)


def _assert_argument_messages(part, locref) -> None:
    """Both losses name their arguments when the shapes differ or the dtype is not float32/bfloat16."""
    z = torch.zeros(1, 1, 2, 2)
    for fn, names in ((part, "logits, scmap and weights"), (locref, "pred, target and mask")):
        with pytest.raises(ValueError, match=rf"^{names} must have the same shape; got \(1, 1, 2, 2\), \(1, 1, 2, 1\), "
                                             r"\(1, 1, 2, 2\)$"):
            fn(z, z[..., :1], z)
        first = names.split(",")[0]
        with pytest.raises(ValueError, match=rf"^{first} must be float32 or bfloat16; got torch\.float64$"):
            fn(z.double(), z.double(), z.double())


@pytest.mark.parametrize("impl", ["triton", "dispatch"])
def test_one_weighted_cell_value_gradient_and_messages_of_the_launchers(impl):
    # As above through the Triton launchers (count 1: divided by 1, not by a clamp of 2) and the CPU dispatch; Huber
    # is the default of both. Gradients: sigmoid(0) - 1 = -0.5 and the Huber slope sign(3) = 1 at the one cell.
    part = {"triton": part_loss_triton, "dispatch": part_loss}[impl]
    locref = {"triton": locref_loss_triton, "dispatch": locref_loss}[impl]
    z = torch.zeros(1, 1, 2, 2)
    one = z.clone()
    one[0, 0, 1, 0] = 1.0
    logits = z.clone().requires_grad_()
    loss = part(logits, one, one)
    assert loss.item() == pytest.approx(math.log(2), rel=1e-6)
    (grad,) = torch.autograd.grad(loss, logits)
    torch.testing.assert_close(grad, -0.5 * one, rtol=1e-6, atol=0)
    pred = (3.0 * one).requires_grad_()
    loss = locref(pred, z, one)
    assert loss.item() == pytest.approx(2.5)  # |3| - 0.5
    (grad,) = torch.autograd.grad(loss, pred)
    torch.testing.assert_close(grad, one, rtol=1e-6, atol=0)
    assert locref(pred, z, one, huber=False).item() == pytest.approx(9.0)
    _assert_argument_messages(part, locref)
