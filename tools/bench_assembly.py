"""Benchmark of the person assembly: ms per image for 17 joints x 2-20 people (a note, not a test).

Synthetic images: people = a random template pose shifted and jittered, drawn on a 960 x 720 network input (stride 8);
maps as a perfect network would give them (one peak per joint, exact locref and pairwise). Timed (ms, the best of
--runs runs of --repeat calls each, since the machine may be shared): the whole `assemble`; its steps `detect` (NMS),
the native `edge_costs` (pruned, as assemble calls it) and the native multicut on that pruned graph; for comparison
the numpy `edge_features` + logistic costs (the reference), the native multicut on the full graph (every pair, with
the same-type repulsions) and the numpy greedy contraction of fastpose.baselines.gaec on it (pure-python baseline).

Run: .venv/bin/python tools/bench_assembly.py [--repeat 20] [--runs 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from fastpose import assembly
from fastpose.baselines import gaec
from fastpose.kernels.pairwise import pair_id

K, H, W, STRIDE = 17, 90, 120, 8  # grid cells of a 960 x 720 input


def people(rng, n: int) -> np.ndarray:
    """(n, K, 2) joints in network pixels: one template pose (~120 x 280 px) shifted and jittered per person."""
    template = rng.uniform([-60, -140], [60, 140], (K, 2))
    centres = rng.uniform([80, 160], [W * STRIDE - 80, H * STRIDE - 160], (n, 2))
    return centres[:, None] + template[None] + rng.normal(0, 8, (n, K, 2))


def maps(joints: np.ndarray, mean, std):
    part = np.full((K, H, W), -10.0, np.float32)
    locref = np.zeros((2 * K, H, W), np.float32)
    pairwise = np.zeros((2 * K * (K - 1), H, W), np.float32)
    for p in joints:
        cells = np.clip((p // STRIDE).astype(int), 0, [W - 1, H - 1])
        for s in range(K):
            col, row = cells[s]
            centre = cells[s] * STRIDE + STRIDE / 2
            part[s, row, col] = 5.0
            locref[2 * s:2 * s + 2, row, col] = (p[s] - centre) / 7.2801
            e = np.array([e for e in range(K) if e != s])
            pid = pair_id(np.full(len(e), s), e, K)
            target = ((p[e] - centre) - mean[s, e]) / std[s, e]  # (K - 1, 2)
            pairwise[2 * pid, row, col] = target[:, 0]
            pairwise[2 * pid + 1, row, col] = target[:, 1]
    return part, locref, pairwise


def timed(fn, repeat: int, runs: int = 1) -> float:
    """ms per call: the best of `runs` runs of `repeat` calls (other processes only ever add time)."""
    fn()  # warm-up
    best = math.inf
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - t0) / repeat * 1e3)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    cfg = SimpleNamespace(stride=STRIDE, locref_stdev=7.2801, nms_radius=1.5, det_min_score=0.5, sparse_graph=[],
                          pairwise_stats_fn="")
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; best of {args.runs} x {args.repeat}")
    rows = []
    for n in (2, 5, 10, 20):
        joints = people(rng, n)
        off = joints[:, None, :, :] - joints[:, :, None, :]  # (n, K, K, 2)
        mean, std = off.mean(0), np.maximum(off.std(0), 4.0)
        weights = np.asarray(assembly.DEFAULT_WEIGHTS)
        model = {"weights": list(weights), "mean": mean, "std": std}
        part, locref, pairwise = maps(joints, mean, std)
        found = assembly.assemble(part, locref, pairwise, cfg, model)
        dets = assembly.detect(part, locref, cfg)
        all_edges, costs = assembly.edge_costs(dets, pairwise, mean, std, cfg, weights)
        edges, pruned = assembly.edge_costs(dets, pairwise, mean, std, cfg, weights, prune=True)

        def numpy_costs(dets=dets, mean=mean, std=std, pairwise=pairwise, weights=weights):
            _, feats, _ = assembly.edge_features(dets, pairwise, mean, std, cfg)
            return -np.clip(feats @ weights, -assembly.LOGIT_CLIP, assembly.LOGIT_CLIP)

        run = partial(timed, repeat=args.repeat, runs=args.runs)
        row = {"people": n, "detections": len(dets), "edges": len(all_edges), "pruned_edges": len(edges),
               "found_people": len(found),
               "assemble_ms": run(partial(assembly.assemble, part, locref, pairwise, cfg, model)),
               "detect_ms": run(partial(assembly.detect, part, locref, cfg)),
               "edge_costs_ms": run(partial(assembly.edge_costs, dets, pairwise, mean, std, cfg, weights,
                                            prune=True)),
               "multicut_ms": run(partial(assembly.multicut, len(dets), edges, pruned)),
               "numpy_costs_ms": run(numpy_costs),
               "multicut_full_ms": run(partial(assembly.multicut, len(dets), all_edges, costs)),
               "numpy_gaec_ms": timed(partial(gaec, len(dets), all_edges, costs), max(1, args.repeat // 10))}
        rows.append(row)
        print("  ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
