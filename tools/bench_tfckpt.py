"""Time fastpose.tfckpt on whole checkpoints, and check every tensor against what TensorFlow held.

    .venv/bin/python tools/bench_tfckpt.py /tmp/tf_fullsize/resnet101_full/model.ckpt \
        /tmp/tf_fullsize/resnet101_full/model_v1.ckpt --tensors /tmp/tf_fullsize/resnet101_full/tensors.npz --repeat 2

For each checkpoint: the number of tensors, their bytes, the time to open it (parse the table, map the files) and to
read every tensor (checksums included), per repeat; with --tensors, whether every tensor equals TF's bit for bit.
The full-size checkpoints come from `tools/tf_fixtures.py --full-size DIR` (TensorFlow, not committed).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

from fastpose.tfckpt import open_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--tensors", type=Path, help="tensors.npz of tools/tf_fixtures.py: TF's values to compare")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    expected = dict(np.load(args.tensors)) if args.tensors else None
    cpuinfo = Path("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in (cpuinfo.read_text().splitlines() if cpuinfo.is_file()
                  else []) if line.startswith("model name")), platform.machine())
    print(f"machine: {model}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    for path in args.checkpoints:
        for r in range(args.repeat):
            t0 = time.perf_counter()
            ckpt = open_checkpoint(path)
            t1 = time.perf_counter()
            values = {name: ckpt.read(name) for name in ckpt.names()}
            t2 = time.perf_counter()
            size = sum(v.nbytes for v in values.values())
            line = (f"{ckpt.version} {path.name}: {len(values)} tensors, {size / 2**20:.1f} MiB, open {t1 - t0:.3f} s, "
                    f"read all {t2 - t1:.3f} s ({size / 2**20 / (t2 - t1):.0f} MiB/s)")
            if expected is not None and r == 0:
                same = sorted(values) == sorted(expected) and all(
                    v.dtype == expected[k].dtype and v.shape == expected[k].shape
                    and v.tobytes() == expected[k].tobytes() for k, v in values.items())
                line += f", bit for bit equal to TF's {len(expected)} tensors: {same}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
