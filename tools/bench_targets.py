"""Benchmark of the training targets: the reference-style numpy loop vs the torch twin on CPU vs Triton on CUDA.

Prints ms per batch (the fastest and the median of several repeats) and the speed-ups over the numpy loop (and of
Triton over the twin on a GPU); `--json OUT` also writes the figures. The figures come from
`fastpose.bench.bench_targets`, what `fastpose bench targets` runs.

    python tools/bench_targets.py            # the MPII and COCO cases
    python tools/bench_targets.py --threads 1  # the twin on one core
    python tools/bench_targets.py --json bench_targets.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fastpose.atomic import write_atomic
from fastpose.bench import TARGET_CASES, bench_targets


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
    parser.add_argument("--cases", nargs="*", choices=sorted(TARGET_CASES), help="cases to run (default: all)")
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats per measurement (best is reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = bench_targets(args.device, args.cases, args.repeats)
    print(_table(result))
    if args.json is not None:
        write_atomic(args.json, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
