"""Every Triton kernel compiles for the A100 (sm_80) and H100 (sm_90) without a GPU (tools/compile_kernels.py), with
no register spills, and the target kernels keep the twins' rounding (no fused multiply-add, no approximate
division), so a GPU gives the twins' bits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import importlib.util, json
spec = importlib.util.spec_from_file_location("compile_kernels", "tools/compile_kernels.py")
compile_kernels = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compile_kernels)
from fastpose.kernels import _common

rows = compile_kernels.compile_all([80, 90])
_common.LAUNCH_OPTIONS.clear()  # the compiler's defaults: fused multiply-adds, which the check must catch
fused = compile_kernels.compile_all([90], ["targets"])
print(json.dumps({"rows": rows, "fused": fused}))
"""


@pytest.mark.slow
def test_kernels_compile_for_a100_and_h100_without_spills_and_keep_the_twins_rounding(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compile, do not interpret
    env["TRITON_CACHE_DIR"] = str(tmp_path / "cache")
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    rows = out["rows"]
    # 4 target variants, 1 pairwise, 6 forward and 6 backward loss variants, each for sm_80 and sm_90.
    counts = {name: sum(r["kernel"] == name for r in rows) for name in ("targets", "pairwise", "loss_fwd", "loss_bwd")}
    assert counts == {"targets": 8, "pairwise": 2, "loss_fwd": 12, "loss_bwd": 12}
    for r in rows:
        assert r["arch"] == ("sm_80" if r["sm"] == 80 else "sm_90a"), r
        assert 0 < r["registers"] <= 128 and r["spill_bytes"] == 0, r
        assert r["exact"], r
    assert not any(op.startswith(("fma", "div.full")) for r in rows if r["kernel"] == "targets" for op in r["fp_ops"])
    # Compiled with the defaults, the targets kernel contracts dx^2 + dy^2 into an FMA: the check sees it.
    assert out["fused"] and not any(r["exact"] for r in out["fused"])
