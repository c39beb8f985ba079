"""Which torch device a user's device name means (config `device:` or `--device`), checked once for every command."""

from __future__ import annotations

import torch

from fastpose.errors import UserError


def pick_device(name: str = "auto") -> torch.device:
    """auto -> cuda when torch sees a GPU, else cpu; cpu | cuda | cuda:N as given; anything else is a UserError."""
    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and not (name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit())):
        raise UserError(f"--device {name!r} is not a device: use auto, cpu, cuda or cuda:N (N = the GPU's index).")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name} was asked for, but torch {torch.__version__} sees no CUDA GPU here. Use "
                        f"--device cpu, or device: auto in the config.")
    return torch.device(name)
