"""`fastpose analyze`: run a trained model over videos; write DeepLabCut-compatible tracks (`.h5`, `.csv`), a
`_meta.json` and optionally a labelled video per video.

Decoding runs beside the network: on the CPU PyAV decodes, scales (exactly as `fastpose predict`:
`fastpose.images.network_batch`) and batches frames in a background thread (`fastpose.video.Prefetch`) while the
model runs on the previous batch; on a GPU DALI decodes with NVDEC and resizes there (`fastpose.video.dali_batches`).
After decoding there is one path: the network, `fastpose.decode` (single person) or `fastpose.assembly` + the
tracker (`fastpose.tracks`, multi-person), the tables, the drawing (`fastpose.draw`). With `--engine onnxruntime` the
network and the decoding are the `fastpose export` ONNX graph, fed the decoded uint8 frames (`fastpose.predict`'s
`onnx_batch`, as `fastpose predict` runs it).

Every output is written to a temporary name and renamed; the meta file goes last, so a video counts as done
(`--skip-existing`) only when its meta file is there. Under torchrun each rank takes every WORLD_SIZE-th video.
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from fastpose import __version__
from fastpose.assembly import classifier_for
from fastpose.atomic import write_atomic
from fastpose.checkpoint import config_from_snapshot, latest_snapshot, load_model, load_snapshot
from fastpose.config import load
from fastpose.device import autocast, effective_precision, memory_format, pick_device
from fastpose.draw import draw_persons, draw_pose, person_colour
from fastpose.errors import USER_FIXABLE_ERRNOS, UserError, out_folder
from fastpose.export import OnnxModel, onnx_for
from fastpose.images import eval_size, network_batch
from fastpose.model import infer
from fastpose.pipeline import ALIGN
from fastpose.predict import all_persons, choose_engine, onnx_batch, single_joints
from fastpose.tracks import Tracker, dlc_table, scorer_name, write_table
from fastpose.train import distributed
from fastpose.video import (
    DecodeCounts,
    Prefetch,
    VideoInfo,
    VideoWriter,
    chunks,
    dali_batches,
    expand_videos,
    frame_range,
    probe,
    read_frames,
)

DECODERS = ("auto", "pyav", "dali")


@dataclass
class Options:
    """What `fastpose analyze` does per video (its command-line options)."""

    batch_size: int = 8
    labeled_video: bool = False
    pcutoff: float = 0.6
    multi_person: bool = False
    max_gap: int = 10
    track_by: str = "oks"
    start: float | None = None
    stop: float | None = None
    frames: str | None = None
    decoder: str = "auto"
    progress: bool = True
    extra: dict = field(default_factory=dict)  # added to every meta file


def resolve(target: str | Path, checkpoint: str | Path | None, overrides: list[str] | None = None):
    """(config or None, snapshot path) from CONFIG_OR_CHECKPOINT and --checkpoint: a .pt (or an exported .onnx) is the
    snapshot (its own config; --set overrides apply to a .pt's saved config); a config takes --checkpoint or the
    newest snapshot of its out_dir (`load_model` then checks that the snapshot's joint set is the config's)."""
    target = Path(target)
    if target.suffix in (".pt", ".onnx"):
        if checkpoint is not None:
            raise UserError(f"{target} is a snapshot and --checkpoint {checkpoint} another one: pass one of them "
                            f"(a config as the first argument takes --checkpoint).")
        if not overrides:
            return None, target
        if target.suffix == ".onnx":
            raise UserError(f"--set {' '.join(overrides)}: {target} is an exported graph, whose scaling and network "
                            f"are fixed in the file. Analyse its snapshot .pt with --set, or export again with the "
                            f"changed config.")
        return config_from_snapshot(load_snapshot(target), target, overrides), target  # --set on the saved config
    cfg = load(target, overrides)
    if checkpoint is None:
        checkpoint = latest_snapshot(cfg.out_dir, cfg.snapshot_prefix)
        if checkpoint is None:
            raise UserError(f"No snapshot in {cfg.out_dir} (the out_dir of {target}). Train first, or pass "
                            f"--checkpoint SNAPSHOT.")
    return cfg, Path(checkpoint)


def analyze(target: str | Path, videos: list[str], *, checkpoint: str | Path | None = None,
            out_dir: str | Path | None = None, options: Options | None = None, skip_existing: bool = False,
            device: str = "auto", overrides: list[str] | None = None, engine: str | None = None) -> dict:
    """Analyse videos (files and folders). Returns {"rows": one dict per video (video, frames, fps, outputs,
    missing, status), "skipped": [(video, reason)], "rank", "world"}.

    engine: torch | onnxruntime (`fastpose.predict.choose_engine`; None = onnxruntime for an .onnx checkpoint, else
    torch). With onnxruntime a snapshot is exported once beside itself (`fastpose.export.onnx_for`)."""
    opts = options or Options()
    if opts.batch_size <= 0:
        raise UserError(f"--batch-size must be positive, got {opts.batch_size}.")
    if not 0 <= opts.pcutoff <= 1:
        raise UserError(f"--pcutoff {opts.pcutoff}: a likelihood threshold between 0 and 1 is expected.")
    if opts.decoder not in DECODERS:
        raise UserError(f"--decoder {opts.decoder!r}: use one of {', '.join(DECODERS)}.")
    if opts.track_by not in ("oks", "iou"):
        raise UserError(f"--track-by {opts.track_by!r}: use oks or iou.")
    if opts.max_gap < 0:
        raise UserError(f"--max-gap {opts.max_gap}: frames a track may be unseen must be >= 0.")
    paths = expand_videos(videos)
    cfg, snapshot = resolve(target, checkpoint, overrides)
    engine = choose_engine(engine, snapshot)
    if engine == "onnxruntime" and opts.decoder == "dali":
        raise UserError("--decoder dali hands the network frames already scaled on the GPU, but --engine onnxruntime "
                        "runs the exported graph, which takes the decoded uint8 frames and scales them itself. Use "
                        "--decoder pyav (the default with onnxruntime), or --engine torch.")
    rank, world, local_rank = distributed()
    paths = paths[rank::world]  # rank r takes videos r, r + N, ...
    dev = pick_device(device, local_rank if world > 1 else None)
    if engine == "onnxruntime":
        model = OnnxModel(onnx_for(snapshot, multi_person=opts.multi_person), dev)
        cfg = config_from_snapshot({"config": model.config_values}, snapshot)  # the graph's own training config
        if opts.multi_person and "pairwise" not in model.outputs:
            raise UserError(f"{snapshot} was exported without --multi-person, so it lacks the pairwise offsets the "
                            f"assembly needs. Export it again with --multi-person, or analyse its snapshot .pt.")
        iteration = int(model.meta.get("iteration", 0))  # files exported before the iteration was kept: 0
    else:
        model, cfg = load_model(snapshot, dev, cfg)
        iteration = int(load_snapshot(snapshot)["iteration"])
    if not cfg.joint_names:
        cfg.joint_names = [f"joint{k}" for k in range(cfg.num_joints)]
    assembly = None
    if opts.multi_person:
        assembly, note = classifier_for(cfg, snapshot)
        if note is not None:
            raise UserError(f"--multi-person: {note}.")
    scorer = scorer_name(cfg.net_type, iteration)
    folder = out_folder(out_dir, "--out") if out_dir is not None else None
    rows, skipped = [], []
    for path in paths:
        dest = folder or out_folder(path.parent, f"the folder of {path.name} (outputs go beside the video; or --out)")
        base = dest / f"{path.stem}{scorer}"
        meta_path = base.with_name(base.name + "_meta.json")
        if skip_existing and meta_path.is_file() and base.with_name(base.name + ".h5").is_file():
            rows.append({"video": str(path), "status": "exists", "outputs": [str(meta_path)]})
            continue
        try:
            info = probe(path)
        except UserError as e:
            skipped.append((str(path), str(e)))
            continue
        meta = analyze_video(model, cfg, info, base, dev, opts, assembly=assembly, scorer=scorer,
                             extra={"checkpoint": str(snapshot), "config": str(target), **opts.extra})
        rows.append({"video": str(path), "status": "done", **meta})
    if skipped and not rows:
        raise UserError("No video could be analysed: " + " ".join(reason for _, reason in skipped))
    return {"rows": rows, "skipped": skipped, "rank": rank, "world": world, "scorer": scorer}


def network_size(info: VideoInfo, cfg) -> tuple[int, int]:
    """(h, w) the frames are scaled to: the eval geometry of `fastpose.pipeline` (as `fastpose.images`)."""
    res_h, res_w = eval_size(torch.tensor(info.height), torch.tensor(info.width), cfg)
    return int(res_h), int(res_w)


def cpu_batches(info: VideoInfo, first: int, last: int, cfg, batch_size: int, counts: DecodeCounts,
                keep_images: bool, scale: bool = True):
    """(frame numbers, (B, 3, H, W) network input, valid_hw (B, 2), ratio (B, 2), images or None): PyAV decoding
    and `fastpose.images.network_batch` scaling, run by the background thread. scale False (the ONNX graph scales
    inside): network input, valid_hw and ratio are None."""
    for numbers, images in chunks(read_frames(info, first, last, counts), batch_size):
        t = time.perf_counter()
        batch, valid_hw, ratio = network_batch(images, cfg) if scale else (None, None, None)
        counts.decode_s += time.perf_counter() - t
        yield numbers, batch, valid_hw, ratio, images if keep_images else None


def dali_net_batches(info: VideoInfo, first: int, last: int, cfg, batch_size: int, dev: torch.device,
                     keep_images: bool):
    """The same items as `cpu_batches`, decoded and scaled by DALI: on the GPU (NVDEC) when dev is CUDA, else on
    DALI's CPU decoder (VP8/VP9/MJPEG only; how this path is tested without a GPU). Images reach the host only for
    drawing."""
    h, w = network_size(info, cfg)
    hp, wp = math.ceil(h / ALIGN) * ALIGN, math.ceil(w / ALIGN) * ALIGN
    for numbers, net, frames in dali_batches(info, first, last, batch_size, (h, w), cfg.mean_pixel,
                                             dev.index or 0, keep_frames=keep_images,
                                             device="gpu" if dev.type == "cuda" else "cpu"):
        batch = torch.nn.functional.pad(net, (0, wp - w, 0, hp - h))  # (B, 3, hp, wp), 0 after the mean as the CPU
        valid_hw = torch.tensor([[h, w]] * len(numbers), dtype=torch.int64)
        ratio = torch.tensor([[w / info.width, h / info.height]] * len(numbers), dtype=torch.float64)
        yield numbers, batch, valid_hw, ratio, None if frames is None else list(frames.cpu().numpy())


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]:.1f} frames/s"), TimeRemainingColumn(),
                    console=Console(stderr=True), disable=not enabled, transient=False)


def analyze_video(model, cfg, info: VideoInfo, base: Path, dev: torch.device, opts: Options, *,
                  assembly: dict | None = None, scorer: str = "DLC_fastpose", extra: dict | None = None) -> dict:
    """Analyse one video; write `<base>.h5`, `<base>.csv`, optionally `<base>_labeled.mp4`, then `<base>_meta.json`.
    Returns the meta document. model: the torch network, or an `OnnxModel` (--engine onnxruntime)."""
    t_start = time.time()
    t0 = time.perf_counter()
    first, last = frame_range(info, opts.start, opts.stop, opts.frames)
    n = last - first
    k = cfg.num_joints
    single = np.full((n, k, 3), np.nan)  # (N, K, 3) x, y, likelihood
    people: dict[int, dict[int, np.ndarray]] = {}  # frame row -> track id -> (K, 3)
    tracker = Tracker(opts.max_gap, opts.track_by) if opts.multi_person else None
    counts = DecodeCounts()
    onnx = isinstance(model, OnnxModel)
    layout = memory_format(cfg.channels_last, dev)  # the layout load_model put the network in
    decoder = opts.decoder if opts.decoder != "auto" else ("dali" if dev.type == "cuda" and not onnx else "pyav")
    if decoder == "dali" and dev.type != "cuda" and info.codec not in ("vp8", "vp9", "mjpeg"):
        raise UserError(f"--decoder dali on the CPU reads VP8, VP9 and MJPEG only, and {info.path} is {info.codec} "
                        f"(DALI decodes it on a GPU, with --device cuda). Use --decoder pyav (the CPU default).")
    writer = VideoWriter(base.with_name(base.name + "_labeled.mp4"), info.rate, info.width,
                         info.height) if opts.labeled_video else None
    written = 0  # labelled frames written so far (rows 0 .. written - 1)
    blank = np.zeros((info.height, info.width, 3), np.uint8)
    analysed, model_s = 0, 0.0
    if decoder == "dali":
        source = dali_net_batches(info, first, last, cfg, opts.batch_size, dev, opts.labeled_video)
    else:
        source = Prefetch(cpu_batches(info, first, last, cfg, opts.batch_size, counts, opts.labeled_video or onnx,
                                      scale=not onnx))
    try:
        with _progress(opts.progress) as bar:
            task = bar.add_task(info.path.name, total=n, rate=0.0)
            for numbers, batch, valid_hw, ratio, images in source:
                tm = time.perf_counter()
                rows = [m - first for m in numbers]
                if onnx:
                    # (B, K, 3) joints in frame pixels; per frame (P, K, 3) persons (score 0 = joint absent) or None
                    joints, persons = onnx_batch(model, images, cfg, assembly, tracker is not None)
                else:
                    try:
                        with torch.no_grad(), autocast(cfg.precision, dev):
                            # infer: the slim layout sees the frames unpadded, as TF did
                            heads = infer(model, batch.to(dev, non_blocking=True).contiguous(memory_format=layout),
                                          valid_hw)
                    except torch.OutOfMemoryError:
                        raise UserError(f"Out of GPU memory analysing {info.path} (batch size {opts.batch_size}, "
                                        f"frames {info.width} x {info.height}). Pass a smaller --batch-size, or "
                                        f"--device cpu.") from None
                    if tracker is None:
                        joints = single_joints(heads, valid_hw, ratio, cfg)  # (B, K, 3)
                    else:
                        persons = all_persons(heads, valid_hw, ratio, cfg, assembly)  # (P, K, 3) each
                if tracker is None:
                    single[rows] = joints
                else:
                    for row, number, found in zip(rows, numbers, persons):
                        found = found.copy()
                        found[found[..., 2] <= 0] = np.nan
                        ids = tracker.update(number, found)
                        people[row] = {t: pose for t, pose in zip(ids, found) if t >= 0}
                model_s += time.perf_counter() - tm
                if writer is not None:
                    for b, row in enumerate(rows):
                        while written < row:  # frames that did not decode: the last picture again, nothing drawn
                            writer.write(blank, written)
                            written += 1
                        blank = images[b]
                        writer.write(_drawn(images[b], row, single, people, cfg, opts), row)
                        written += 1
                analysed += len(rows)
                bar.update(task, advance=len(rows), rate=analysed / max(time.perf_counter() - t0, 1e-9))
        if writer is not None:
            while written < n:
                writer.write(blank, written)
                written += 1
    except BaseException as e:
        if writer is not None:
            writer.discard()
        if isinstance(e, OSError) and e.errno in USER_FIXABLE_ERRNOS:
            raise UserError(f"Could not write the labelled video of {info.path} in {base.parent} ({e.strerror}); "
                            f"nothing partial was left. Free space there (or pass another --out) and run again with "
                            f"--skip-existing.") from None
        raise
    finally:
        if isinstance(source, Prefetch):
            source.close()
    outputs = []
    try:
        if tracker is None:
            table = dlc_table(single, range(first, last), scorer, cfg.joint_names)
        else:
            poses = np.full((n, tracker.count, k, 3), np.nan)  # (N, T, K, 3)
            for row, found in people.items():
                for t, pose in found.items():
                    poses[row, t] = pose
            table = dlc_table(poses, range(first, last), scorer, cfg.joint_names,
                              [f"ind{t + 1}" for t in range(tracker.count)])
        outputs += [str(p) for p in write_table(base, table)]
        if writer is not None:
            outputs.append(str(writer.close()))
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    seconds = time.perf_counter() - t0
    wait = isinstance(source, Prefetch)
    meta = {
        "video": str(info.path), "fps": info.fps, "frame_rate": str(info.rate), "video_frames": info.frames,
        "frame_dimensions": [info.height, info.width], "frame_dimensions_order": "height, width", "codec": info.codec,
        "start_frame": first, "stop_frame": last, "frames": n, "analysed_frames": analysed,
        "missing_frames": n - analysed, "corrupt_frames": counts.corrupt, "duplicate_frames": counts.duplicates,
        "frame_numbers": "from presentation timestamps: frame i is shown i / fps s after the first frame",
        "scorer": scorer, "batch_size": opts.batch_size, "multi_person": opts.multi_person,
        "tracks": None if tracker is None else tracker.count, "pcutoff": opts.pcutoff, "decoder": decoder,
        "device": str(dev), "engine": "onnxruntime" if onnx else "torch",
        "precision": "fp32" if onnx else effective_precision(cfg.precision, dev), "net_type": cfg.net_type,
        "start": t_start, "stop": time.time(), "run_duration_s": seconds, "fps_achieved": analysed / seconds,
        "model_s": model_s, "decode_s": counts.decode_s if wait else None,
        "model_waited_for_decode_s": source.consumer_wait_s if wait else None,
        "decode_waited_for_model_s": source.producer_wait_s if wait else None,
        "host": platform.node(), "fastpose_version": __version__, **(extra or {}),
    }
    meta_path = base.with_name(base.name + "_meta.json")
    outputs.append(str(meta_path))
    meta["outputs"] = outputs
    try:
        write_atomic(meta_path, json.dumps(meta, indent=1))
    except OSError as e:
        if e.errno not in USER_FIXABLE_ERRNOS:
            raise
        raise UserError(f"Could not write {meta_path} ({e.strerror}); the video counts as not done. Free space in "
                        f"{base.parent} and run again with --skip-existing.") from None
    return meta


def _drawn(image: np.ndarray, row: int, single: np.ndarray, people: dict, cfg, opts: Options) -> np.ndarray:
    """The frame with its joints (likelihood >= pcutoff) drawn: a colour per joint (single person) or per track."""
    if opts.multi_person:
        img = image
        for t, pose in people.get(row, {}).items():
            img = draw_pose(img, pose[:, :2], np.nan_to_num(pose[:, 2]), cfg.skeleton, opts.pcutoff,
                            colour=person_colour(t))
        return img if img is not image else image.copy()
    pose = single[row]
    img = draw_pose(image, pose[:, :2], pose[:, 2], cfg.skeleton, opts.pcutoff, colour=(255, 255, 255))
    # one colour per joint over the white skeleton: joint k in person_colour(k)
    return draw_persons(img, [np.where((np.arange(len(pose)) == j)[:, None], pose, np.nan) for j in
                              range(len(pose))], None, opts.pcutoff) if len(pose) else img
