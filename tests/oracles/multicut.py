"""Pure-numpy multicut references for the native solver's tests.

`objective` is the cost being minimised: the summed cost of the edges whose two ends share a label. `exhaustive`
tries every partition of up to ~10 nodes (Bell(10) = 115975 of them) and returns an optimum. (The greedy baseline
`gaec` lives in fastpose.baselines: tools/bench_assembly.py measures against it too.)
"""

from __future__ import annotations

import numpy as np


def objective(labels: np.ndarray, edges: np.ndarray, costs: np.ndarray) -> float:
    """Summed cost of the joined edges (both ends in one cluster)."""
    labels = np.asarray(labels)
    edges = np.asarray(edges).reshape(-1, 2)
    joined = labels[edges[:, 0]] == labels[edges[:, 1]]
    return float(np.asarray(costs, np.float64)[joined].sum())


def all_partitions(n: int) -> np.ndarray:
    """(Bell(n), n) int8: every partition of n nodes once, as restricted growth strings (first label 0, each next
    label at most one above the largest before it)."""
    rows = np.zeros((1, min(n, 1)), np.int8)  # (P, i) partitions of the first i nodes
    top = np.zeros(1, np.int8)  # (P,) largest label so far
    for _ in range(1, n):
        choices = top.astype(np.int64) + 2  # labels 0..top+1
        rep = np.repeat(np.arange(len(rows)), choices)  # (P',) parent partition of each child
        start = np.repeat(np.cumsum(choices) - choices, choices)
        label = (np.arange(len(rep)) - start).astype(np.int8)  # 0..top+1 per parent
        rows = np.concatenate([rows[rep], label[:, None]], axis=1)
        top = np.maximum(top[rep], label)
    return rows


def exhaustive(n: int, edges: np.ndarray, costs: np.ndarray) -> tuple[np.ndarray, float]:
    """(labels (n,), objective) of a minimum-cost partition, by trying all of them."""
    parts = all_partitions(n)  # (P, n)
    edges = np.asarray(edges).reshape(-1, 2)
    joined = parts[:, edges[:, 0]] == parts[:, edges[:, 1]]  # (P, E)
    values = joined.astype(np.float64) @ np.asarray(costs, np.float64)  # (P,)
    best = int(np.argmin(values))
    return parts[best].astype(np.int64), float(values[best])
