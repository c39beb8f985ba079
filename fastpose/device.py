"""Which torch device a user's device name means (config `device:` or `--device`), and how the network runs there:
the precision (`precision: auto` picks bf16 where the device runs it fast) and the memory layout. Decided here once,
for training, evaluation, prediction and benchmarks.

Precision `auto`: bf16 autocast on CUDA GPUs that support bf16, and on CPUs whose oneDNN runs bf16 natively (AMX or
AVX512-BF16) when a short probe (two 3x3 convolutions, forward and backward, channels_last, a fraction of a second)
finds bf16 faster than fp32 on this machine; fp32 elsewhere. Decoding, losses and metrics stay float32 whatever the
precision (the heads' outputs are cast with `.float()`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from pathlib import Path

import torch

from fastpose.atomic import write_atomic
from fastpose.errors import UserError

PROBE_MARGIN = 0.9  # bf16 must take at most 90% of fp32's probe time: a tie is not worth the rounding


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


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux lists them (/proc/cpuinfo); empty elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _probe_seconds() -> tuple[float, float]:
    """(fp32, bf16) fastest seconds of a forward+backward pass of two 3x3 convolutions on (2, 64, 28, 28),
    channels_last; the two precisions alternate, so a load that comes and goes hits both alike."""
    gen = torch.Generator().manual_seed(0)
    convs = torch.nn.Sequential(*[torch.nn.Conv2d(64, 64, 3, padding=1, bias=False) for _ in range(2)])
    convs = convs.to(memory_format=torch.channels_last)
    x = torch.randn(2, 64, 28, 28, generator=gen).contiguous(memory_format=torch.channels_last)
    best = {False: float("inf"), True: float("inf")}
    for i in range(5):  # the first round primes oneDNN's kernel cache and is not timed
        for bf16 in (False, True):
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                y = convs(x)
            y.float().square().mean().backward()
            if i:
                best[bf16] = min(best[bf16], time.perf_counter() - t0)
    return best[False], best[True]


def _cache_file() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "fastpose" / "cpu_bf16.json"


@functools.cache
def cpu_bf16() -> tuple[bool, str]:
    """(whether bf16 autocast is the faster choice on this CPU, why): native bf16 in oneDNN (AMX or AVX512-BF16)
    and a probe that measured it faster than fp32. The probe's verdict is kept per CPU and torch version in
    ~/.cache/fastpose/cpu_bf16.json (FASTPOSE_CPU_BF16=0/1 overrides it), so every run on a machine chooses alike."""
    flags = cpu_flags()
    native = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
    forced = os.environ.get("FASTPOSE_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1", f"FASTPOSE_CPU_BF16={forced}"
    if not native or not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False, "this CPU has no native bf16 (AMX / AVX512-BF16), where bf16 is slower than fp32"
    key = f"{cpu_name()} | {'/'.join(native)} | torch {torch.__version__}"
    cache = _cache_file()
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    if key not in known:
        fp32, bf16 = _probe_seconds()
        known[key] = {"fp32_ms": fp32 * 1e3, "bf16_ms": bf16 * 1e3}
        with contextlib.suppress(OSError):  # a read-only home only costs a probe per process
            cache.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(cache, json.dumps(known, indent=1))
    fp32_ms, bf16_ms = known[key]["fp32_ms"], known[key]["bf16_ms"]
    what = f"{'/'.join(native)}; conv probe fp32 {fp32_ms:.1f} ms, bf16 {bf16_ms:.1f} ms"
    if bf16_ms <= PROBE_MARGIN * fp32_ms:
        return True, what
    return False, what + ": bf16 not faster here"


@functools.cache
def _cuda_precision(device: torch.device) -> tuple[str, str]:
    """auto's choice on a GPU, asked of the driver once per device (autocast() resolves it at every step)."""
    if torch.cuda.is_bf16_supported():
        return "bf16", f"{torch.cuda.get_device_name(device)} supports bf16"
    return "fp32", f"{torch.cuda.get_device_name(device)} has no bf16"


def resolve_precision(precision: str, device: torch.device) -> tuple[str, str]:
    """(fp32 | bf16 | fp16, why) that `precision` (auto | fp32 | bf16 | fp16) means on `device`."""
    if precision != "auto":
        return precision, "set in the config"
    if device.type == "cuda":
        return _cuda_precision(device)
    if device.type == "cpu":
        fast, why = cpu_bf16()
        return ("bf16" if fast else "fp32"), why
    return "fp32", f"no mixed precision on {device.type}"


def resolve_channels_last(channels_last: bool | str, device: torch.device) -> bool:
    """Whether the network and its inputs use channels_last. auto: yes on CUDA and on the CPU, where oneDNN's
    convolutions run in that layout (measured on this project's CPUs: notes/cpu.md, 1.3-2x over NCHW)."""
    if channels_last == "auto":
        return device.type in ("cuda", "cpu")
    return bool(channels_last)


def resolve_compile(compile: bool | str, device: torch.device) -> tuple[bool, str]:
    """(whether training wraps the model in torch.compile, why). auto: off. Measured on this project's CPU (2-core AMD
    EPYC, ResNet-18 at 128 px, batch 8, bf16 + channels_last, `fastpose bench step --set compile=true`): about 45 s
    of compiling, then 167 ms per step against 162 ms eager, so it never pays; on CUDA it has not been measured yet
    (a GPU session's `fastpose bench step --set compile=true` decides), so auto leaves it off there too. true:
    compiled, falling back to eager for what fails."""
    if compile == "auto":
        if device.type == "cpu":
            return False, "auto: measured slower than eager on the CPU"
        return False, "auto: not yet measured on CUDA"
    return bool(compile), "set in the config"


def memory_format(channels_last: bool | str, device: torch.device) -> torch.memory_format:
    return torch.channels_last if resolve_channels_last(channels_last, device) else torch.contiguous_format


def autocast(precision: str, device: torch.device):
    """The context the network's forward pass runs under: bf16 / fp16 autocast as `resolve_precision` says, on CUDA
    or the CPU; plain fp32 otherwise."""
    resolved, _ = resolve_precision(precision, device)
    if resolved in ("bf16", "fp16") and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16 if resolved == "bf16" else torch.float16)
    return contextlib.nullcontext()


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for fp16 on CUDA (bf16 and fp32 need none: the scaler is then a no-op)."""
    return torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and
                                resolve_precision(precision, device)[0] == "fp16")


def effective_precision(precision: str, device: torch.device) -> str:
    """What `autocast` really runs on `device`: fp32, bf16 or fp16."""
    return resolve_precision(precision, device)[0]
