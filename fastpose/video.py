"""Video files in and out: find and probe videos, decode their frames (PyAV on the CPU, DALI/NVDEC on a GPU), run a
producer in a background thread, and write H.264 videos (the labelled videos of `fastpose analyze`).

Frame numbers come from presentation timestamps, not from the decode order: frame i is the one shown at i / fps
seconds after the stream's first timestamp. For a constant frame rate that is the usual 0, 1, 2, ...; for a variable
rate fps is FFmpeg's base rate (the lowest rate that represents every timestamp; the average rate when the base rate
is over twice the average), so each frame keeps its own number and a timestamp gap (a frame the recorder or decoder
dropped, a damaged packet) leaves its numbers empty (NaN rows); a second frame on an already used number is counted
as a duplicate and left out. Frames FFmpeg flags as corrupt are left out and counted too.

PyAV (FFmpeg) reads H.264, HEVC, MPEG-4, VP8/VP9, MJPEG, ... on the CPU and writes H.264 (libx264). DALI 2.4's CPU
video decoder refuses H.264, HEVC and MPEG-4, so DALI decodes only on the GPU (NVDEC), where frames stay in GPU
memory (`dali_batches`).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from fastpose.atomic import expand_paths
from fastpose.errors import UserError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


@dataclass
class VideoInfo:
    """What `probe` learnt about a video's first video stream."""

    path: Path
    width: int
    height: int
    rate: Fraction  # average frame rate (frames per second) as FFmpeg reports it
    frames: int  # frames expected: the container's count, else duration x rate
    codec: str
    time_base: Fraction
    start_pts: int  # presentation timestamp of frame 0 (in time_base units)
    average_rate: Fraction  # frames / duration; differs from `rate` for a variable frame rate

    @property
    def variable_rate(self) -> bool:
        return self.average_rate != self.rate

    @property
    def fps(self) -> float:
        return float(self.rate)


def expand_videos(items: list[str | Path]) -> list[Path]:
    """Videos files, folders of them and glob patterns -> paths in order, without duplicates."""
    return expand_paths(items, VIDEO_SUFFIXES, "videos")


def probe(path: str | Path) -> VideoInfo:
    """Size, rate, expected frame count and codec of the first video stream; UserError for a file FFmpeg cannot read
    as a video or a video without frames."""
    path = Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UserError(f"{path} holds no video stream (streams: "
                                f"{', '.join(s.type for s in container.streams) or 'none'}). Pass a video file.")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            average = stream.average_rate or stream.guessed_rate
            base = stream.base_rate  # FFmpeg's r_frame_rate: the lowest rate that represents every timestamp
            # A variable-rate video numbers its frames on the base rate's grid (each frame keeps its own number,
            # gaps stay empty), unless that grid is far finer than the frames (a 90 kHz clock): then the average.
            rate = base if average and base and average <= base <= 2 * average else average or base
            if not rate:
                raise UserError(f"{path}: FFmpeg finds no frame rate in its video stream. Re-encode it (e.g. `ffmpeg "
                                f"-i {path.name} -r 30 fixed.mp4`).")
            time_base = stream.time_base or Fraction(1, 90000)
            frames = int(stream.frames or 0) if rate == average else 0
            if frames <= 0:  # mkv/webm/avi without a frame count: the duration says how many frames to expect
                if stream.duration:
                    seconds = float(stream.duration * time_base)
                elif container.duration:
                    seconds = container.duration / av.time_base
                else:
                    seconds = 0.0
                frames = int(round(seconds * float(rate)))
            info = VideoInfo(path, int(ctx.width), int(ctx.height), Fraction(rate), frames,
                             ctx.codec.name if ctx.codec else "?", Fraction(time_base),
                             int(stream.start_time or 0), Fraction(average or rate))
    except UserError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise UserError(f"{path} could not be opened as a video ({type(e).__name__}: {e}). Pass a video file FFmpeg "
                        f"reads ({', '.join(VIDEO_SUFFIXES)}; H.264, HEVC, MPEG-4, VP9, ...), or remove this one "
                        f"from the inputs.") from None
    if info.width <= 0 or info.height <= 0:
        raise UserError(f"{path}: its video stream has no frame size ({info.width} x {info.height}). Pass a valid "
                        f"video file.")
    if info.frames <= 0:
        raise UserError(f"{path} is a video without frames (zero length). Remove it from the inputs.")
    return info


def frame_range(info: VideoInfo, start: float | None, stop: float | None, frames: str | None) -> tuple[int, int]:
    """[first, last) frame numbers to analyse from --start/--stop (seconds) or --frames a:b (frame numbers, either
    end may be left out); the whole video by default. UserError for an empty or unparsable range."""
    n = info.frames
    if frames is not None:
        if start is not None or stop is not None:
            raise UserError("--frames a:b and --start/--stop both choose the frames to analyse: pass one of them.")
        parts = frames.split(":")
        try:
            if len(parts) != 2:
                raise ValueError
            first = int(parts[0]) if parts[0].strip() else 0
            last = int(parts[1]) if parts[1].strip() else n
        except ValueError:
            raise UserError(f"--frames {frames!r}: expected a:b with frame numbers (e.g. 0:300, or 100: for frame "
                            f"100 to the end).") from None
    else:
        first = 0 if start is None else int(round(start * info.fps))
        last = n if stop is None else int(round(stop * info.fps))
    first, last = max(first, 0), min(last, n)
    if first >= last:
        chosen = f"--frames {frames}" if frames is not None else f"--start {start} --stop {stop}"
        raise UserError(f"{info.path}: {chosen} holds no frame of this video ({n} frames, {info.fps:.3f} fps, "
                        f"{n / info.fps:.2f} s). Pass a range inside the video, first before last.")
    return first, last


@dataclass
class DecodeCounts:
    """What decoding met besides good frames (reported in the meta file and the summary)."""

    corrupt: int = 0  # frames FFmpeg flagged as corrupt, or packets it could not decode
    duplicates: int = 0  # frames whose timestamp fell on an already used frame number
    decode_s: float = 0.0  # seconds spent decoding and converting frames (in the decoding thread)


def read_frames(info: VideoInfo, first: int, last: int, counts: DecodeCounts,
                threads: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """(frame number, (H, W, 3) uint8 RGB) of every good frame numbered in [first, last), in order (frame numbers
    from timestamps, see the module's docstring). A damaged packet or frame is skipped and counted; a truncated file
    simply ends early (the caller sees which numbers never came). `threads` = FFmpeg decoding threads (0: its own
    choice)."""
    tick = time.perf_counter()
    with av.open(str(info.path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame + slice threads inside FFmpeg (released from the GIL)
        if threads:
            stream.codec_context.thread_count = threads
        per_frame = 1 / (info.time_base * info.rate)  # timestamp units per frame
        if first > 0:
            # Seek to the keyframe before `first` (decoding from there up to it); frames before it are dropped.
            container.seek(int(info.start_pts + first * per_frame), stream=stream, backward=True)
        last_index = -1
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError:  # a damaged container chunk: the demuxer resynchronises or ends
                counts.corrupt += 1
                continue
            try:
                decoded = packet.decode()
            except av.error.FFmpegError:
                counts.corrupt += 1
                continue
            for frame in decoded:
                if frame.pts is None:
                    index = last_index + 1
                else:
                    index = int(round(float((frame.pts - info.start_pts) / per_frame)))
                if index < first:
                    continue
                if index >= last:
                    counts.decode_s += time.perf_counter() - tick
                    return
                if index <= last_index:
                    counts.duplicates += 1
                    continue
                if frame.is_corrupt:
                    counts.corrupt += 1
                    continue
                last_index = index
                image = frame.to_ndarray(format="rgb24")  # (H, W, 3) uint8
                counts.decode_s += time.perf_counter() - tick
                yield index, image
                tick = time.perf_counter()
    counts.decode_s += time.perf_counter() - tick


class Prefetch:
    """Runs an iterator in a background thread, `depth` items ahead of the consumer, and measures who waited:
    `consumer_wait_s` (the consumer found the queue empty: the model waited for decode) and `producer_wait_s` (the
    queue was full: decode waited for the model). An exception in the producer is raised in the consumer."""

    _END = object()

    def __init__(self, items: Iterable, depth: int = 2):
        self.consumer_wait_s = 0.0
        self.producer_wait_s = 0.0
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(items,), daemon=True, name="fastpose-decode")
        self._thread.start()

    def _put(self, item) -> bool:
        t = time.perf_counter()
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                self.producer_wait_s += time.perf_counter() - t
                return True
            except queue.Full:
                continue
        return False

    def _run(self, items: Iterable) -> None:
        try:
            for item in items:
                if not self._put((True, item)):
                    return
            self._put((True, self._END))
        except BaseException as e:  # handed to the consumer, which raises it with its traceback
            self._put((False, e))

    def __iter__(self):
        while True:
            t = time.perf_counter()
            ok, item = self._queue.get()
            self.consumer_wait_s += time.perf_counter() - t
            if not ok:
                raise item
            if item is self._END:
                return
            yield item

    def close(self) -> None:
        """Stop the producer (at its next item) and wait for it."""
        self._stop.set()
        self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def chunks(frames: Iterable[tuple[int, np.ndarray]], size: int) -> Iterator[tuple[list[int], list[np.ndarray]]]:
    """Groups of up to `size` (frame numbers, images) from (frame number, image) pairs."""
    numbers, images = [], []
    for number, image in frames:
        numbers.append(number)
        images.append(image)
        if len(numbers) == size:
            yield numbers, images
            numbers, images = [], []
    if numbers:
        yield numbers, images


class VideoWriter:
    """H.264 (libx264) video at a given frame rate and size, written to `path` + ".tmp.mp4" and renamed onto `path`
    by `close()` (an interrupted run leaves no file that looks finished; `discard()` removes the temp file).

    Frames are (H, W, 3) uint8 RGB; `write(image, number)` puts it at frame `number` (timestamps number / rate, so the
    output has the source's exact rate). Odd frame sizes are encoded 4:4:4 (4:2:0 needs even sizes)."""

    def __init__(self, path: str | Path, rate: Fraction, width: int, height: int, crf: int = 20):
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp.mp4")
        self._container = av.open(str(self.tmp), "w", format="mp4")
        self._stream = self._container.add_stream("libx264", rate=Fraction(rate))
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        self._stream.time_base = 1 / Fraction(rate)
        self._stream.options = {"crf": str(crf), "preset": "veryfast"}
        self._stream.codec_context.thread_count = 1  # inference owns the cores; the encoder keeps one busy at most

    def write(self, image: np.ndarray, number: int) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = number
        frame.time_base = self._stream.time_base
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> Path:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        os.replace(self.tmp, self.path)
        return self.path

    def discard(self) -> None:
        try:
            self._container.close()
        except Exception:  # a failed encoder may refuse to close: the temp file goes either way
            pass
        self.tmp.unlink(missing_ok=True)


def dali_batches(info: VideoInfo, first: int, last: int, batch_size: int, size: tuple[int, int],
                 mean_pixel, device_id: int, keep_frames: bool = False,
                 device: str = "gpu") -> Iterator[tuple[list[int], object, object | None]]:
    """Decode and resize on the GPU with DALI (NVDEC): (frame numbers, network input (B, 3, h, w) float32 torch
    tensor, mean subtracted, on the GPU, the original frames (B, H, W, 3) uint8 torch tensor on the GPU or None).

    size = (h, w) of the network input: the eval pipeline's scaled size (bilinear, antialiased, as
    `fastpose.pipeline`'s resize). Frames never visit the host. device="cpu" runs the same graph on DALI's CPU
    decoder (VP8/VP9/MJPEG only), which is how it is tested without a GPU. Frame numbers come from DALI's timestamps
    on the same grid as `read_frames`.
    """
    import torch  # heavy optional libraries: only this path needs DALI and torch's DLPack bridge
    from nvidia.dali import fn, pipeline_def, types

    h, w = size

    @pipeline_def(batch_size=1, num_threads=2, device_id=device_id if device == "gpu" else None,
                  prefetch_queue_depth=2, exec_dynamic=True)
    def graph():
        video, ts = fn.experimental.readers.video(
            device=device, filenames=[str(info.path)], sequence_length=batch_size, step=batch_size,
            pad_mode="constant", enable_timestamps=True, random_shuffle=False, name="reader")
        # (F, H, W, 3) uint8 -> resized (F, h, w, 3) float -> (F, 3, h, w) minus the mean pixel
        small = fn.resize(video, resize_x=w, resize_y=h, interp_type=types.INTERP_LINEAR, antialias=True,
                          dtype=types.FLOAT)
        net = fn.transpose(small - fn.constant(fdata=list(mean_pixel), shape=[1, 1, 1, 3]), perm=[0, 3, 1, 2])
        return (net, ts, video) if keep_frames else (net, ts)

    pipe = graph()
    pipe.build()
    epoch = pipe.epoch_size("reader")
    per_frame = float(info.rate)
    for _ in range(epoch):
        outs = pipe.run()
        net = torch.from_dlpack(outs[0][0])  # (F, 3, h, w) on the pipeline's device
        stamps = np.asarray(outs[1].as_cpu()[0]).reshape(-1)  # (F,) seconds; padded frames repeat or are < 0
        frames = torch.from_dlpack(outs[2][0]) if keep_frames else None
        numbers, keep = [], []
        for j, t in enumerate(stamps):
            number = int(round((float(t) - float(info.start_pts * info.time_base)) * per_frame))
            if t >= 0 and first <= number < last and (not numbers or number > numbers[-1]):
                numbers.append(number)
                keep.append(j)
        if not numbers:
            continue
        idx = torch.as_tensor(keep, device=net.device)
        yield numbers, net.index_select(0, idx), None if frames is None else frames.index_select(0, idx)

