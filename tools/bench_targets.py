"""Benchmark of the training targets: the reference-style numpy loop vs the torch twin on CPU vs Triton on CUDA.

Prints ms per batch (the fastest and the median of several repeats) and the speed-ups over the numpy loop (and of
Triton over the twin on a GPU); `--json OUT` also writes the figures. `bench_targets(device, cases)` is the function
`fastpose bench targets` calls.

    python tools/bench_targets.py            # the MPII and COCO cases
    python tools/bench_targets.py --threads 1  # the twin on one core
    python tools/bench_targets.py --json bench_targets.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from fastpose.bench import time_calls
from fastpose.kernels.targets import make_targets_torch, make_targets_triton

sys.path.insert(0, str(Path(__file__).resolve().parent))
from numpy_targets import numpy_targets  # noqa: E402

# name: (B, P, K, H, W, dist_thresh): MPII at 368 px (pos_dist_thresh 17 x global_scale 0.8), COCO at 512 px.
CASES = {
    "mpii": (16, 1, 14, 46, 46, 17 * 0.8),
    "coco": (16, 6, 17, 64, 64, 17 * 0.8),
}
STRIDE = 8


def _joints(b, p, k, h, w, seed=0) -> torch.Tensor:
    """Joints uniform over the grid's pixels, 90 % present (B, P, K, 3)."""
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(b, p, k, 2, generator=gen) * torch.tensor([w * STRIDE, h * STRIDE], dtype=torch.float32)
    present = (torch.rand(b, p, k, 1, generator=gen) < 0.9).float()
    return torch.cat([xy, present], dim=-1)


def _times_ms(fn, args: tuple, repeats: int, device: str = "cpu") -> tuple[float, float]:
    """(fastest, median) of `repeats` calls of fn(*args), in ms, after one warm-up call (Triton compiles there).

    The fastest is the figure to compare implementations by (shared machines are noisy); the median shows what a
    loop of calls gets, stalls included.
    """
    times = sorted(time_calls(lambda: fn(*args), torch.device(device), warmup=1, iters=repeats))
    return times[0] * 1000.0, times[len(times) // 2] * 1000.0


def bench_targets(device: str = "cpu", cases: list[str] | None = None, repeats: int = 20) -> dict:
    """ms per batch for each case: numpy loop, torch twin on CPU, and Triton when `device` is a CUDA device.

    Returns {"device": ..., "threads": ..., "cases": {name: {"shape": ..., "numpy_ms", "torch_cpu_ms",
    "triton_ms" (or None), "torch_speedup", "triton_speedup" (or None)}}}.
    """
    names = list(CASES) if not cases else cases
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise ValueError(f"unknown benchmark case(s) {unknown}; allowed: {sorted(CASES)}")
    use_cuda = device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available; use --device cpu")
    out = {"device": device, "threads": torch.get_num_threads(), "cases": {}}
    for name in names:
        b, p, k, h, w, thresh = CASES[name]
        joints = _joints(b, p, k, h, w)
        joints_np = joints.numpy()
        numpy_ms, numpy_med = _times_ms(numpy_targets, (joints_np, (h, w), STRIDE, thresh), max(3, repeats // 5))
        torch_ms, torch_med = _times_ms(make_targets_torch, (joints, (h, w), STRIDE, thresh), repeats)
        triton_ms = triton_med = None
        if use_cuda:
            joints_dev = joints.to(device)
            args = (joints_dev, (h, w), STRIDE, thresh)
            triton_ms, triton_med = _times_ms(make_targets_triton, args, repeats, device)
        out["cases"][name] = {
            "shape": {"B": b, "P": p, "K": k, "H": h, "W": w, "dist_thresh": thresh},
            "numpy_ms": numpy_ms,
            "torch_cpu_ms": torch_ms,
            "triton_ms": triton_ms,
            "numpy_median_ms": numpy_med,
            "torch_cpu_median_ms": torch_med,
            "triton_median_ms": triton_med,
            "torch_speedup": numpy_ms / torch_ms,
            "torch_median_speedup": numpy_med / torch_med,
            "triton_speedup": None if triton_ms is None else numpy_ms / triton_ms,
            "triton_vs_torch": None if triton_ms is None else torch_ms / triton_ms,
        }
    return out


def _table(result: dict) -> str:
    lines = [
        f"device {result['device']}, torch threads {result['threads']}; ms per batch, fastest (median) of the repeats",
        f"{'case':6} {'B,P,K,H,W':>16} {'numpy loop':>16} {'torch twin':>16} {'x numpy':>13} {'triton':>16} "
        f"{'x twin':>7}",
    ]
    for name, r in result["cases"].items():
        s = r["shape"]
        shape = f"{s['B']},{s['P']},{s['K']},{s['H']},{s['W']}"
        tri = "-" if r["triton_ms"] is None else f"{r['triton_ms']:.4f} ({r['triton_median_ms']:.4f})"
        tri_x = "-" if r["triton_vs_torch"] is None else f"{r['triton_vs_torch']:.0f}"
        lines.append(
            f"{name:6} {shape:>16} {r['numpy_ms']:7.2f} ({r['numpy_median_ms']:6.2f}) "
            f"{r['torch_cpu_ms']:7.3f} ({r['torch_cpu_median_ms']:6.3f}) "
            f"{r['torch_speedup']:5.1f} ({r['torch_median_speedup']:5.1f}) {tri:>16} {tri_x:>7}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda[:N]")
    parser.add_argument("--cases", nargs="*", choices=sorted(CASES), help="cases to run (default: all)")
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats per measurement (best is reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = bench_targets(args.device, args.cases, args.repeats)
    print(_table(result))
    if args.json is not None:
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        os.replace(tmp, args.json)  # never leave a half-written file under the final name
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
