"""Why ONNX Runtime and torch eager differ on the CPU: the exported inference graph (fastpose.export.InferenceGraph,
random weights) timed under variants that isolate threads, batch-norm folding and memory layout, interleaved round by
round so that a shared machine's load hits every variant alike.

    python tools/bench_engines.py --net resnet_18 --batch 2 --size 224 --rounds 3

Variants: torch eager NCHW fp32 with 2 and 1 threads; eager channels_last; eager bf16 autocast + channels_last with 2
and 1 threads (what `fastpose predict` runs on a CPU where `precision: auto` picks bf16); eager with the network
frozen by torch.jit.freeze + optimize_for_inference (conv + batch norm folded, oneDNN layout: what ORT's graph
optimiser does); ONNX Runtime with 2 and 1 intra-op threads. Prints the median seconds per batch and each variant's
ratio over eager NCHW, fastest first.
"""

from __future__ import annotations

import argparse
import copy
import platform
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from fastpose import config as config_mod
from fastpose import export
from fastpose.atomic import write_atomic
from fastpose.bench import time_calls
from fastpose.images import network_input
from fastpose.model import build_model


class Heads(torch.nn.Module):
    """The network with a tuple output (part, locref): what torch.jit.trace can freeze (no None in a dict)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(x)
        return out["part"], out["locref"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--net", default="resnet_18")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cfg = config_mod.load(None, net_type=args.net, num_joints=14, location_refinement=True, global_scale=1.0)
    torch.manual_seed(0)
    graph = export.InferenceGraph(build_model(cfg).eval(), cfg).eval()
    images = torch.randint(0, 256, (args.batch, args.size, args.size, 3), dtype=torch.uint8)
    cpu = torch.device("cpu")

    def eager(module, threads: int, channels_last: bool = False, bf16: bool = False):
        def call():
            torch.set_num_threads(threads)
            with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                batch, _, _ = network_input(images, cfg)  # (B, 3, H, W)
                if channels_last:
                    batch = batch.contiguous(memory_format=torch.channels_last)
                return module(batch)
        return call

    net = Heads(graph.model).eval()
    last = copy.deepcopy(net).to(memory_format=torch.channels_last)
    with torch.no_grad():
        example = network_input(images, cfg)[0]
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(
            net, example, strict=False, check_trace=False).eval()))
    data = export.to_onnx(graph, export.example_input(None), None, export.DEFAULT_OPSET, {})
    sessions = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        write_atomic(path, data)
        for threads in (2, 1):
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            sessions[threads] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    host = images.numpy()
    variants = {
        "torch eager NCHW, 2 threads": eager(net, 2),
        "torch eager NCHW, 1 thread": eager(net, 1),
        "torch eager channels_last, 2 threads": eager(last, 2, True),
        "torch bf16 autocast + channels_last, 2 threads": eager(last, 2, True, True),
        "torch bf16 autocast + channels_last, 1 thread": eager(last, 1, True, True),
        "torch frozen (BN folded, oneDNN), 2 threads": eager(frozen, 2),
        "onnxruntime, 2 threads": lambda: sessions[2].run(["joints"], {"images": host}),
        "onnxruntime, 1 thread": lambda: sessions[1].run(["joints"], {"images": host}),
    }
    times = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            times[name] += list(time_calls(fn, cpu, warmup=1, iters=2))
    torch.set_num_threads(2)
    base = float(np.median(times["torch eager NCHW, 2 threads"]))
    print(f"{args.net}, batch {args.batch}, {args.size}x{args.size}, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, onnxruntime {ort.__version__}; median of {2 * args.rounds} calls (min-max)")
    for name in sorted(times, key=lambda n: np.median(times[n])):
        t = np.array(times[name])
        print(f"  {name:45s} {np.median(t):7.3f} s ({t.min():.3f}-{t.max():.3f})  x{base / np.median(t):.2f}")


if __name__ == "__main__":
    main()
