"""Shards written from a list of samples in one call: the set-up the data tests share."""

from __future__ import annotations

from pathlib import Path

from fastpose.shards import Sample, ShardWriter


def write_samples(root: Path, samples: list[Sample], num_joints: int, split: str = "train", **writer) -> Path:
    """Write `samples` (each (P, num_joints, 3) joints) into a shards folder `root`; `writer` goes to ShardWriter
    (joint_names, all_joints, skeleton, samples_per_shard). Returns root."""
    with ShardWriter(root, num_joints, **writer) as w:
        for s in samples:
            w.add(s, split=split)
        w.close()  # the context only aborts on an error; closing writes the manifest
    return root
