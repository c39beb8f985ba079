"""The kernels' dispatchers: CUDA tensors go to the Triton launcher with every argument as given, CPU tensors to the
torch twin. A tensor subclass that says it is on CUDA stands in for a GPU, and recorders replace both sides, so the
contract is checked on a CPU-only machine (the numbers of each side are compared in the kernels' own tests)."""

from __future__ import annotations

import pytest
import torch

from fastpose.kernels import losses, pairwise, targets


class _SaysCuda(torch.Tensor):
    is_cuda = True  # what the dispatchers ask; the data stay on the CPU


def _record(calls: list, name: str):
    def side(*args, **kwargs):
        calls.append((name, args, kwargs))
        return name
    return side


def _cuda(t: torch.Tensor) -> torch.Tensor:
    return t.as_subclass(_SaysCuda)


# (module, dispatcher, Triton side, twin side, arguments after the first tensor: every one set to a non-default)
CASES = [
    (targets, "make_targets", "make_targets_triton", "make_targets_torch",
     lambda: ((5, 7), 4.0, 13.0, 3.5, torch.ones(2, 5, 7), True)),
    (pairwise, "make_pairwise_targets", "make_pairwise_targets_triton", "make_pairwise_targets_torch",
     lambda: ((5, 7), torch.ones(3, 2), torch.full((3, 2), 2.0), 4.0, 13.0)),
    (losses, "part_loss", "part_loss_triton", "part_loss_torch",
     lambda: (torch.zeros(2, 3), torch.ones(2, 3))),
    (losses, "locref_loss", "locref_loss_triton", "locref_loss_torch",
     lambda: (torch.zeros(2, 3), torch.ones(2, 3), False)),
]


@pytest.mark.parametrize("module, dispatcher, triton_side, twin_side, rest", CASES,
                         ids=[c[1] for c in CASES])
def test_cuda_tensors_go_to_triton_with_every_argument_and_cpu_tensors_to_the_twin(
        monkeypatch, module, dispatcher, triton_side, twin_side, rest):
    calls: list = []
    monkeypatch.setattr(module, triton_side, _record(calls, "triton"))
    monkeypatch.setattr(module, twin_side, _record(calls, "twin"))
    first, args = torch.arange(6.0).reshape(2, 3), rest()
    for tensor, side in ((_cuda(first), "triton"), (first, "twin")):
        calls.clear()
        assert getattr(module, dispatcher)(tensor, *args) == side
        (name, got, kwargs), = calls
        assert name == side and got[0] is tensor and not kwargs
        assert len(got) == 1 + len(args)
        for g, want in zip(got[1:], args):
            assert g is want or g == want  # the very objects: nothing dropped, swapped or replaced by a default
