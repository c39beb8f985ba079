"""`fastpose bench`: images/s and ms per batch of each stage (data, targets, training step, end-to-end training).

Each part warms up, then times a few runs with device synchronisation (torch.cuda.synchronize on a GPU), and reports
the peak memory it reached (torch.cuda.max_memory_allocated on a GPU; the process's maximum resident set size on the
CPU, which only ever grows, so later parts report at least the earlier parts' peak). The data and targets parts call
the comparison functions of tools/bench_pipeline.py and tools/bench_targets.py (loaded by path: tools/ is not part of
the installed package, so these two parts need a source checkout).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rich.table import Table

from fastpose import analyze, dataset, export
from fastpose.atomic import write_atomic
from fastpose.baselines import numpy_targets, pil_batches
from fastpose.config import load, validate
from fastpose.device import (
    autocast,
    cpu_flags,
    cpu_name,
    effective_precision,
    grad_scaler,
    memory_format,
    pick_device,
    resolve_compile,
    resolve_precision,
)
from fastpose.errors import UserError, out_file
from fastpose.kernels.targets import make_targets_torch, make_targets_triton
from fastpose.model import build_model
from fastpose.pipeline import Batch, build_loader
from fastpose.train import make_optimizer, train, train_step
from fastpose.video import DecodeCounts, probe

PARTS = ("data", "targets", "step", "e2e")
VIDEO_PARTS = ("analyze",)  # need --video; not part of `all`
EXPORT_PARTS = ("export",)  # inference engines; minutes of exporting and compiling, so not part of `all` either


def parse_parts(part: str) -> list[str]:
    """'all' or one of PARTS (or VIDEO_PARTS) -> the parts to run, in order."""
    if part == "all":
        return list(PARTS)
    if part not in PARTS + VIDEO_PARTS + EXPORT_PARTS:
        raise UserError(f"Unknown bench part '{part}'. Use one of: {', '.join(PARTS + VIDEO_PARTS + EXPORT_PARTS)}, "
                        f"all.")
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


def environment(device: torch.device) -> dict:
    """The device's name and the versions of the libraries that decide the speed."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu: {cpu_name()} ({torch.get_num_threads()} threads)"
    precision, why = resolve_precision("auto", device)
    flags = sorted(f for f in cpu_flags() if f in ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2", "fma"))
    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for module in ("triton", "nvidia.dali", "cv2"):
        try:
            versions[module.split(".")[-1]] = str(importlib.import_module(module).__version__)
        except Exception:  # not installed or broken: report it as absent rather than failing the benchmark
            versions[module.split(".")[-1]] = None
    return {"device": name, "versions": versions, "cpu_flags": flags, "precision_auto": precision,
            "precision_auto_why": why}


def load_config(config: str | Path | None, overrides: list[str] | None, data: str | Path | None,
                batch_size: int | None, device: str):
    """The config to benchmark: a file, or fastpose's defaults (resnet_50) when none is given."""
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
    return dataset.bind_joints(cfg, quiet=True)[1]


def _cpu_s(pids=()) -> float:
    """User + system CPU seconds so far of this process (all its threads) and of the live processes `pids` (Linux
    /proc; fields 14 and 15 of /proc/PID/stat)."""
    total = 0
    for pid in ("self", *pids):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _rate(batches, batch_size: int, iters: int, pids=()) -> tuple[float, float]:
    """(images/s, CPU ms per image of this process and the worker processes `pids`) over `iters` batches of an
    endless iterator, after one warm-up batch. The CPU time does not depend on how busy the machine is the way the
    wall clock does (a loader that uses two cores gains nothing on a machine whose cores are taken)."""
    it = iter(batches)
    next(it)
    t, cpu = time.perf_counter(), _cpu_s(pids)
    for _ in range(iters):
        next(it)
    n = iters * batch_size
    return n / (time.perf_counter() - t), 1e3 * (_cpu_s(pids) - cpu) / n


def _endless(loader):
    while True:
        yield from loader


def compare_loaders(cfg, dataset_dir, split: str = "train", batch_size: int = 8, iters: int = 30) -> dict:
    """images/s of the DALI loader and of the per-sample PIL loader (fastpose.baselines) on the same data, same work."""
    loader = build_loader(cfg, dataset_dir, split, train=True, batch_size=batch_size)
    try:
        dali, dali_cpu = _rate(_endless(loader), batch_size, iters, [p.pid for p in loader.workers])
        device = str(loader.device)
    finally:
        loader.close()
    pil, pil_cpu = _rate(pil_batches(cfg, dataset_dir, split, batch_size), batch_size, iters)
    return {"dataset": str(dataset_dir), "split": split, "batch_size": batch_size, "iters": iters, "device": device,
            "num_workers": cfg.num_workers, "num_threads": cfg.num_threads, "dali_img_s": dali, "pil_img_s": pil,
            "ratio": dali / pil, "dali_cpu_ms_per_img": dali_cpu, "pil_cpu_ms_per_img": pil_cpu}


# The second measurement of `fastpose bench data`: every training augmentation on every sample (probability 1), at a
# lab recipe's strength, on top of the config's own settings.
AUGMENTED = {"rotation_range": [-30.0, 30.0], "rotation_p": 1.0, "brightness_range": [0.75, 1.25],
             "contrast_range": [0.75, 1.25], "saturation_range": [0.75, 1.25], "hue_range": [-10.0, 10.0],
             "color_p": 1.0, "gaussian_blur_range": [0.5, 1.5], "gaussian_blur_p": 1.0, "motion_blur_range": [3.0, 7.0],
             "motion_blur_p": 1.0, "gaussian_noise_range": [2.0, 8.0], "gaussian_noise_p": 1.0}


def augmented(cfg):
    """A copy of `cfg` with every training augmentation on (AUGMENTED)."""
    out = dataclasses.replace(cfg, **copy.deepcopy(AUGMENTED))
    validate(out, "bench data (augmented)")
    return out


def bench_data(cfg, device: torch.device, iters: int) -> dict:
    """The DALI pipeline alone, beside the per-sample PIL/numpy loader doing the same work: the config as it is, and
    with every augmentation on (`augmented`)."""
    path = _dataset(cfg, cfg.dataset)
    res = compare_loaders(cfg, path, cfg.split, batch_size=cfg.batch_size, iters=iters)
    aug = compare_loaders(augmented(cfg), path, cfg.split, batch_size=cfg.batch_size, iters=iters)
    return {"images_per_s": res["dali_img_s"], "ms_per_batch": 1e3 * cfg.batch_size / res["dali_img_s"],
            "batch_size": cfg.batch_size, "runs": iters, "baseline": "PIL/numpy per-sample loader",
            "baseline_images_per_s": res["pil_img_s"], "ratio": res["ratio"], "dataset": str(path),
            "cpu_ms_per_image": res["dali_cpu_ms_per_img"], "baseline_cpu_ms_per_image": res["pil_cpu_ms_per_img"],
            "augmented": {"images_per_s": aug["dali_img_s"], "baseline_images_per_s": aug["pil_img_s"],
                          "ratio": aug["ratio"], "cpu_ms_per_image": aug["dali_cpu_ms_per_img"],
                          "baseline_cpu_ms_per_image": aug["pil_cpu_ms_per_img"], "settings": AUGMENTED}}


# make_targets cases, name: (B, P, K, H, W, dist_thresh): MPII at 368 px (pos_dist_thresh 17 x global_scale 0.8),
# COCO at 512 px.
TARGET_CASES = {
    "mpii": (16, 1, 14, 46, 46, 17 * 0.8),
    "coco": (16, 6, 17, 64, 64, 17 * 0.8),
}
TARGET_STRIDE = 8


def random_joints(b: int, p: int, k: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """(B, P, K, 3) joints uniform over a (h, w) grid's pixels, 90 % present."""
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(b, p, k, 2, generator=gen) * torch.tensor([w * TARGET_STRIDE, h * TARGET_STRIDE],
                                                               dtype=torch.float32)
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
    """ms per batch for each case: the numpy loop, the torch twin on the CPU, and Triton when `device` is CUDA.

    Returns {"device", "threads", "cases": {name: {"shape", "numpy_ms", "torch_cpu_ms", "triton_ms" (or None), their
    medians, "torch_speedup", "triton_speedup" (or None), "triton_vs_torch" (or None)}}}.
    """
    names = list(TARGET_CASES) if not cases else cases
    unknown = [n for n in names if n not in TARGET_CASES]
    if unknown:
        raise ValueError(f"unknown benchmark case(s) {unknown}; allowed: {sorted(TARGET_CASES)}")
    use_cuda = device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available; use --device cpu")
    out = {"device": device, "threads": torch.get_num_threads(), "cases": {}}
    for name in names:
        b, p, k, h, w, thresh = TARGET_CASES[name]
        joints = random_joints(b, p, k, h, w)
        numpy_ms, numpy_med = _times_ms(numpy_targets, (joints.numpy(), (h, w), TARGET_STRIDE, thresh),
                                        max(3, repeats // 5))
        torch_ms, torch_med = _times_ms(make_targets_torch, (joints, (h, w), TARGET_STRIDE, thresh), repeats)
        triton_ms = triton_med = None
        if use_cuda:
            args = (joints.to(device), (h, w), TARGET_STRIDE, thresh)
            triton_ms, triton_med = _times_ms(make_targets_triton, args, repeats, device)
        out["cases"][name] = {
            "shape": {"B": b, "P": p, "K": k, "H": h, "W": w, "dist_thresh": thresh},
            "numpy_ms": numpy_ms, "torch_cpu_ms": torch_ms, "triton_ms": triton_ms,
            "numpy_median_ms": numpy_med, "torch_cpu_median_ms": torch_med, "triton_median_ms": triton_med,
            "torch_speedup": numpy_ms / torch_ms, "torch_median_speedup": numpy_med / torch_med,
            "triton_speedup": None if triton_ms is None else numpy_ms / triton_ms,
            "triton_vs_torch": None if triton_ms is None else torch_ms / triton_ms,
        }
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
    res = bench_targets(str(device), None, repeats=max(iters, 3))
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
    """One training step (forward, targets, losses, backward, optimiser) on a synthetic batch: train.train_step."""
    if cfg.dataset:  # the joint set from the dataset's manifest, and a config that contradicts it is an error
        cfg = dataset.bind_joints(cfg, quiet=True)[0]
    if not cfg.num_joints:
        cfg.num_joints = 14  # no dataset to take the joint set from: MPII's 14 joints
    torch.manual_seed(cfg.seed)
    layout = memory_format(cfg.channels_last, device)
    model = build_model(cfg).to(device, memory_format=layout)
    optimizer = make_optimizer(cfg, model)
    scaler = grad_scaler(cfg.precision, device)
    batch = synthetic_batch(cfg, cfg.batch_size, size, device)
    batch = batch._replace(images=batch.images.contiguous(memory_format=layout))
    model.train()
    # A pairwise head's loss needs statistics (mean, std), each (K, K, 2); the step's cost does not depend on their
    # values, so the synthetic batch gets neutral ones instead of requiring a pairwise-stats file.
    k = cfg.num_joints
    stats = (torch.zeros(k, k, 2, device=device), torch.ones(k, k, 2, device=device)) if cfg.pairwise_predict else None
    compiled = resolve_compile(cfg.compile, device)[0]
    net = torch.compile(model) if compiled else model  # compiling happens in the warm-up calls (give it >= 1)
    times = time_calls(lambda: train_step(net, optimizer, scaler, cfg, batch, stats), device, warmup, iters)
    return {**rate(times, cfg.batch_size), "size": size, "net_type": cfg.net_type, "compiled": compiled,
            "precision": effective_precision(cfg.precision, device), "channels_last": layout == torch.channels_last}


def beside_fp32(bench_fn, cfg, device: torch.device, *args) -> dict:
    """bench_fn(cfg, device, *args) with the config's precision and, when that is not fp32, again in fp32 in the same
    run: {... the config's figures, "fp32": {...}, "speedup_vs_fp32"} (how much `precision: auto` gains here)."""
    res = bench_fn(copy.deepcopy(cfg), device, *args)
    if res["precision"] != "fp32":
        ref = copy.deepcopy(cfg)
        ref.precision = "fp32"
        res["fp32"] = bench_fn(ref, device, *args)
        res["speedup_vs_fp32"] = res["images_per_s"] / res["fp32"]["images_per_s"]
    return res


def bench_e2e(cfg, device: torch.device, warmup: int, iters: int) -> dict:
    """A few iterations of fastpose.train.train on the real data (per-iteration rates from its metrics.jsonl)."""
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
            "wall_s_with_startup": wall, "iterations": int(result["iteration"]),
            "precision": effective_precision(cfg.precision, device)}


def bench_analyze(cfg, device: torch.device, video, warmup: int, iters: int, frames: int = 64) -> dict:
    """`fastpose analyze` on the first `frames` frames of a video, with the config's network (random weights: speed
    does not depend on them): frames/s of decoding + scaling alone, of the model alone (on one decoded batch), and
    end to end (decode overlapped with the model), with how long each side waited for the other."""
    if video is None:
        raise UserError("bench analyze times a video: pass --video FILE (e.g. a 640x480 H.264 clip).")
    if not cfg.num_joints:
        cfg = dataset.bind_joints(cfg, quiet=True)[0] if cfg.dataset else dataclasses.replace(cfg, num_joints=14)
    cfg.joint_names = cfg.joint_names or [f"joint{k}" for k in range(cfg.num_joints)]
    info = probe(video)
    last = min(info.frames, frames)
    torch.manual_seed(cfg.seed)
    layout = memory_format(cfg.channels_last, device)
    model = build_model(cfg).to(device, memory_format=layout).eval()  # as checkpoint.load_model does
    b = cfg.batch_size
    if device.type == "cuda":
        def decode_only():
            for _ in analyze.dali_net_batches(info, 0, last, cfg, b, device, False):
                pass
    else:
        def decode_only():
            for _ in analyze.cpu_batches(info, 0, last, cfg, b, DecodeCounts(), False):
                pass
    decode_s = time_calls(decode_only, device, warmup=1, iters=max(1, iters // 2))
    numbers, batch, valid_hw, ratio, _ = next(iter(analyze.cpu_batches(info, 0, b, cfg, b, DecodeCounts(), False)))
    batch = batch.to(device).contiguous(memory_format=layout)

    def forward():
        with torch.no_grad(), autocast(cfg.precision, device):
            model(batch)

    model_s = time_calls(forward, device, warmup, iters)
    ends = []
    with tempfile.TemporaryDirectory(prefix="fastpose-bench-") as tmp:
        for i in range(max(1, iters // 2)):
            meta = analyze.analyze_video(model, cfg, info, Path(tmp) / f"run{i}", device,
                                         analyze.Options(batch_size=b, frames=f"0:{last}", progress=False))
            ends.append(meta)
    fps = [m["fps_achieved"] for m in ends]
    model_fps = len(numbers) / float(np.median(model_s))
    end_fps = float(np.median(fps))
    return {"images_per_s": end_fps, "ms_per_batch": 1e3 * b / end_fps, "batch_size": b, "runs": len(ends),
            "video": str(video), "frames": last, "frame_size": [info.width, info.height], "codec": info.codec,
            "network_input": [int(valid_hw[0, 1]), int(valid_hw[0, 0])], "net_type": cfg.net_type,
            "precision": effective_precision(cfg.precision, device), "decoder": ends[-1]["decoder"],
            "decode_fps": last / float(np.median(decode_s)), "model_fps": model_fps, "end_to_end_fps": end_fps,
            "end_to_end_fps_runs": fps, "end_to_end_over_model": end_fps / model_fps,
            "model_waited_for_decode_s": [m["model_waited_for_decode_s"] for m in ends],
            "decode_waited_for_model_s": [m["decode_waited_for_model_s"] for m in ends],
            "torch_threads": torch.get_num_threads()}


def bench_export(cfg, device: torch.device, size: int, warmup: int, iters: int) -> dict:
    """The exported inference graph (`fastpose.export.InferenceGraph`: resize, network, decoding) on one batch of
    batch_size uint8 size x size images, run by torch eager in fp32 NCHW (what the exported graph computes), torch
    eager in the precision and layout `fastpose predict` runs (`precision` / `channels_last` of the config as
    `fastpose.device` resolves them: bf16 autocast + channels_last on a bf16-capable CPU), torch.compile, the
    torch.export program and ONNX Runtime (its CUDA provider on a GPU when installed; as many intra-op threads as
    torch has): images/s of each, and each one's ratio over torch eager fp32. An engine that fails reports its error
    instead of a figure (torch.compile needs a C++ compiler on the CPU)."""
    if not cfg.num_joints:
        cfg = dataset.bind_joints(cfg, quiet=True)[0] if cfg.dataset else dataclasses.replace(cfg, num_joints=14)
    torch.manual_seed(cfg.seed)
    graph = export.InferenceGraph(build_model(cfg).eval(), cfg).eval()
    b = cfg.batch_size
    images = torch.randint(0, 256, (b, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    meta = export.metadata(cfg, graph, "onnx")
    engines: dict[str, dict] = {}

    def timed(name: str, make: Callable[[], Callable[[], object]]) -> None:
        t0 = time.perf_counter()
        try:
            fn = make()
            setup = time.perf_counter() - t0
            times = time_calls(fn, device, warmup, iters)
        except Exception as e:  # an engine that cannot run this model here is a finding, not a failed benchmark
            engines[name] = {"error": f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e) else ''}"}
            return
        engines[name] = {**rate(times, b), "setup_s": setup, "seconds": [float(t) for t in times]}

    gpu_graph = copy.deepcopy(graph).to(device) if device.type == "cuda" else graph
    on_device = images.to(device)

    def no_grad(module):
        def call():
            with torch.no_grad():
                return module(on_device)
        return call

    def eager():
        return no_grad(gpu_graph)

    layout = memory_format(cfg.channels_last, device)

    def eager_as_predict():
        module = copy.deepcopy(gpu_graph).to(memory_format=layout)  # as load_model puts it

        def call():
            with torch.no_grad(), autocast(cfg.precision, device):
                return module(on_device)
        return call

    def compiled():
        return no_grad(torch.compile(gpu_graph))

    def exported():
        program = torch.export.export(graph, (export.example_input(None),),
                                      dynamic_shapes=export.dynamic_shapes(None)).module().to(device)
        return no_grad(program)

    def onnxruntime():
        data = export.to_onnx(graph, export.example_input(None), None, export.DEFAULT_OPSET, meta)
        with tempfile.TemporaryDirectory(prefix="fastpose-bench-") as tmp:
            path = Path(tmp) / "model.onnx"
            write_atomic(path, data)
            runner = export.OnnxModel(path, device)
        host = images.numpy()
        return lambda: runner.run(host)

    for name, make in (("torch_eager", eager), ("torch_eager_as_predict", eager_as_predict),
                       ("torch_compile", compiled), ("torch_export", exported), ("onnxruntime", onnxruntime)):
        timed(name, make)
    base = engines["torch_eager"].get("images_per_s")
    for res in engines.values():
        if base and "images_per_s" in res:
            res["over_eager"] = res["images_per_s"] / base
    best = max((n for n in engines if "images_per_s" in engines[n]), key=lambda n: engines[n]["images_per_s"],
               default=None)
    return {"images_per_s": engines[best]["images_per_s"] if best else None,
            "ms_per_batch": engines[best]["ms_per_batch"] if best else None, "batch_size": b, "size": size,
            "net_type": cfg.net_type, "fastest": best, "engines": engines, "torch_threads": torch.get_num_threads(),
            "as_predict": {"precision": effective_precision(cfg.precision, device),
                           "channels_last": layout == torch.channels_last},
            "onnxruntime": ort_version()}


def ort_version() -> str:
    return f"{export.ort.__version__} ({', '.join(export.ort.get_available_providers())})"


def run(parts: list[str], *, config=None, overrides=None, data=None, batch_size=None, size: int = 368,
        iters: int = 5, warmup: int = 2, device: str = "auto", video=None) -> dict:
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
            res = beside_fp32(bench_step, cfg, dev, size, warmup, iters)
        elif part == "e2e":
            res = beside_fp32(bench_e2e, cfg, dev, warmup, iters)
        elif part == "analyze":
            res = bench_analyze(copy.deepcopy(cfg), dev, video, warmup, iters)
        elif part == "export":
            res = bench_export(copy.deepcopy(cfg), dev, size, warmup, iters)
        else:
            raise ValueError(f"part must be one of {', '.join(PARTS)}; got {part}")
        res.update(peak_memory_mb(dev))
        report["results"][part] = res
    return report


def table(report: dict):
    """A rich table: one row per part (and per targets implementation)."""
    t = Table(title=f"fastpose bench on {report['device']}  (torch {report['versions']['torch']})")
    for col in ("part", "images/s", "ms/batch", "batch", "peak MB", "notes"):
        t.add_column(col, justify="left" if col in ("part", "notes") else "right")
    for part, res in report["results"].items():
        notes = ""
        if part == "data":
            notes = f"{res['baseline']}: {res['baseline_images_per_s']:.1f} img/s, DALI x{res['ratio']:.2f}"
            if "augmented" in res:
                a = res["augmented"]
                notes += (f"; every augmentation on: DALI {a['images_per_s']:.1f} img/s, baseline "
                          f"{a['baseline_images_per_s']:.1f} img/s, x{a['ratio']:.2f}")
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
            if "fp32" in res:
                notes += f", x{res['speedup_vs_fp32']:.2f} vs fp32 ({res['fp32']['images_per_s']:.2f} img/s)"
        elif part == "e2e":
            wait = res.get("data_wait_ms")
            notes = f"{res['iterations']} iterations" + (f", data wait {wait:.1f} ms/it" if wait is not None else "")
            if "fp32" in res:
                notes += (f", {res['precision']} x{res['speedup_vs_fp32']:.2f} vs fp32 "
                          f"({res['fp32']['images_per_s']:.2f} img/s)")
        elif part == "analyze":
            notes = (f"frames/s: decode {res['decode_fps']:.1f}, model {res['model_fps']:.1f}, end to end "
                     f"{res['end_to_end_fps']:.1f} (x{res['end_to_end_over_model']:.2f} the model; {res['net_type']} "
                     f"{res['precision']}, {res['frame_size'][0]}x{res['frame_size'][1]} {res['codec']}, "
                     f"{res['decoder']})")
        elif part == "export":
            cl = " channels_last" if res["as_predict"]["channels_last"] else ""
            notes = (f"{res['net_type']} {res['size']}x{res['size']}, {res['torch_threads']} threads, fastest "
                     f"{res['fastest']}; as predict = {res['as_predict']['precision']}{cl}; ") + "; ".join(
                f"{n} " + (f"{r['images_per_s']:.2f} img/s (x{r.get('over_eager', float('nan')):.2f})"
                           if "images_per_s" in r else f"failed ({r['error'][:60]})")
                for n, r in res["engines"].items())
        t.add_row(part, _fmt(res.get("images_per_s")), _fmt(res.get("ms_per_batch")), str(res.get("batch_size", "")),
                  _fmt(res.get("peak_memory_mb"), 0), notes)
    return t


def _fmt(v, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def write_json(report: dict, path: str | Path) -> None:
    """The report as JSON, written atomically."""
    write_atomic(out_file(path, "--json", "bench.json"), json.dumps(report, indent=1, default=str))
