"""What every converter shares: source entries, the checks on them, the problem report and the parallel writer.

A converter (mat.py, dlc.py, mpii.py, coco.py) parses its source into `Entry` objects, then calls `convert_entries`,
which loads and checks each entry in worker processes (image present and decodable, declared size right, coordinates
finite and not far outside the image), writes the good ones into shards in source order, and either stops with one
report listing every problem class with the offending entry indices, or with `skip_bad` skips them and records each
in the manifest. The report is a `UserError`, so the CLI prints it as a paragraph and exits 2; nothing partial stays.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from fastpose.errors import UserError
from fastpose.shards import IDENTITY, Sample, ShardWriter
from fastpose.workers import die_with_parent, exit_reason

console = Console(stderr=True)

# How far outside the image a joint may lie before it is reported, as a fraction of the image's larger side.
FAR_OUTSIDE = 0.1

# Problem classes and how to fix them (one paragraph each in the report).
FIXES = {
    "missing image": "the image file does not exist; fix the path in the source (relative paths are resolved against "
                     "the annotation file's folder) or pass --images-root",
    "unreadable image": "the file is not a decodable image (corrupt or truncated); re-export it or remove the entry",
    "size mismatch": "the declared [C, H, W] differs from the real image; fix the size field or re-export the image",
    "joint id out of range": "a joint id is >= num_joints; pass the right --num-joints / --config, or fix the ids "
                             "(they are 0-based)",
    "non-finite coordinates": "a coordinate is NaN or inf; fix or delete that label",
    "joint far outside image": "a joint lies more than 10% of the image size outside the image; the label is probably "
                               "wrong (swapped x/y, wrong image, wrong scale)",
    "malformed entry": "the entry lacks a field or has one of the wrong shape; fix the source file",
    "empty entry": "the entry has no person with a labelled joint",
}


@dataclass
class Entry:
    """One source image with its persons' joints, before checking."""

    index: int  # position in the source (reported to the user)
    image_path: Path | None
    joints: np.ndarray  # (P, K, 3) x, y, visibility (0 = not labelled)
    declared_size: tuple[int, int, int] | None = None  # [C, H, W] as the source states it
    head_box: np.ndarray | None = None
    person_box: np.ndarray | None = None
    person_area: np.ndarray | None = None
    person_id: np.ndarray | None = None
    transform: tuple[float, ...] = IDENTITY
    meta: dict[str, Any] = field(default_factory=dict)
    problems: list[tuple[str, str]] = field(default_factory=list)  # found while parsing: (class, detail)
    payload: Any = None  # converter-specific data for a custom load function


class EntryProblem(Exception):
    """Raised by a load function: (problem class, detail)."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail = kind, detail


def image_format(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:2] == b"BM":
        return "bmp"
    return "unknown"


def decode_size(data: bytes, where: str) -> tuple[int, int, int]:
    """Decode fully (catches truncated files) and return [C, H, W]."""
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if arr is None:
        raise EntryProblem("unreadable image", f"{where} could not be decoded")
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    return (channels, int(arr.shape[0]), int(arr.shape[1]))


def check_joints(joints: np.ndarray, size: tuple[int, int, int], where: str) -> None:
    labelled = joints[..., 2] > 0
    xy = joints[..., :2][labelled]
    if not np.isfinite(xy).all():
        raise EntryProblem("non-finite coordinates", f"{where} has NaN/inf joint coordinates")
    _, h, w = size
    margin = FAR_OUTSIDE * max(h, w)
    if len(xy) and ((xy[:, 0] < -0.5 - margin).any() or (xy[:, 0] > w - 0.5 + margin).any()
                    or (xy[:, 1] < -0.5 - margin).any() or (xy[:, 1] > h - 0.5 + margin).any()):
        raise EntryProblem("joint far outside image", f"{where}: a joint lies far outside the {w}x{h} image")


def load_image_entry(entry: Entry) -> Sample:
    """Default load: read the image file as stored, check it and the joints, and make a Sample."""
    if entry.problems:
        raise EntryProblem(*entry.problems[0])
    path = entry.image_path
    if path is None or not path.is_file():
        raise EntryProblem("missing image", f"{path} not found")
    data = path.read_bytes()
    size = decode_size(data, str(path))
    if entry.declared_size is not None:
        declared = tuple(int(v) for v in entry.declared_size)
        # The seed's size is [C, H, W]; a grey image may be declared with 3 channels (it is decoded to RGB).
        if declared[1:] != size[1:] or declared[0] not in (size[0], 3, 1):
            raise EntryProblem("size mismatch", f"{path} is {list(size)} but the source says {list(declared)}")
    check_joints(entry.joints, size, str(path))
    return Sample(image=data, image_format=image_format(data), size=size, joints=entry.joints.astype(np.float32),
                  head_box=entry.head_box, person_box=entry.person_box, person_area=entry.person_area,
                  person_id=entry.person_id, transform=entry.transform, source_index=entry.index,
                  source_path=str(path), meta=entry.meta)


class Reencode:
    """Wrap a load function so every image is stored as JPEG of a given quality (smaller, faster to decode)."""

    def __init__(self, load: Callable[[Entry], Sample], quality: int):
        if not 1 <= quality <= 100:
            raise UserError(f"--reencode-jpeg {quality}: the JPEG quality must be 1..100 (95 keeps labels' detail).")
        self.load, self.quality = load, quality

    def __call__(self, entry: Entry) -> Sample:
        sample = self.load(entry)
        img = cv2.imdecode(np.frombuffer(sample.image, np.uint8), cv2.IMREAD_COLOR)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        sample.image, sample.image_format, sample.size = buf.tobytes(), "jpeg", (3, *img.shape[:2])
        return sample


def parse_split(text: str | None) -> dict[str, float]:
    """'train=0.9,test=0.1' -> {'train': 0.9, 'test': 0.1}; None -> everything in train."""
    if not text:
        return {"train": 1.0}
    out: dict[str, float] = {}
    for part in text.split(","):
        name, _, frac = part.partition("=")
        try:
            out[name.strip()] = float(frac)
        except ValueError:
            raise UserError(f"--split '{text}': expected name=fraction pairs like train=0.9,test=0.1.") from None
    if any(v < 0 for v in out.values()) or abs(sum(out.values()) - 1.0) > 1e-6:
        raise UserError(f"--split '{text}': fractions must be >= 0 and add up to 1.")
    return out


def assign_splits(n: int, fractions: dict[str, float], seed: int) -> list[str]:
    """Deterministic held-out split of n entries: a seeded permutation cut by the fractions."""
    perm = np.random.default_rng(seed).permutation(n)
    names = list(fractions)
    bounds = np.round(np.cumsum([fractions[k] for k in names]) * n).astype(int)
    out = [""] * n
    start = 0
    for name, end in zip(names, bounds):
        for i in perm[start:end]:
            out[int(i)] = name
        start = end
    return out


def _run(args):
    load, entry = args
    try:
        return entry.index, load(entry), None
    except EntryProblem as p:
        return entry.index, None, (p.kind, p.detail)


def _run_chunk(chunk: list) -> list:
    return [_run(args) for args in chunk]


def _chunks(items: Iterable, size: int):
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _pooled(pool: ProcessPoolExecutor, chunks: Iterable[list], workers: int, source: str, procs: list):
    """The results of `_run_chunk` over `chunks` on `pool`, in order, with at most 4 chunks per worker in flight (the
    decoded samples wait in memory until the writer takes them).

    A worker that dies (the OOM killer, a native decoder's crash) breaks the executor, which stops the others and
    fails every pending future: that ends in a UserError naming the worker. (multiprocessing.Pool, used before, replaces
    a dead worker and loses its entries; and its terminate() can hang for good when the dead worker held the task
    queue's lock.) `procs` (empty) receives the worker processes, for `_stop`."""
    before = {p.pid for p in mp.active_children()}
    window: deque[Future] = deque()
    try:
        for chunk in chunks:
            window.append(pool.submit(_run_chunk, chunk))
            if not procs:  # a fork-context executor starts all its workers at the first submit
                procs += sorted((p for p in mp.active_children() if p.pid not in before), key=lambda p: p.pid)
            if len(window) >= 4 * workers:
                yield from window.popleft().result()
        while window:
            yield from window.popleft().result()
    except BrokenProcessPool:
        # The executor SIGTERMs the survivors once one worker is gone: the culprit is the one that did not get SIGTERM.
        for p in procs:
            p.join(timeout=5)
        dead = [(i, p) for i, p in enumerate(procs) if p.exitcode not in (None, 0, -signal.SIGTERM)] or \
            [(i, p) for i, p in enumerate(procs) if p.exitcode is not None] or [(0, None)]
        i, p = dead[0]
        who = f"convert worker {i + 1} of {len(procs)} (pid {p.pid}) {exit_reason(p.exitcode)}" if p else \
            "a convert worker stopped unexpectedly"
        raise UserError(f"{source}: {who}, so the entries it held are lost and nothing was written. SIGKILL usually "
                        f"comes from the out-of-memory killer (see `dmesg`) or kill -9: pass fewer --workers if "
                        f"memory is short; a crash signal (SIGSEGV, SIGABRT) points at an image a native decoder "
                        f"cannot read. Then run the command again.") from None
    finally:
        for future in window:
            future.cancel()


def _stop(pool: ProcessPoolExecutor, procs: list, finished: bool) -> None:
    """Shut the executor down: wait for idle workers after a full run; kill them at once after an error (their work is
    no longer wanted, and a stuck decoder would otherwise hold the command)."""
    if not finished:
        for p in procs:
            if p.exitcode is None:
                p.kill()
    pool.shutdown(wait=finished, cancel_futures=True)


SKIP_HINT = "Fix these, or pass --skip-bad to skip them (they are listed in the manifest)."


def problem_report(problems: dict[str, list[tuple[int, str]]], source: str,
                   index_name: str = "entry indices are 0-based", fix: str = SKIP_HINT) -> str:
    parts = []
    for kind, items in problems.items():
        first = ", ".join(str(i) for i, _ in items[:10])
        more = f" (and {len(items) - 10} more)" if len(items) > 10 else ""
        parts.append(f"{kind}: {len(items)} entr{'y' if len(items) == 1 else 'ies'} [{first}{more}], e.g. "
                     f"{items[0][1]}; fix: {FIXES.get(kind, 'fix the entry')}.")
    return (f"{source}: {sum(len(v) for v in problems.values())} bad entries ({index_name}). "
            + " ".join(parts) + " Nothing was written. " + fix)


def convert_entries(entries: list[Entry], writer: ShardWriter, *, source: str, splits: list[str] | None = None,
                    load: Callable[[Entry], Sample] = load_image_entry, workers: int | None = None,
                    skip_bad: bool = False, quiet: bool = False,
                    index_name: str = "entry indices are 0-based") -> dict[str, int]:
    """Load, check and write every entry (in source order). Returns samples written per split.

    index_name says what the reported numbers are (e.g. "numbers are COCO image ids")."""
    if not entries:
        writer.abort()
        raise UserError(f"{source}: the dataset is empty (no entries). Check the file and its variable names.")
    workers = workers or min(len(os.sched_getaffinity(0)), 8)
    splits = splits or ["train"] * len(entries)
    split_of = {e.index: s for e, s in zip(entries, splits)}
    problems: dict[str, list[tuple[int, str]]] = {}
    written: dict[str, int] = {}
    jobs: Iterable = ((load, e) for e in entries)
    pool, procs, results, finished = None, [], map(_run, jobs), False
    if workers > 1 and len(entries) > 8:
        # Each worker dies with this process, whatever kills it (fastpose/workers.py).
        pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"), initializer=die_with_parent,
                                   initargs=(os.getpid(), "convert worker"))
        results = _pooled(pool, _chunks(jobs, 4), workers, source, procs)
    try:
        with Progress(TextColumn("[bold]convert[/bold] {task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=console, disable=quiet, transient=True) as bar:
            task = bar.add_task(source, total=len(entries))
            for index, sample, problem in results:
                if problem is not None:
                    problems.setdefault(problem[0], []).append((index, problem[1]))
                    writer.skipped.append({"index": index, "problem": problem[0], "detail": problem[1]})
                elif not problems or skip_bad:  # once a problem is known (and fatal) only keep scanning
                    split = split_of[index]
                    writer.add(sample, split)
                    written[split] = written.get(split, 0) + 1
                bar.advance(task)
        finished = True
    except BaseException:
        writer.abort()
        raise
    finally:
        if pool:
            _stop(pool, procs, finished)
    if problems and (not skip_bad or not written):  # with --skip-bad, every entry bad leaves nothing to write
        writer.abort()
        raise UserError(problem_report(problems, source, index_name, SKIP_HINT if not skip_bad else
                                       "Every entry is bad, so --skip-bad left nothing to convert: fix them."))
    if problems and not quiet:
        n = sum(len(v) for v in problems.values())
        console.print(f"[yellow]skipped {n} bad entries[/yellow] ("
                      + "; ".join(f"{k}: {len(v)}" for k, v in problems.items()) + "), listed in manifest.json")
    writer.close()
    return written
