"""Which torch device a user's device name means (config `device:` or `--device`), and the mixed-precision context
every command runs the network under: both decided here once, for training, evaluation, prediction and benchmarks."""

from __future__ import annotations

import contextlib

import torch

from fastpose.errors import UserError


def pick_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """auto -> cuda when torch sees a GPU, else cpu; cpu | cuda | cuda:N as given; anything else is a UserError.

    local_rank (one process of a torchrun job): a CUDA choice becomes cuda:local_rank, made the current device.
    """
    name = str(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name != "cpu" and not (name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit())):
        raise UserError(f"--device {name!r} is not a device: use auto, cpu, cuda or cuda:N (N = the GPU's index).")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name} was asked for, but torch {torch.__version__} sees no CUDA GPU here. Use "
                        f"--device cpu, or device: auto in the config.")
    if name.startswith("cuda") and local_rank is not None:
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device(name)


def autocast(precision: str, device: torch.device):
    """The context the network's forward pass runs under: bf16/fp16 autocast on CUDA for `precision` bf16 | fp16,
    plain fp32 otherwise (the CPU runs fp32)."""
    if device.type == "cuda" and precision in ("bf16", "fp16"):
        return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    return contextlib.nullcontext()


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for fp16 on CUDA (bf16 and fp32 need none: the scaler is then a no-op)."""
    return torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and precision == "fp16")


def effective_precision(precision: str, device: torch.device) -> str:
    """What `autocast` really runs: the config's precision on CUDA, fp32 on the CPU."""
    return precision if device.type == "cuda" and precision in ("bf16", "fp16") else "fp32"
