"""The training loop: shards -> DALI batches -> targets (Triton) -> ResNet -> losses (Triton) -> SGD step.

`train(cfg)` is the loop in one screen: `setup` makes everything it works with (a `Run`), `train_step` is one step
(`fastpose bench` times the same function), `log_interval` and `save_interval` are the periodic blocks. Per iteration
(1-based, as the reference's schedule):

    batch   = next(loader)                                   # images (B, 3, H, W), joints (B, P, K, 3), scale (B,)
    targets = make_targets(batch.joints, grid, stride, pos_dist_thresh * scale, locref_stdev, ignore=padding)
    out     = model(batch.images)                            # part (B, K, h, w), locref (B, 2K, h, w), ...
    loss    = part + intermediate + locref_loss_weight * locref (+ pairwise_loss_weight * pairwise, with the
              pairwise statistics of cfg.pairwise_stats_fn; see fastpose/pairwise.py)
    loss.backward(); optimizer.step()

Learning rate: `multi_step` [[lr_k, end_k], ...] gives lr_k for iterations (end_{k-1}, end_k]; max_iter = the last end
(SGD with momentum; `optimizer: adam` follows `adam_schedule`: the constant adam_lr as the reference, multi_step,
or a cosine decay from adam_lr). Logging every display_iters: the line `iteration: N loss: X lr: Y` plus images/s and
data time, TensorBoard scalars, metrics.jsonl; prediction images at every snapshot. The step itself never waits for
the device: losses are summed on the device and read at log intervals only.

Snapshots every save_iters and at the end (fastpose/checkpoint.py) hold the model, optimiser, iteration, RNG states,
data position and resolved config; `resume=True` continues from the newest one exactly (the data order and every
augmentation are functions of (seed, epoch, sample), see fastpose/pipeline.py). SIGINT/SIGTERM write a snapshot and
exit cleanly. Under torchrun, each rank reads its own part of every epoch and DistributedDataParallel averages the
gradients; rank 0 logs and saves.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from fastpose import checkpoint, dataset
from fastpose.config import Config, symmetric_permutation
from fastpose.decode import decode, valid_cells
from fastpose.device import (
    autocast,
    grad_scaler,
    pick_device,
    resolve_channels_last,
    resolve_compile,
    resolve_precision,
)
from fastpose.draw import draw_pose
from fastpose.errors import UserError, out_folder
from fastpose.kernels.losses import locref_loss, part_loss
from fastpose.kernels.pairwise import make_pairwise_targets
from fastpose.kernels.targets import make_targets
from fastpose.model import build_model
from fastpose.pairwise import sample_stats, stats_for
from fastpose.pipeline import Loader, build_loader
from fastpose.tfweights import init_weights, resolve_layout

console = Console(stderr=True)


def padding_ignore(valid_hw: torch.Tensor, grid: tuple[int, int], stride: int) -> torch.Tensor:
    """(B, 1, H, W) float mask: 1 on cells whose centre lies in the batch padding (their score loss is ignored).
    The complement of decode.valid_cells, so decoding never picks a cell training never saw."""
    return (~valid_cells(valid_hw, grid, stride)).to(torch.float32)[:, None]  # (B, 1, H, W)


def _on_grid(mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, 1, h', w') -> (B, 1, H, W): cropped or zero-padded at the bottom/right (cells beyond it are padding)."""
    h, w = grid
    mask = mask[..., :h, :w]
    return torch.nn.functional.pad(mask, (0, w - mask.shape[-1], 0, h - mask.shape[-2]))


def compute_losses(cfg: Config, out: dict, batch, pairwise_stats=None) -> dict[str, torch.Tensor]:
    """The reference's losses for one batch; 'total' = part + intermediate + locref_loss_weight * locref
    (+ pairwise_loss_weight * pairwise).

    The score loss ignores the batch padding and, where the batch has one (COCO), its ignore mask (crowds and persons
    without keypoints). pairwise_stats = (mean, std) (K, K, 2) in dataset pixels (fastpose.pairwise.load_stats) is
    needed when the model has the pairwise head; each sample's scale and mirroring are applied here.
    """
    part_logits = out["part"].float()  # (B, K, h, w)
    grid = tuple(part_logits.shape[-2:])
    ignore = padding_ignore(batch.valid_hw, grid, cfg.stride)  # (B, 1, h, w)
    if getattr(batch, "ignore", None) is not None:
        ignore = torch.maximum(ignore, _on_grid(batch.ignore.to(ignore.device, torch.float32), grid))
    t = make_targets(batch.joints, grid, cfg.stride, cfg.pos_dist_thresh * batch.scale, cfg.locref_stdev,
                     ignore=ignore, present_only=cfg.weigh_only_present_joints)
    losses = {"part": part_loss(part_logits, t.scmap, t.scmap_weights)}
    total = losses["part"]
    if out.get("intermediate") is not None:
        losses["intermediate"] = part_loss(out["intermediate"].float(), t.scmap, t.scmap_weights)
        total = total + losses["intermediate"]
    if out.get("locref") is not None:
        losses["locref"] = locref_loss(out["locref"].float(), t.locref, t.locref_mask, huber=cfg.locref_huber_loss)
        total = total + cfg.locref_loss_weight * losses["locref"]
    if out.get("pairwise") is not None:
        if pairwise_stats is None:
            raise ValueError("the model has a pairwise head: compute_losses needs pairwise_stats = (mean, std)")
        perm = symmetric_permutation(part_logits.shape[1], cfg.all_joints)  # the pipeline's mirroring
        mean, std = sample_stats(pairwise_stats[0], pairwise_stats[1], batch.scale, batch.flipped, perm)
        pw = make_pairwise_targets(batch.joints, grid, mean, std, cfg.stride, cfg.pos_dist_thresh * batch.scale)
        losses["pairwise"] = locref_loss(out["pairwise"].float(), pw.target, pw.mask, huber=cfg.pairwise_huber_loss)
        total = total + cfg.pairwise_loss_weight * losses["pairwise"]
    losses["total"] = total
    return losses


def learning_rate(cfg: Config, it: int) -> float:
    """The rate of 1-based iteration `it`: the multi_step schedule for SGD; for Adam, by adam_schedule, the constant
    adam_lr (the reference), the multi_step schedule (DeepLabCut 2.x) or adam_lr * (1 + cos(pi (it - 1) / max_iter)) / 2
    (adam_lr at iteration 1, near 0 at the last one). A function of `it` alone, so a resumed run gets the same rates."""
    if cfg.optimizer == "sgd" or cfg.adam_schedule == "multi_step":
        return cfg.lr_at(it)
    if cfg.adam_schedule == "constant":
        return cfg.adam_lr
    if cfg.adam_schedule == "cosine":
        return cfg.adam_lr * 0.5 * (1.0 + math.cos(math.pi * (it - 1) / cfg.max_iter()))
    raise ValueError(f"adam_schedule must be one of constant, multi_step, cosine; got {cfg.adam_schedule}")


def train_step(net: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, cfg: Config,
               batch, pairwise_stats=None) -> tuple[dict, dict[str, torch.Tensor]]:
    """One optimisation step on a batch: forward (under the config's autocast), losses, backward, update. Returns
    (the heads' outputs, the losses on the device); nothing here waits for the device."""
    with autocast(cfg.precision, batch.images.device):
        out = net(batch.images)
    losses = compute_losses(cfg, out, batch, pairwise_stats)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(losses["total"]).backward()
    scaler.step(optimizer)
    scaler.update()
    return out, losses


def distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) for a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    if world > 1:
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
    return 0, 1, 0


def make_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        decay = cfg.weight_decay if cfg.regularize else 0.0  # the reference declared L2 decay but never applied it
        return torch.optim.SGD(params, lr=cfg.lr_at(1), momentum=cfg.momentum, weight_decay=decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.adam_lr)
    raise ValueError(f"optimizer must be one of sgd, adam; got {cfg.optimizer}")


class _StopSignal:
    """SIGINT/SIGTERM set a flag; the loop writes a snapshot at the end of the current step and exits cleanly."""

    def __init__(self):
        self.received: int | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. called from a test thread): no handler
                pass
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


@dataclass
class Run:
    """What `train` works with: made by `setup`, closed by `Run.close`."""

    cfg: Config
    device: torch.device
    rank: int
    world: int
    model: torch.nn.Module  # the bare PoseNet (snapshots save its weights)
    net: torch.nn.Module  # what the step calls: the model, wrapped in DDP and/or torch.compile
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loader: Loader
    pairwise_stats: tuple[torch.Tensor, torch.Tensor] | None
    start_iter: int
    max_iter: int
    snapshot: Path | None  # the newest snapshot written or resumed from
    quiet: bool
    tb: object = None  # TensorBoard SummaryWriter (rank 0)
    metrics_file: object = None  # metrics.jsonl (rank 0)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def out_dir(self) -> Path:
        return Path(self.cfg.out_dir)

    def close(self) -> None:
        self.loader.close()
        if self.tb is not None:
            self.tb.close()
        if self.metrics_file is not None:
            self.metrics_file.close()


def setup(cfg: Config, *, resume: bool, max_iters: int | None, quiet: bool) -> Run:
    """Everything before the first step: processes, joint set, device, model (ImageNet init or the snapshot to resume),
    optimiser, data loader positioned where the snapshot stopped, logs."""
    if max_iters is not None and max_iters < 1:
        raise UserError(f"--max-iters {max_iters}: must be at least 1 (or left out to train the whole multi_step "
                        f"schedule).")
    rank, world, local_rank = distributed()
    quiet = quiet or rank != 0
    if world > 1 and rank != 0:
        dist.barrier()  # rank 0 first: a `dataset: x.mat` is converted into its cache once, not by every rank
    cfg, data_dir = dataset.bind_joints(cfg, quiet=quiet)
    if world > 1 and rank == 0:
        dist.barrier()
    device = pick_device(cfg.device, local_rank if world > 1 else None)
    out_dir = Path(cfg.out_dir)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    newest = checkpoint.latest_snapshot(out_dir, cfg.snapshot_prefix)
    if resume and newest is None:
        raise UserError(f"--resume: no {cfg.snapshot_prefix}-*.pt in {out_dir}. Start without --resume, or point "
                        f"out_dir at the run to continue.")
    if not resume and newest is not None:
        raise UserError(f"{out_dir} already holds snapshots (the newest is {newest.name}). Pass --resume to "
                        f"continue that run, or set another out_dir (--set out_dir=...) to start a new one; a fresh "
                        f"start there would mix two runs' snapshots.")
    snapshot = newest if resume else None
    ckpt = None
    if snapshot is not None:
        ckpt = checkpoint.load_snapshot(snapshot, map_location=device)
        cfg = checkpoint.bind_snapshot_network(cfg, ckpt, snapshot)  # the layout the run was started in
    else:  # auto: slim for TF init_weights; saved resolved in config.yaml and every snapshot
        cfg = dataclasses.replace(cfg, backbone_layout=resolve_layout(cfg))
    model = build_model(cfg)
    if snapshot is None and cfg.init_weights:
        line = init_weights(model, cfg)  # torchvision .pth: backbone; TF: backbone (+ heads of a pose model)
        if not quiet:
            console.print(line, highlight=False)
    model.to(device)
    channels_last = resolve_channels_last(cfg.channels_last, device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    precision, why = resolve_precision(cfg.precision, device)
    if not quiet:
        console.print(f"{device}: precision {precision} ({why}), {'channels_last' if channels_last else 'NCHW'}",
                      highlight=False)
    optimizer = make_optimizer(cfg, model)
    start_iter, position = 0, {"epoch": 0, "batch": 0}
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        checkpoint.restore_rng(ckpt["rng"])
        start_iter, position = int(ckpt["iteration"]), dict(ckpt["data_position"])
        if not quiet:
            console.print(f"resuming from {snapshot} at iteration {start_iter}")
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda"
                                                        else None)
    compiled, why = resolve_compile(cfg.compile, device)
    if compiled:
        # A graph Inductor cannot compile (or a missing C++ compiler) runs eagerly with one warning, not a crash.
        torch._dynamo.config.suppress_errors = True
        net = torch.compile(net)
    if not quiet and compiled:
        console.print(f"torch.compile: on ({why}); the first steps compile", highlight=False)
    pairwise_stats = None
    if cfg.pairwise_predict:
        pairwise_stats = tuple(torch.as_tensor(a, dtype=torch.float32, device=device) for a in stats_for(cfg))
    loader = build_loader(cfg, data_dir, cfg.split, train=True, shard_id=rank, num_shards=world, device=device,
                          start_epoch=position["epoch"], start_batch=position["batch"],
                          channels_last=channels_last)
    run = Run(cfg, device, rank, world, model, net, optimizer, grad_scaler(cfg.precision, device), loader,
              pairwise_stats, start_iter, cfg.max_iter() if max_iters is None else min(cfg.max_iter(), max_iters),
              snapshot, quiet)
    if run.main:
        out_folder(out_dir, "out_dir")
        cfg.save(out_dir / "config.yaml")
        run.tb = _tensorboard(out_dir / cfg.log_dir)
        run.metrics_file = open(out_dir / "metrics.jsonl", "a")  # noqa: SIM115 (closed by Run.close)
    return run


@dataclass
class Window:
    """Losses and timings since the last log line. The sums stay on the device: no per-step host sync."""

    device: torch.device
    sums: dict = field(default_factory=dict)
    iters: int = 0
    data_time: float = 0.0
    start: float = field(default_factory=time.perf_counter)
    first_bad: torch.Tensor | None = None  # () long: the first step with a non-finite loss, or -1

    def add(self, losses: dict[str, torch.Tensor], it: int) -> None:
        for name, value in losses.items():
            self.sums[name] = self.sums.get(name, 0.0) + value.detach()
        if self.first_bad is None:
            self.first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        bad_now = ~torch.isfinite(losses["total"].detach()) & (self.first_bad < 0)
        self.first_bad = torch.where(bad_now, torch.full_like(self.first_bad, it), self.first_bad)
        self.iters += 1


def log_interval(run: Run, window: Window, it: int, lr: float) -> tuple[float, float]:
    """The log line of a finished window: (mean total loss, images/s). The one place the loop waits for the device
    (.item()); a non-finite loss since the last line stops training here, before a snapshot can save it."""
    bad = int(window.first_bad.item()) if window.first_bad is not None else -1  # host sync (log interval)
    if bad >= 0:
        raise UserError(_non_finite_message(bad, window.sums, run.snapshot))
    elapsed = time.perf_counter() - window.start
    images_per_s = window.iters * run.cfg.batch_size * run.world / max(elapsed, 1e-9)
    means = {k: float(v.item()) / window.iters for k, v in window.sums.items()}  # host sync (log interval)
    if run.main:
        _log(it, lr, means, images_per_s, window.data_time / window.iters, run.tb, run.metrics_file, run.quiet)
    return means["total"], images_per_s


def save_interval(run: Run, it: int, batch, out: dict) -> None:
    """A snapshot (rank 0) with the data position, and the predictions on this batch for TensorBoard."""
    position = {"epoch": run.loader.epoch, "batch": run.loader.batch}
    extra = {"world_size": run.world, "rank_param_spread": _rank_spread(run.model) if run.world > 1 else 0.0}
    if run.main:
        run.snapshot = checkpoint.save_snapshot(run.out_dir, it, model=run.model, optimizer=run.optimizer, cfg=run.cfg,
                                                data_position=position, extra=extra, prefix=run.cfg.snapshot_prefix,
                                                max_to_keep=run.cfg.max_to_keep)
        _log_images(run.tb, run.cfg, run.model, batch, out, it)


def train(cfg: Config, *, resume: bool = False, max_iters: int | None = None, quiet: bool = False) -> dict:
    """Train as `cfg` says. Returns {"iteration", "out_dir", "snapshot", "last_loss", "images_per_s", "config"}.

    max_iters stops early (still writing a snapshot) without changing the schedule, e.g. for benchmarks and tests.
    """
    run = setup(cfg, resume=resume, max_iters=max_iters, quiet=quiet)
    cfg, it = run.cfg, run.start_iter
    window, last_loss, images_per_s = Window(run.device), float("nan"), 0.0
    run.net.train()
    progress = Progress(TextColumn("[bold]train[/bold]"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        TextColumn("{task.fields[info]}"), console=console, disable=run.quiet, transient=True)
    try:
        with _StopSignal() as stop, progress:
            task = progress.add_task("train", total=run.max_iter, completed=it, info="")
            stopping = False  # all ranks stop at the same iteration (see _agree_to_stop)
            while it < run.max_iter and not stopping:
                fetch = time.perf_counter()
                for batch in run.loader:
                    window.data_time += time.perf_counter() - fetch
                    it += 1
                    lr = learning_rate(cfg, it)
                    for group in run.optimizer.param_groups:
                        group["lr"] = lr
                    out, losses = train_step(run.net, run.optimizer, run.scaler, cfg, batch, run.pairwise_stats)
                    window.add(losses, it)
                    progress.update(task, completed=it)

                    stopping = _agree_to_stop(stop.received is not None, it, cfg.display_iters, run.world, run.device)
                    last_step = it >= run.max_iter or stopping
                    if it % cfg.display_iters == 0 or last_step:
                        last_loss, images_per_s = log_interval(run, window, it, lr)
                        progress.update(task, info=f"loss {last_loss:.4f}  {images_per_s:.1f} img/s")
                        window = Window(run.device)
                    if it % cfg.save_iters == 0 or last_step:
                        save_interval(run, it, batch, out)
                    if last_step:
                        break
                    fetch = time.perf_counter()
            if stop.received is not None and run.main:
                console.print(f"stopped by signal {stop.received} at iteration {it}; snapshot {run.snapshot}. "
                              f"Continue with: fastpose train CONFIG --resume (out_dir {run.out_dir})")
    except torch.OutOfMemoryError:
        raise UserError(f"Out of GPU memory at iteration {it + 1} (batch_size {cfg.batch_size}, max_input_size "
                        f"{cfg.max_input_size}). Lower batch_size, set crop_size: [w, h] or a smaller "
                        f"max_input_size, or use precision: bf16; then resume with --resume.") from None
    finally:
        run.close()
    return {"iteration": it, "out_dir": str(run.out_dir), "snapshot": str(run.snapshot) if run.snapshot else None,
            "last_loss": last_loss, "images_per_s": images_per_s, "config": cfg}


def _agree_to_stop(signalled: bool, it: int, display_iters: int, world: int, device: torch.device) -> bool:
    """Whether to stop after this step. One process stops at once; under DDP a signal may reach the ranks at different
    steps, so they agree at log intervals (where the loop syncs anyway): any rank signalled -> all stop there."""
    if world == 1:
        return signalled
    if it % display_iters != 0:
        return False
    flag = torch.tensor([1.0 if signalled else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())  # host sync at a log interval


def _rank_spread(model: torch.nn.Module) -> float:
    """Largest difference of a parameter fingerprint between ranks (0.0 when DDP kept them identical, as it must)."""
    flat = torch.cat([p.detach().double().flatten() for p in model.parameters()])
    fingerprint = torch.stack([flat.sum(), (flat * flat).sum(), flat.abs().max()])  # (3,)
    gathered = [torch.zeros_like(fingerprint) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, fingerprint)
    return float(max((g - gathered[0]).abs().max() for g in gathered))


def _non_finite_message(step: int, sums: dict, snapshot) -> str:
    parts = ", ".join(f"{k} {float(v):.4g}" for k, v in sums.items() if k != "total")
    resume = f" The last good snapshot is {snapshot}." if snapshot else ""
    return (f"The loss became non-finite at iteration {step} (sums since the last log line: {parts}). Training "
            f"stopped without saving the broken weights.{resume} Lower the learning rate (multi_step / adam_lr), "
            f"check the data with `fastpose info --verify`, or use precision: fp32; then resume with --resume.")


def _log(it, lr, means, images_per_s, data_time, tb, metrics_file, quiet) -> None:
    line = f"iteration: {it} loss: {means['total']:.4f} lr: {lr:g}"
    parts = "  ".join(f"{k} {v:.4f}" for k, v in means.items() if k != "total")
    if not quiet:
        console.print(f"{line}  ({parts})  {images_per_s:.1f} img/s  data {data_time * 1000:.1f} ms/it",
                      highlight=False)
    record = {"iteration": it, "loss": means["total"], "lr": lr, **{f"loss_{k}": v for k, v in means.items()},
              "images_per_s": images_per_s, "data_time_s": data_time}
    metrics_file.write(json.dumps(record) + "\n")
    metrics_file.flush()
    if tb is not None:
        for k, v in means.items():
            tb.add_scalar(f"loss/{k}", v, it)
        tb.add_scalar("lr", lr, it)
        tb.add_scalar("images_per_s", images_per_s, it)
        tb.add_scalar("data_time_ms", data_time * 1000, it)


def _tensorboard(log_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency; a broken install should not stop training
        console.print("[yellow]tensorboard could not be imported: no TensorBoard logs[/yellow]")
        return None
    return SummaryWriter(str(log_dir))


@torch.no_grad()
def _log_images(tb, cfg: Config, model, batch, out: dict, it: int, count: int = 4) -> None:
    """Predictions drawn on the first images of the batch (TensorBoard 'predictions')."""
    if tb is None:
        return
    n = min(count, batch.images.shape[0])
    pred = decode(out["part"][:n].float(), None if out.get("locref") is None else out["locref"][:n].float(),
                  stride=cfg.stride, locref_stdev=cfg.locref_stdev, valid_hw=batch.valid_hw[:n])
    xy, score = pred[..., :2].cpu().numpy(), pred[..., 2].cpu().numpy()
    mean = np.array(cfg.mean_pixel, np.float32)[:, None, None]
    for i in range(n):
        h, w = (int(v) for v in batch.valid_hw[i])
        img = (batch.images[i, :, :h, :w].float().cpu().numpy() + mean).clip(0, 255).astype(np.uint8)
        drawn = draw_pose(np.ascontiguousarray(img.transpose(1, 2, 0)), xy[i], score[i], cfg.skeleton)
        tb.add_image(f"predictions/{i}", drawn, it, dataformats="HWC")


__all__ = ["train", "setup", "train_step", "learning_rate", "compute_losses", "padding_ignore", "make_optimizer", "Run"]
