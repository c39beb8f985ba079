"""Compiles every Triton kernel of fastpose.kernels for NVIDIA GPUs, on a machine without one.

Triton can lower a kernel to PTX and a cubin for a named target without a GPU (`triton.compile` with a GPUTarget),
and its wheel carries `ptxas`. This tool does that for each kernel and each variant its launcher can ask for
(constexpr flags, float32 / bfloat16 inputs), with the launcher's options, and reports what ptxas says: registers
per thread, spills, shared memory. It also checks what the twins' bit-for-bit equality needs: no fused
multiply-add and no approximate division in the target kernels. The kernels have not run on a GPU here; this shows
that they compile for one and what they cost in registers.

    python tools/compile_kernels.py                 # sm_80 (A100) and sm_90 (H100)
    python tools/compile_kernels.py --arch 90 --json kernels.json

Run it without TRITON_INTERPRET (the kernels must be JIT functions, not the interpreter's).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fastpose.kernels import _common, losses, pairwise, targets

# name: (module, kernel, signature, variants, launch options, exact): the signature maps each argument to its
# Triton type; a variant gives the constexprs and may retype pointers (bfloat16 logits); `exact` kernels must keep
# the twins' rounding (no FMA, correctly rounded division).
F32 = "*fp32"


def _specs() -> dict:
    tgt_sig = {"joints_ptr": F32, "thresh_ptr": F32, "ignore_ptr": F32, "scmap_ptr": F32, "weights_ptr": F32,
               "locref_ptr": F32, "mask_ptr": F32, "P": "i32", "K": "i32", "H": "i32", "W": "i32", "tiles": "i32",
               "stride": "fp32", "stdev": "fp32"}
    pw_sig = {"joints_ptr": F32, "thresh_ptr": F32, "mean_ptr": F32, "std_ptr": F32, "target_ptr": F32,
              "mask_ptr": F32, "P": "i32", "K": "i32", "H": "i32", "W": "i32", "tiles": "i32", "stride": "fp32"}
    fwd_sig = {"a_ptr": F32, "b_ptr": F32, "w_ptr": F32, "sum_ptr": F32, "cnt_ptr": "*i32", "N": "i32"}
    bwd_sig = {"a_ptr": F32, "b_ptr": F32, "w_ptr": F32, "scale_ptr": F32, "grad_ptr": F32, "N": "i32"}
    block = {"BLOCK": 256}
    # Losses: logits / pred (and so their gradient) in float32 or bfloat16; the part loss, Huber and squared locref.
    modes = [(dtype, {"LOCREF": locref, "HUBER": huber, "BLOCK": losses._BLOCK})
             for dtype in ("fp32", "bf16") for locref, huber in ((False, False), (True, True), (True, False))]
    flags = [{"HAS_IGNORE": i, "PRESENT_ONLY": po, **block} for i in (False, True) for po in (False, True)]
    return {
        "targets": (targets._targets_kernel, tgt_sig, [(f, {}) for f in flags], _common.LAUNCH_OPTIONS, True),
        "pairwise": (pairwise._pairwise_kernel, pw_sig, [(block, {})], _common.LAUNCH_OPTIONS, True),
        "loss_fwd": (losses._loss_fwd_kernel, fwd_sig, [(c, {"a_ptr": f"*{t}"}) for t, c in modes], {}, False),
        "loss_bwd": (losses._loss_bwd_kernel, bwd_sig,
                     [(c, {"a_ptr": f"*{t}", "grad_ptr": f"*{t}"}) for t, c in modes], {}, False),
    }


def _ptxas(ptx: str) -> dict:
    """Registers, spill bytes and shared memory of one PTX module, from the ptxas in Triton's wheel."""
    import triton.backends.nvidia as nvidia

    ptxas = Path(nvidia.__file__).parent / "bin" / "ptxas"
    arch = re.search(r"^\.target\s+(\S+)", ptx, re.M).group(1)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        done = subprocess.run([str(ptxas), "-v", f"-arch={arch}", str(src), "-o", str(Path(tmp) / "k.cubin")],
                              capture_output=True, text=True, check=True)
    info = done.stdout + done.stderr
    regs = re.search(r"Used (\d+) registers", info)
    spills = [int(x) for x in re.findall(r"(\d+) bytes spill (?:stores|loads)", info)]
    smem = re.search(r"(\d+) bytes smem", info)
    return {"arch": arch, "registers": int(regs.group(1)) if regs else None, "spill_bytes": sum(spills),
            "smem_bytes": int(smem.group(1)) if smem else 0}


def compile_all(archs: list[int], names: list[str] | None = None) -> list[dict]:
    """Compiles every kernel variant for every arch; one dict per compilation (raises if one fails to compile)."""
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise SystemExit("TRITON_INTERPRET=1 is set: the kernels are then interpreted, not compiled. Unset it.")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    rows = []
    for name, (kernel, signature, variants, options, exact) in _specs().items():
        if names and name not in names:
            continue
        for constexprs, retype in variants:
            sig = {**signature, **retype, **{c: "constexpr" for c in constexprs}}
            for arch in archs:
                start = time.perf_counter()
                compiled = triton.compile(ASTSource(fn=kernel, signature=sig, constexprs=constexprs),
                                          target=GPUTarget("cuda", arch, 32), options=dict(options))
                ptx = compiled.asm["ptx"]
                ops = set(re.findall(r"^\s*((?:fma|div|rcp)\.[\w.]+)", ptx, re.M))
                row = {"kernel": name, "variant": {**constexprs, **retype}, "sm": arch,
                       "seconds": time.perf_counter() - start, "num_warps": compiled.metadata.num_warps,
                       "fp_ops": sorted(ops), **_ptxas(ptx)}
                row["exact"] = not exact or not any(op.startswith(("fma", "div.full", "div.approx", "rcp.approx"))
                                                    for op in ops if ".f32" in op)
                rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, nargs="*", default=[80, 90], help="compute capabilities (80 A100, 90 H100)")
    parser.add_argument("--kernels", nargs="*", help="kernels to compile (default: all)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    rows = compile_all(args.arch, args.kernels)
    print(f"{'kernel':9} {'variant':52} {'sm':>3} {'regs':>5} {'spill B':>8} {'smem B':>7} {'exact':>6} {'s':>5}")
    for r in rows:
        variant = ",".join(f"{k}={v}" for k, v in r["variant"].items() if k != "BLOCK")
        print(f"{r['kernel']:9} {variant[:52]:52} {r['sm']:>3} {r['registers']:>5} {r['spill_bytes']:>8} "
              f"{r['smem_bytes']:>7} {'yes' if r['exact'] else 'NO':>6} {r['seconds']:5.1f}")
    if args.json is not None:
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(rows, indent=1) + "\n")
        os.replace(tmp, args.json)  # never a half-written file under the final name
    bad = [r for r in rows if not r["exact"] or r["spill_bytes"]]
    if bad:
        print(f"{len(bad)} compilation(s) spill registers or lose the twins' rounding", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
