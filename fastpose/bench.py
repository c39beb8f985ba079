"""`fastpose bench`: images/s and ms per batch of each stage (data, targets, training step, end-to-end training).

Each part warms up, then times a few runs with device synchronisation (torch.cuda.synchronize on a GPU), and reports
the peak memory it reached (torch.cuda.max_memory_allocated on a GPU; the process's maximum resident set size on the
CPU, which only ever grows, so later parts report at least the earlier parts' peak). The data and targets parts call
the comparison functions of tools/bench_pipeline.py and tools/bench_targets.py (loaded by path: tools/ is not part of
the installed package, so these two parts need a source checkout).
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import json
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fastpose.atomic import write_atomic
from fastpose.device import pick_device
from fastpose.errors import UserError, out_file

PARTS = ("data", "targets", "step", "e2e")
REPO = Path(__file__).resolve().parents[1]


def parse_parts(part: str) -> list[str]:
    """'all' or one of PARTS -> the parts to run, in order."""
    if part == "all":
        return list(PARTS)
    if part not in PARTS:
        raise UserError(f"Unknown bench part '{part}'. Use one of: {', '.join(PARTS)}, all.")
    return [part]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], device: torch.device, warmup: int = 2, iters: int = 5) -> np.ndarray:
    """Seconds per call of `fn` over `iters` timed calls after `warmup` untimed ones, synchronising the device."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return np.asarray(times)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> dict:
    """Peak memory so far: GPU allocations since the last reset_peak, or the process's max RSS on the CPU."""
    if device.type == "cuda":
        return {"peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20, "memory_kind": "cuda_allocated"}
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    scale = 1 / 2**20 if sys.platform == "darwin" else 1 / 2**10  # macOS reports bytes
    return {"peak_memory_mb": rss_kb * scale, "memory_kind": "cpu_max_rss"}


def rate(times: np.ndarray, batch_size: int) -> dict:
    """images/s and ms per batch from per-batch seconds (median, robust to one slow run)."""
    med = float(np.median(times))
    return {"images_per_s": batch_size / med, "ms_per_batch": med * 1e3, "batch_size": batch_size,
            "runs": int(len(times))}


def load_tool(name: str):
    """Import tools/<name>.py by path (tools/ is not installed)."""
    path = REPO / "tools" / f"{name}.py"
    if not path.is_file():
        raise UserError(f"{path} is missing: the '{name}' benchmark lives in the repository's tools/ folder, which an "
                        f"installed fastpose does not include. Run `fastpose bench` from a source checkout.")
    spec = importlib.util.spec_from_file_location(f"fastpose_tools_{name}", path)
    module = importlib.util.module_from_spec(spec)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # the tool may import its sibling tools/ modules
    spec.loader.exec_module(module)
    return module


def environment(device: torch.device) -> dict:
    """The device's name and the versions of the libraries that decide the speed."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu: {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"
    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for module in ("triton", "nvidia.dali", "cv2"):
        try:
            versions[module.split(".")[-1]] = str(importlib.import_module(module).__version__)
        except Exception:  # not installed or broken: report it as absent rather than failing the benchmark
            versions[module.split(".")[-1]] = None
    return {"device": name, "versions": versions}


def load_config(config: str | Path | None, overrides: list[str] | None, data: str | Path | None,
                batch_size: int | None, device: str):
    """The config to benchmark: a file, or fastpose's defaults (resnet_50) when none is given."""
    from fastpose.config import load

    values = {"device": device}
    if batch_size is not None:
        values["batch_size"] = batch_size
    if data is not None:
        values["dataset"] = str(Path(data).resolve())
    if config is None and not any(o.split("=", 1)[0].strip() == "net_type" for o in overrides or []):
        values["net_type"] = "resnet_50"  # keyword values beat --set, so only when --set does not choose one
    return load(config, overrides, **values)


def _dataset(cfg, data) -> Path:
    """The shards folder of the data/e2e parts (a dataset.mat is converted once, as training does)."""
    if not cfg.dataset:
        raise UserError("The data and e2e benchmarks read real shards: pass --data SHARDS_DIR or a --config whose "
                        "`dataset:` is set (fastpose convert / fastpose synth make one).")
    from fastpose.train import prepare

    return prepare(cfg, quiet=True)[1]


def bench_data(cfg, device: torch.device, iters: int) -> dict:
    """DALI pipeline alone, beside the per-sample PIL/numpy loader doing the same work (tools/bench_pipeline.py)."""
    tool = load_tool("bench_pipeline")
    path = _dataset(cfg, cfg.dataset)
    res = tool.bench_data(cfg, path, cfg.split, batch_size=cfg.batch_size, iters=iters)
    out = {"images_per_s": res["dali_img_s"], "ms_per_batch": 1e3 * cfg.batch_size / res["dali_img_s"],
           "batch_size": cfg.batch_size, "runs": iters, "baseline": "PIL/numpy per-sample loader",
           "baseline_images_per_s": res["pil_img_s"], "ratio": res["ratio"], "dataset": str(path)}
    return out


# The training step the issue measures the targets against: ResNet-101 at 368 px (MPII), batch 16.
TARGETS_REFERENCE_STEP = ("resnet_101", 16, 368)


def bench_targets_part(device: torch.device, iters: int, reference_step: tuple[str, int, int] | None = None) -> dict:
    """make_targets: Triton (GPU) / torch twin / the reference's per-joint numpy loop (tools/bench_targets.py).

    images/s and ms per batch are those of the implementation training uses on this device (Triton on a GPU, the
    torch twin on the CPU) for the first case (MPII-sized batches); every case and implementation is under "cases".
    With `reference_step` = (net_type, batch, size) (by default TARGETS_REFERENCE_STEP on a GPU, none on the CPU,
    where a ResNet-101 step takes half a minute) it also times that training step on this device and reports the
    targets' share of it.
    """
    tool = load_tool("bench_targets")
    res = tool.bench_targets(str(device), None, repeats=max(iters, 3))
    cases = res["cases"]
    first = cases[next(iter(cases))]
    impl = "triton" if first.get("triton_ms") is not None else "torch_cpu"
    ms = first["triton_ms"] if impl == "triton" else first["torch_cpu_ms"]
    b = first["shape"]["B"]
    out = {"images_per_s": 1e3 * b / ms, "ms_per_batch": ms, "batch_size": b, "runs": max(iters, 3),
           "implementation": impl, "numpy_ms": first["numpy_ms"], "speedup_vs_numpy": first["numpy_ms"] / ms,
           "speedup_vs_twin": first["triton_vs_torch"], "torch_threads": res["threads"], "cases": cases}
    if reference_step is None and device.type == "cuda":
        reference_step = TARGETS_REFERENCE_STEP
    if reference_step is not None:
        from fastpose.config import load

        net, batch_size, size = reference_step
        cfg = load(None, net_type=net, batch_size=batch_size, num_joints=first["shape"]["K"],
                   location_refinement=True, device=device.type)
        step = bench_step(cfg, device, size, warmup=2, iters=max(iters, 3))
        # The MPII case has batch 16; scaled to the step's batch, as training builds targets for its own batch.
        targets_ms = ms * batch_size / b
        out["reference_step"] = {"net_type": net, "batch_size": batch_size, "size": size,
                                 "ms_per_batch": step["ms_per_batch"], "precision": step["precision"],
                                 "targets_share": targets_ms / step["ms_per_batch"]}
    return out


def synthetic_batch(cfg, batch_size: int, size: int, device: torch.device, persons: int = 1):
    """A pipeline Batch of random images (mean-subtracted 0..255, (B, 3, size, size)) and random present joints."""
    from fastpose.pipeline import Batch

    g = torch.Generator().manual_seed(cfg.seed)
    k = cfg.num_joints
    images = torch.rand(batch_size, 3, size, size, generator=g) * 255 - torch.tensor(cfg.mean_pixel)[:, None, None]
    joints = torch.rand(batch_size, persons, k, 3, generator=g) * (size - 1)
    joints[..., 2] = 1.0
    return Batch(images=images.to(device), joints=joints.to(device), scale=torch.ones(batch_size, device=device),
                 flipped=torch.zeros(batch_size, dtype=torch.bool, device=device),
                 valid_hw=torch.full((batch_size, 2), size, dtype=torch.int32, device=device),
                 index=torch.arange(batch_size, device=device),
                 offset=torch.zeros(batch_size, 2, device=device))


def bench_step(cfg, device: torch.device, size: int, warmup: int, iters: int) -> dict:
    """One training step (forward, targets, losses, backward, optimiser) on a synthetic batch, as train.py runs it."""
    from fastpose.model import build_model
    from fastpose.train import compute_losses, make_optimizer

    if not cfg.num_joints and cfg.dataset:
        from fastpose.train import prepare

        cfg = prepare(cfg, quiet=True)[0]
    if not cfg.num_joints:
        cfg.num_joints = 14  # no dataset to take the joint set from: MPII's 14 joints
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device)
    if cfg.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(cfg, model)
    batch = synthetic_batch(cfg, cfg.batch_size, size, device)
    images = batch.images.contiguous(memory_format=torch.channels_last) if cfg.channels_last else batch.images
    use_amp = device.type == "cuda" and cfg.precision in ("bf16", "fp16")
    amp = torch.bfloat16 if cfg.precision == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and cfg.precision == "fp16")
    model.train()

    def step():
        with torch.autocast(device.type, amp) if use_amp else contextlib.nullcontext():
            out = model(images)
        losses = compute_losses(cfg, out, batch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(losses["total"]).backward()
        scaler.step(optimizer)
        scaler.update()

    times = time_calls(step, device, warmup, iters)
    return {**rate(times, cfg.batch_size), "size": size, "net_type": cfg.net_type, "precision": cfg.precision
            if device.type == "cuda" else "fp32"}


def bench_e2e(cfg, device: torch.device, warmup: int, iters: int) -> dict:
    """A few iterations of fastpose.train.train on the real data (per-iteration rates from its metrics.jsonl)."""
    from fastpose.train import train

    _dataset(cfg, cfg.dataset)
    with tempfile.TemporaryDirectory(prefix="fastpose-bench-") as tmp:
        cfg.out_dir = tmp
        cfg.display_iters = 1  # one log line (and one device sync) per iteration: per-iteration rates
        cfg.save_iters = 10**9
        cfg.device = device.type
        total = warmup + iters
        cfg.multi_step = [[cfg.lr_at(1), max(total, 1)]]
        t0 = time.perf_counter()
        result = train(cfg, max_iters=total, quiet=True)
        wall = time.perf_counter() - t0
        lines = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").read_text().splitlines() if line]
    rates = np.array([r["images_per_s"] for r in lines if r["iteration"] > warmup])
    data_ms = np.array([r["data_time_s"] * 1e3 for r in lines if r["iteration"] > warmup])
    ips = float(np.median(rates)) if rates.size else result["images_per_s"]
    return {"images_per_s": ips, "ms_per_batch": 1e3 * cfg.batch_size / ips, "batch_size": cfg.batch_size,
            "runs": int(rates.size), "data_wait_ms": float(np.median(data_ms)) if data_ms.size else None,
            "wall_s_with_startup": wall, "iterations": int(result["iteration"])}


def run(parts: list[str], *, config=None, overrides=None, data=None, batch_size=None, size: int = 368,
        iters: int = 5, warmup: int = 2, device: str = "auto") -> dict:
    """Run the parts; returns {"device", "versions", "config", "results": {part: {...}}}."""
    if iters < 1 or warmup < 0:
        raise UserError(f"--iters {iters} --warmup {warmup}: need at least 1 timed run and no negative warm-up.")
    if "step" in parts and size < 32:
        raise UserError(f"--size {size}: the synthetic training-step images must be at least 32 pixels (smaller "
                        f"ones vanish in the ResNet's strided layers); e.g. --size 256.")
    dev = pick_device(device)
    cfg = load_config(config, overrides, data, batch_size, dev.type)
    report = {**environment(dev), "config": {"path": str(config) if config else None, "net_type": cfg.net_type,
                                             "batch_size": cfg.batch_size, "precision": cfg.precision},
              "results": {}}
    for part in parts:
        reset_peak(dev)
        if part == "data":
            res = bench_data(cfg, dev, iters)
        elif part == "targets":
            res = bench_targets_part(dev, iters)
        elif part == "step":
            res = bench_step(copy.deepcopy(cfg), dev, size, warmup, iters)
        elif part == "e2e":
            res = bench_e2e(copy.deepcopy(cfg), dev, warmup, iters)
        else:
            raise ValueError(f"part must be one of {', '.join(PARTS)}; got {part}")
        res.update(peak_memory_mb(dev))
        report["results"][part] = res
    return report


def table(report: dict):
    """A rich table: one row per part (and per targets implementation)."""
    from rich.table import Table

    t = Table(title=f"fastpose bench on {report['device']}  (torch {report['versions']['torch']})")
    for col in ("part", "images/s", "ms/batch", "batch", "peak MB", "notes"):
        t.add_column(col, justify="left" if col in ("part", "notes") else "right")
    for part, res in report["results"].items():
        notes = ""
        if part == "data":
            notes = f"{res['baseline']}: {res['baseline_images_per_s']:.1f} img/s, DALI x{res['ratio']:.2f}"
        elif part == "targets":
            notes = (f"{res['implementation']}, x{res['speedup_vs_numpy']:.3g} vs the numpy loop "
                     f"({res['numpy_ms']:.1f} ms)")
            if res.get("speedup_vs_twin") is not None:
                notes += f", x{res['speedup_vs_twin']:.3g} vs the torch twin on the CPU"
            else:
                notes += f", {res['torch_threads']} torch threads"
            ref = res.get("reference_step")
            if ref:
                notes += (f", {100 * ref['targets_share']:.2g}% of a {ref['net_type']} step (batch "
                          f"{ref['batch_size']}, {ref['size']} px: {ref['ms_per_batch']:.1f} ms)")
        elif part == "step":
            notes = f"{res['net_type']} {res['size']}x{res['size']} {res['precision']}"
        elif part == "e2e":
            wait = res.get("data_wait_ms")
            notes = f"{res['iterations']} iterations" + (f", data wait {wait:.1f} ms/it" if wait is not None else "")
        t.add_row(part, _fmt(res.get("images_per_s")), _fmt(res.get("ms_per_batch")), str(res.get("batch_size", "")),
                  _fmt(res.get("peak_memory_mb"), 0), notes)
    return t


def _fmt(v, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def write_json(report: dict, path: str | Path) -> None:
    """The report as JSON, written atomically."""
    write_atomic(out_file(path, "--json", "bench.json"), json.dumps(report, indent=1, default=str))
