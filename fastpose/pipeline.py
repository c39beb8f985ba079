"""The data pipeline: HDF5 shards -> decoded, scaled, mirrored, normalised, padded batches on the device (NVIDIA DALI).

Pixel convention (THE project's convention; other modules refer to this docstring): pixel centres are at integer
coordinates, so pixel (0, 0) covers [-0.5, 0.5)^2 and an image W wide spans x in [-0.5, W - 0.5]. Resizing an image
from W to W' pixels maps x -> (x + 0.5) * (W' / W) - 0.5 (the real output/input ratio, not the nominal scale);
mirroring an image W' wide maps x -> W' - 1 - x. MPII/MATLAB 1-based coordinates become x - 1.

Stages, per sample:

1. Source: a per-sample parallel `fn.external_source` (`_Source`). Worker processes open the shards lazily (one h5py
   handle per shard per worker, never in the parent). The source decides every random parameter (scale jitter, flip
   coin, crop origin) from a numpy Generator keyed by (seed, epoch, sample index) and transforms the joints in numpy,
   so batches do not depend on worker timing and a resumed run reproduces the uninterrupted stream exactly.
2. Decode: `fn.decoders.image` on device "mixed" where there is a GPU, "cpu" where there is none (`device_id=None`).
3. Scale: s = global_scale x U(scale_jitter_lo, scale_jitter_up) (train) or global_scale (eval); a sample whose
   smaller scaled side is below min_input_size is scaled up to it, and one whose scaled area floor(W s) x floor(H s)
   exceeds max_input_size^2 gets s = max_input_size / sqrt(W H) instead (both counted in `Loader.clamped`, never
   dropped; the reference skipped such images). Bilinear (antialiased) resize to floor(W s) x floor(H s), as the
   reference.
   Rotation (train with `rotation_range` only): with probability rotation_p the scaled image is rotated by an angle
   drawn from rotation_range (degrees, counter-clockwise as seen, about its centre ((W' - 1) / 2, (H' - 1) / 2), same
   size, the corners filled with the mean pixel's grey). Scale, rotation and crop are then one affine (`Params.matrix`)
   applied by one `fn.warp_affine` (one resampling: bilinear, without the resize's antialiasing) to image and joints
   alike; joints rotated out of the image become absent. On the CPU the image first gets a 1-pixel border of that grey
   and the warp clamps its coordinates into it (the same pixels as a fill_value, which doubled the warp's cost).
   Without rotation_range the resize above is used, unchanged.
4. Crop (train with `crop_size: [w, h]` only): a random w x h window (clipped to the scaled image) that contains the
   box of the labelled joints when it fits, else one labelled joint drawn at random. Joints outside the window
   become absent.
   Photometric (train only, each off unless its range is set, each with its own probability): colour (brightness,
   contrast, saturation, hue: one `fn.color_twist`), Gaussian blur (`gaussian_kernel`, sigma in network-input pixels:
   two 1-D `fn.filter` passes, rows then columns, in float32; `fn.gaussian_blur` took 2.3x as long on the CPU and
   cannot leave a sample unblurred, a 1-tap kernel here), motion blur (`fn.filter` with a line kernel,
   `motion_kernel`), Gaussian noise. From the CPU's rotation warp (otherwise from the colour or blur stage) the
   image is float32, unrounded and unsaturated, until the uint8 conversion of step 6 rounds and saturates it once.
   They move no pixel, so the joints are unchanged. Every value is drawn in `sample_params` like the geometry.
   The noise itself (`noise_field`) is drawn by numpy in the source from a seed drawn there and added in
   DALI before the saturating uint8 conversion of step 6: DALI's `fn.noise.gaussian` took 236 ms per 832 x 747 image
   on the CPU (numpy's standard_normal ~18 ms, `noise_field`'s 16-bit lookup in a table of normal quantiles ~4.5 ms,
   in the workers; the add ~1 ms), and its generator's position would depend on the batches run before (not on
   (seed, epoch, sample)).
5. Mirror (train with `mirror: true`): probability 0.5; x' = W' - 1 - x and symmetric joint ids swapped with the
   pairs of `all_joints`.
6. Normalise: subtract mean_pixel (RGB), no division (as the reference); CHW float.
7. Pad: every image of a batch is padded with 0 (after mean subtraction) to the batch's largest height and width
   rounded up to a multiple of 16; `valid_hw` gives the unpadded size so the targets can give the padding zero weight.
   On a GPU DALI does 6 and 7; on the CPU DALI emits the mirrored uint8 CHW samples and the loader subtracts the mean
   into the padded batch itself (same values bit for bit, one write per pixel instead of three).
8. Ignore regions (train on COCO shards only): the source decodes the sample's meta["ignore_rle"] and samples it at the
   output grid's cell centres mapped back through mirror, crop and resize (`ignore_grid`); `Batch.ignore` carries it
   (zero-padded like the images) and training's score loss skips those cells.

Epochs and sharding. Train: each epoch is a permutation of the split derived statelessly from (seed, epoch) (identity
order with `shuffle: false`); rank r of `num_shards` takes positions r, r + num_shards, r + 2 num_shards, ... of it
(so the ranks' i-th batches together are the i-th batch of one process with num_shards x batch_size), and each rank
yields floor(len / num_shards / batch_size) batches per epoch: the remainder is dropped so all ranks stay in
lockstep, and since the permutation changes every epoch no sample is systematically left out. Eval (train=False): no
shuffle, jitter, mirror or crop; rank r takes the r-th contiguous chunk of ceil(len / num_shards) samples and the last
partial batch is padded with rows whose `index` is -1: every sample is seen exactly once, none is dropped.

Back to the source image (eval/predict): a network-input x of a sample maps back as x_s = W' - 1 - x when flipped
(W' = valid width), then x_s += offset_x, then x_src = (x_s + 0.5) * W / floor(W s) - 0.5 (same for y).

Workers are forked (fast start-up) unless CUDA is already initialised in the process, where DALI needs spawn (the
calling script then needs an `if __name__ == "__main__":` guard).

Corrupt images: the source checks each image cheaply (format magic, end marker, header size against the shard's
`size`) and a failure raises `UserError` naming the shard file, its row and the sample index; with `skip_bad=True` the
sample is replaced by the next good one of the epoch (an eval row becomes padding, index -1) and recorded in
`Loader.skipped`. A decode error that slips past the check is mapped back to its sample by decoding the batch again.
"""

from __future__ import annotations

import functools
import io
import math
import multiprocessing as mp
import os
import signal
import statistics
import weakref
from dataclasses import dataclass
from multiprocessing.util import register_after_fork
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from fastpose.config import symmetric_permutation
from fastpose.device import pick_device
from fastpose.errors import UserError
from fastpose.shards import ShardDataset
from fastpose.workers import Watchdog, die_with_parent, exit_reason, on_first_exit

ALIGN = 16  # padded image sizes are multiples of this (the network's output stride)
PREFETCH = 2  # batches DALI prepares ahead (small: start-up and memory matter more than overlap here)
DEATH_BOUND_S = 2.0  # once a worker has died, the longest a wait for a batch may last (see Loader.__iter__)

# Row layout of the per-sample metadata vector that leaves the source (float64: sample indices stay exact).
M_INDEX, M_SCALE, M_FLIP, M_VALID_H, M_VALID_W, M_OFF_X, M_OFF_Y, M_CLAMPED, M_BAD = range(9)
META_LEN = 9
# Row layout of the per-sample graph parameters (float32).
G_RES_W, G_RES_H, G_CROP_X, G_CROP_Y, G_CROP_W, G_CROP_H, G_FLIP = range(7)
G_MATRIX = 7  # rows 7..12: warp_affine's 2 x 3 matrix, output -> input in DALI's coordinates (pixel centres at +0.5)
G_BRIGHTNESS, G_CONTRAST, G_SATURATION, G_HUE = range(13, 17)
GRAPH_LEN = 17
NOISE_SEED_WORDS = 4  # uint32 words seeding a sample's noise generator (128 bits)


class Batch(NamedTuple):
    images: torch.Tensor  # (B, 3, H, W) float32 (or bf16) on the device, mean-subtracted, H and W multiples of 16
    joints: torch.Tensor  # (B, P, K, 3) float32 x, y, present in network-input pixels (after scale, crop and mirror);
    #                       P = max(persons in the batch, max_persons); absent joints and padding rows are all 0
    scale: torch.Tensor  # (B,) float32 the scale applied to each sample
    flipped: torch.Tensor  # (B,) bool
    valid_hw: torch.Tensor  # (B, 2) int32 valid height, width (before padding)
    index: torch.Tensor  # (B,) int64 sample index in the split (-1 for padding rows in eval mode)
    offset: torch.Tensor  # (B, 2) float32 x, y of the crop origin in scaled pixels (0 without crop_size)
    ignore: torch.Tensor | None = None  # (B, 1, h, w) float32: 1 on output cells inside an ignore region (COCO
    #                                     train batches: crowds, no-keypoint persons), h = ceil(H / stride); or None


# ---------------------------------------------------------------------------------------------------------------------
# Pure functions: the plan of an epoch and the per-sample parameters (also used by tests and for error reports).


def batches_per_epoch(n: int, batch_size: int, num_shards: int, train: bool) -> int:
    """Batches one rank yields per epoch (train drops the remainder, eval pads the last batch)."""
    if train:
        return n // num_shards // batch_size
    return math.ceil(math.ceil(n / num_shards) / batch_size)


def epoch_order(n: int, epoch: int, *, seed: int, batch_size: int, shard_id: int = 0, num_shards: int = 1,
                train: bool = True, shuffle: bool = True) -> np.ndarray:
    """(batches * batch_size,) int64 sample indices rank `shard_id` visits in `epoch`, in order; -1 = padding row."""
    rows = batches_per_epoch(n, batch_size, num_shards, train) * batch_size
    if train:
        order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
        # Interleaved: rank r takes positions r, r + num_shards, ... so the ranks' i-th batches together are exactly
        # the i-th batch of one process with num_shards x batch_size (what DDP equivalence needs).
        return order[shard_id::num_shards][:rows].astype(np.int64)
    chunk = math.ceil(n / num_shards)
    mine = np.arange(shard_id * chunk, min((shard_id + 1) * chunk, n), dtype=np.int64)
    return np.concatenate([mine, np.full(rows - len(mine), -1, np.int64)])


@dataclass(frozen=True)
class Augment:
    """The augmentation settings the source needs (plain values: picklable into the workers)."""

    train: bool
    global_scale: float
    jitter_lo: float
    jitter_up: float
    mirror: bool
    max_input_size: int
    crop_w: int  # 0: no crop
    crop_h: int
    seed: int
    perm: tuple[int, ...]  # perm[k] = the joint id k becomes under mirroring
    stride: int = 8  # the network's output stride (cells of the ignore mask)
    ignore: bool = False  # emit the ignore mask of the samples' meta["ignore_rle"] (COCO shards)
    min_input_size: int = 0  # a smaller scaled side is scaled up to this (0: off)
    # Training augmentations beyond the reference's (Config: rotation_range, ...): () = off, else (lo, hi).
    rotation: tuple[float, ...] = ()  # degrees, counter-clockwise as seen
    rotation_p: float = 0.0
    brightness: tuple[float, ...] = ()
    contrast: tuple[float, ...] = ()
    saturation: tuple[float, ...] = ()
    hue: tuple[float, ...] = ()  # degrees
    color_p: float = 0.0
    blur_sigma: tuple[float, ...] = ()  # network-input pixels
    blur_p: float = 0.0
    motion_length: tuple[float, ...] = ()  # network-input pixels
    motion_angle: tuple[float, ...] = (0.0, 180.0)  # degrees
    motion_p: float = 0.0
    noise_std: tuple[float, ...] = ()  # grey levels
    noise_p: float = 0.0
    fill: float = 0.0  # grey level of the area a rotation brings into the image

    def stages(self) -> dict[str, bool]:
        """Which optional DALI stages the graph needs (a stage whose range is off is not built: default configs run
        the reference's graph unchanged)."""
        on = lambda rng, p: bool(self.train and rng and p > 0)  # noqa: E731
        return {"rotate": on(self.rotation, self.rotation_p),
                "color": on(self.brightness or self.contrast or self.saturation or self.hue, self.color_p),
                "blur": on(self.blur_sigma, self.blur_p), "motion": on(self.motion_length, self.motion_p),
                "noise": on(self.noise_std, self.noise_p)}


def augment(cfg, *, train: bool, perm: tuple[int, ...], ignore: bool = False) -> Augment:
    """The `Augment` of a config (train: its jitter, mirror, crop and augmentations; eval: `eval_augment`'s)."""
    if not train:
        return eval_augment(cfg, len(perm))
    crop_w, crop_h = (cfg.crop_size if cfg.crop_size else (0, 0))
    pair = lambda v: tuple(float(x) for x in v)  # noqa: E731
    return Augment(train=True, global_scale=float(cfg.global_scale), jitter_lo=float(cfg.scale_jitter_lo),
                   jitter_up=float(cfg.scale_jitter_up), mirror=bool(cfg.mirror),
                   max_input_size=int(cfg.max_input_size), min_input_size=int(cfg.min_input_size),
                   crop_w=int(crop_w), crop_h=int(crop_h), seed=int(cfg.seed), perm=tuple(perm),
                   stride=int(cfg.stride), ignore=ignore,
                   rotation=pair(cfg.rotation_range), rotation_p=float(cfg.rotation_p),
                   brightness=pair(cfg.brightness_range), contrast=pair(cfg.contrast_range),
                   saturation=pair(cfg.saturation_range), hue=pair(cfg.hue_range), color_p=float(cfg.color_p),
                   blur_sigma=pair(cfg.gaussian_blur_range), blur_p=float(cfg.gaussian_blur_p),
                   motion_length=pair(cfg.motion_blur_range), motion_angle=pair(cfg.motion_blur_angle_range),
                   motion_p=float(cfg.motion_blur_p), noise_std=pair(cfg.gaussian_noise_range),
                   noise_p=float(cfg.gaussian_noise_p), fill=float(np.mean(cfg.mean_pixel)))


@dataclass(frozen=True)
class Params:
    """Every random choice of one sample: scale, resized size, rotation, crop window (in scaled pixels) and flip;
    the photometric values (neutral when off)."""

    scale: float
    clamped: bool
    res_w: int  # floor(W * scale)
    res_h: int
    crop_x: int  # crop origin in the scaled image
    crop_y: int
    crop_w: int  # valid (unpadded) output size
    crop_h: int
    flip: bool
    angle: float = 0.0  # degrees, counter-clockwise as seen, about the scaled image's centre (0: not rotated)
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0  # degrees
    blur_sigma: float = 0.0  # 0: no Gaussian blur
    motion_length: float = 0.0  # 0: no motion blur
    motion_angle: float = 0.0  # degrees
    noise_std: float = 0.0  # 0: no noise
    noise_seed: tuple[int, ...] = ()  # NOISE_SEED_WORDS uint32 seeding the noise (`noise_field`)

    def matrix(self, width: int, height: int) -> np.ndarray:
        """(2, 3) float64 affine from source pixels to network-input pixels before the mirror (scale, rotation, crop;
        the pixel convention above): x_out = A[:, :2] @ x_src + A[:, 2]."""
        rx, ry = self.res_w / width, self.res_h / height
        scale = np.array([[rx, 0.0, 0.5 * rx - 0.5], [0.0, ry, 0.5 * ry - 0.5], [0.0, 0.0, 1.0]])  # (x + .5) r - .5
        rot = np.eye(3)
        rot[:2] = rotation_matrix(self.angle, self.res_w, self.res_h)
        crop = np.array([[1.0, 0.0, -self.crop_x], [0.0, 1.0, -self.crop_y], [0.0, 0.0, 1.0]])
        return (crop @ rot @ scale)[:2]

    def dali_matrix(self, width: int, height: int) -> np.ndarray:
        """(6,) float32 for `fn.warp_affine` (inverse map): output -> source in DALI's coordinates, where a pixel
        centre is at +0.5 (u = x + 0.5)."""
        a = self.matrix(width, height)
        inv = np.linalg.inv(a[:, :2])  # (2, 2)
        # x_src = inv (x_out - t); u = x + 0.5 on both sides.
        offset = 0.5 - inv @ (a[:, 2] + 0.5)
        return np.concatenate([inv, offset[:, None]], axis=1).astype(np.float32).reshape(6)


def rotation_matrix(angle: float, width: int, height: int) -> np.ndarray:
    """(2, 3) float64 rotation by `angle` degrees counter-clockwise as seen (y points down) about the centre
    ((width - 1) / 2, (height - 1) / 2) of an image; multiples of 90 degrees are exact (cos 90 is 0, not 6e-17)."""
    if angle % 90 == 0:
        c, s = [(1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0)][int(angle // 90) % 4]
    else:
        c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    # x' = cx + c (x - cx) + s (y - cy); y' = cy - s (x - cx) + c (y - cy)
    return np.array([[c, s, cx - c * cx - s * cy], [-s, c, cy + s * cx - c * cy]])


def gaussian_kernel(sigma: float) -> np.ndarray:
    """(2 ceil(3 sigma) + 1,) float32 Gaussian weights exp(-x^2 / (2 sigma^2)), normalised (fn.gaussian_blur's
    window); [1] for sigma 0 (no blur)."""
    if sigma <= 0:
        return np.ones(1, np.float32)
    x = np.arange(-math.ceil(3 * sigma), math.ceil(3 * sigma) + 1)
    k = np.exp(-(x**2) / (2.0 * sigma * sigma))
    return (k / k.sum()).astype(np.float32)


def motion_kernel(length: float, angle: float) -> np.ndarray:
    """(k, k) float32 line kernel of `length` pixels at `angle` degrees (counter-clockwise as seen), k odd, summing
    to 1, symmetric about its centre (so convolution and correlation agree): 4 points per pixel along the line,
    each splatted bilinearly. length <= 1 gives [[1]] (no blur)."""
    if length <= 1:
        return np.ones((1, 1), np.float32)
    r = math.ceil((length - 1) / 2)  # (k, k) = (2r + 1, 2r + 1)
    c, s = math.cos(math.radians(angle)), -math.sin(math.radians(angle))  # y down
    n = 2 * math.ceil(2 * (length - 1)) + 1  # odd: the centre is one of the points
    t = np.linspace(-(length - 1) / 2, (length - 1) / 2, n)  # (n,)
    out = np.zeros((2 * r + 1, 2 * r + 1), np.float64)
    # Rounded to 1e-9 px: an end point on a pixel centre (cos 90 = 6e-17) must not reach past the kernel.
    for x, y in zip(np.round(r + t * c, 9), np.round(r + t * s, 9), strict=True):
        x0, y0 = math.floor(x), math.floor(y)
        fx, fy = x - x0, y - y0
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                if wx * wy > 0:
                    out[y0 + dy, x0 + dx] += wx * wy
    out = (out + out[::-1, ::-1]) / 2  # exactly point-symmetric whatever the rounding
    return (out / out.sum()).astype(np.float32)


NOISE_LEVELS = 65536  # noise_field draws one of this many equally likely standard normal quantiles per value


@functools.cache
def normal_quantiles() -> np.ndarray:
    """(NOISE_LEVELS,) float64 standard normal quantiles at the probabilities (i + 0.5) / NOISE_LEVELS (increasing,
    antisymmetric: q[i] = -q[NOISE_LEVELS - 1 - i]; |q| <= 4.33)."""
    inv = statistics.NormalDist().inv_cdf
    half = np.array([inv((i + 0.5) / NOISE_LEVELS) for i in range(NOISE_LEVELS // 2)])  # (NOISE_LEVELS / 2,) < 0
    out = np.concatenate([half, -half[::-1]])
    out.setflags(write=False)  # cached: shared by every call
    return out


def noise_field(p: Params) -> np.ndarray:
    """(crop_h, crop_w, 3) int16 Gaussian noise of sample `p` (std p.noise_std grey levels, rounded: uint8 + round(n)
    = round(uint8 + n)), or (1, 1, 3) zeros (broadcast) when it gets none. A function of its seed alone.

    Each value is a uniform 16-bit draw looked up in the rounded quantiles `normal_quantiles() * noise_std`: the
    rounded Gaussian to within 2^-16 of probability per value, tails cut at 4.33 std. numpy's standard_normal with
    the rounding took 18 ms per 832 x 747 image (2-core AMD EPYC), the raw 64-bit draws and the lookup 4.5 ms; the
    loader's workers and the PIL/numpy baseline draw it alike."""
    if p.noise_std <= 0:
        return np.zeros((1, 1, 3), np.int16)
    gen = np.random.default_rng(list(p.noise_seed))
    levels = np.rint(normal_quantiles() * p.noise_std).astype(np.int16)  # (NOISE_LEVELS,)
    n = p.crop_h * p.crop_w * 3
    words = gen.bit_generator.random_raw((n + 3) // 4).astype("<u8", copy=False)  # (ceil(n / 4),) 64-bit draws
    draws = words.view("<u2")[:n]  # (n,) four 16-bit draws per word, little-endian: the same on every machine
    return np.take(levels, draws).reshape(p.crop_h, p.crop_w, 3)


def sample_params(aug: Augment, epoch: int, index: int, width: int, height: int, joints: np.ndarray) -> Params:
    """Every random choice for sample `index` in `epoch`, drawn from a Generator keyed by (seed, epoch, index)."""
    rng = np.random.default_rng([aug.seed, epoch, max(index, 0)])
    u, coin, cx, cy, ca = rng.random(5)  # always drawn, in this order, so each choice is stable whatever the options
    # The augmentations' draws come after the reference's (which therefore did not change), also always all drawn:
    # coin and value(s) of rotation, colour (4), Gaussian blur, motion blur (length, angle), noise; the noise's seed.
    r_coin, r_u, c_coin, c_b, c_c, c_s, c_h, b_coin, b_u, m_coin, m_u, m_a, n_coin, n_u = rng.random(14)
    noise_seed = tuple(int(w) for w in rng.integers(0, 2**32, NOISE_SEED_WORDS, dtype=np.uint32))
    on = aug.stages()
    draw = lambda rng_, u_: rng_[0] + (rng_[1] - rng_[0]) * u_  # noqa: E731
    angle = draw(aug.rotation, r_u) if on["rotate"] and r_coin < aug.rotation_p else 0.0
    color = on["color"] and c_coin < aug.color_p
    photo = dict(
        brightness=draw(aug.brightness, c_b) if color and aug.brightness else 1.0,
        contrast=draw(aug.contrast, c_c) if color and aug.contrast else 1.0,
        saturation=draw(aug.saturation, c_s) if color and aug.saturation else 1.0,
        hue=draw(aug.hue, c_h) if color and aug.hue else 0.0,
        blur_sigma=draw(aug.blur_sigma, b_u) if on["blur"] and b_coin < aug.blur_p else 0.0,
        motion_length=draw(aug.motion_length, m_u) if on["motion"] and m_coin < aug.motion_p else 0.0,
        motion_angle=draw(aug.motion_angle, m_a) if on["motion"] and m_coin < aug.motion_p else 0.0,
        noise_std=draw(aug.noise_std, n_u) if on["noise"] and n_coin < aug.noise_p else 0.0,
        noise_seed=noise_seed if on["noise"] else ())
    scale = aug.global_scale * (aug.jitter_lo + (aug.jitter_up - aug.jitter_lo) * u if aug.train else 1.0)
    clamped = False
    if aug.min_input_size and min(width, height) * scale < aug.min_input_size:  # too small for the network
        scale, clamped = aug.min_input_size / min(width, height), True
    if math.floor(width * scale) * math.floor(height * scale) > aug.max_input_size**2:  # the memory bound wins
        # floor(W s) floor(H s) <= W H s^2 = max_input_size^2
        scale, clamped = aug.max_input_size / math.sqrt(width * height), True
    res_w, res_h = max(1, math.floor(width * scale)), max(1, math.floor(height * scale))
    crop_x = crop_y = 0
    crop_w, crop_h = res_w, res_h
    if aug.train and aug.crop_w > 0:
        crop_w, crop_h = min(aug.crop_w, res_w), min(aug.crop_h, res_h)
        labelled = joints[..., 2] > 0  # (P, K)
        xy = _resize_xy(joints[labelled][:, :2], width, height, res_w, res_h)  # (J, 2) labelled joints, scaled
        if angle:  # the crop keeps the rotated joints that are still in the image
            xy = _affine_xy(xy, rotation_matrix(angle, res_w, res_h))
            xy = xy[(xy >= -0.5).all(1) & (xy[:, 0] <= res_w - 0.5) & (xy[:, 1] <= res_h - 0.5)]
        anchor = xy[int(ca * len(xy))] if len(xy) else None  # kept in the window when the whole box cannot be
        crop_x = _crop_origin(cx, res_w, crop_w, xy[:, 0], None if anchor is None else anchor[0])
        crop_y = _crop_origin(cy, res_h, crop_h, xy[:, 1], None if anchor is None else anchor[1])
    flip = bool(aug.train and aug.mirror and coin < 0.5)
    return Params(scale, clamped, res_w, res_h, crop_x, crop_y, crop_w, crop_h, flip, angle=angle, **photo)


def _crop_origin(u: float, size: int, crop: int, xs: np.ndarray, anchor: float | None) -> int:
    """A crop origin in [0, size - crop], drawn with u in [0, 1) among those that keep all points `xs` in the window
    or, when they span more than the window, among those that keep the point `anchor` in it."""

    def keep(lo_x: float, hi_x: float) -> tuple[int, int]:
        # The window [o - 0.5, o + crop - 0.5] holds x when x - crop + 0.5 <= o <= x + 0.5.
        return max(0, math.ceil(hi_x - crop + 0.5)), min(size - crop, math.floor(lo_x + 0.5))

    lo, hi = 0, size - crop
    if len(xs):
        lo, hi = keep(float(xs.min()), float(xs.max()))
        if lo > hi and anchor is not None:
            lo, hi = keep(anchor, anchor)
        if lo > hi:  # a point outside the image: any window
            lo, hi = 0, size - crop
    return int(lo + math.floor(u * (hi - lo + 1)))


def _resize_xy(xy: np.ndarray, width: int, height: int, res_w: int, res_h: int) -> np.ndarray:
    out = np.empty_like(xy, dtype=np.float32)
    out[:, 0] = (xy[:, 0] + 0.5) * (res_w / width) - 0.5
    out[:, 1] = (xy[:, 1] + 0.5) * (res_h / height) - 0.5
    return out


def _affine_xy(xy: np.ndarray, a: np.ndarray) -> np.ndarray:
    """(J, 2) points through the (2, 3) affine `a` (float64 arithmetic), float32."""
    return (xy.astype(np.float64) @ a[:, :2].T + a[:, 2]).astype(np.float32)


def transform_joints(joints: np.ndarray, width: int, height: int, p: Params, perm: tuple[int, ...]) -> np.ndarray:
    """(P, K, 3) x, y, visibility in the source image -> (P, K, 3) x, y, present in the network input."""
    out = np.zeros(joints.shape, np.float32)
    if joints.shape[0] == 0:
        return out
    present = joints[..., 2] > 0  # (P, K)
    flat = joints[..., :2].reshape(-1, 2)
    if p.angle:  # the one affine of the image (scale, rotation, crop), in float64
        xy = _affine_xy(flat, p.matrix(width, height)).reshape(*joints.shape[:2], 2)  # (P, K, 2)
    else:  # the reference's arithmetic, kept bit for bit
        xy = _resize_xy(flat, width, height, p.res_w, p.res_h).reshape(*joints.shape[:2], 2)  # (P, K, 2)
        xy[..., 0] -= p.crop_x
        xy[..., 1] -= p.crop_y
    # Joints the crop cut away or the rotation turned out of the image are absent (the window spans
    # [-0.5, crop - 0.5]).
    inside = ((xy[..., 0] >= -0.5) & (xy[..., 0] <= p.crop_w - 0.5)
              & (xy[..., 1] >= -0.5) & (xy[..., 1] <= p.crop_h - 0.5))  # (P, K)
    if p.crop_w != p.res_w or p.crop_h != p.res_h or p.angle:
        present &= inside
    if p.flip:
        xy[..., 0] = p.crop_w - 1 - xy[..., 0]
        order = list(perm)
        xy, present = xy[:, order], present[:, order]  # joint k of the mirrored image was joint perm[k]
    out[..., :2] = np.where(present[..., None], xy, 0.0)
    out[..., 2] = present
    return out


def ignore_grid(rles: list[dict], width: int, height: int, p: Params, stride: int) -> np.ndarray:
    """(ceil(crop_h / stride), ceil(crop_w / stride)) uint8: 1 where an output cell's centre falls in an ignore region.

    rles: the sample's meta["ignore_rle"] (COCO compressed RLE with str counts, [h, w] = the sample's size). Each cell
    centre (i * stride + stride / 2, j * stride + stride / 2) of the network input is mapped back to the sample's pixels
    (undo mirror, crop and resize, as `transform_joints` does forwards) and looks up the nearest pixel of the union of
    the regions; centres outside the image are 0.
    """
    gh, gw = math.ceil(p.crop_h / stride), math.ceil(p.crop_w / stride)
    out = np.zeros((gh, gw), np.uint8)
    if not rles:
        return out
    from pycocotools import mask as mask_utils  # imported here: only COCO workers need it

    coded = [{"size": [int(v) for v in r["size"]], "counts": r["counts"].encode() if isinstance(r["counts"], str)
              else r["counts"]} for r in rles]
    region = mask_utils.decode(mask_utils.merge(coded))  # (height, width) uint8
    x = np.arange(gw) * stride + stride / 2.0  # (gw,) network-input centres
    y = np.arange(gh) * stride + stride / 2.0  # (gh,)
    if p.flip:
        x = p.crop_w - 1 - x
    if p.angle:  # not separable: every centre back through the inverse of the affine
        a = p.matrix(width, height)
        grid = np.stack(np.broadcast_arrays(x[None, :], y[:, None]), -1) - a[:, 2]  # (gh, gw, 2)
        src = grid @ np.linalg.inv(a[:, :2]).T  # (gh, gw, 2) sample pixels
        col, row = np.floor(src[..., 0] + 0.5).astype(np.int64), np.floor(src[..., 1] + 0.5).astype(np.int64)
        inside = (col >= 0) & (col < region.shape[1]) & (row >= 0) & (row < region.shape[0])  # (gh, gw)
        out[inside] = region[row[inside], col[inside]]
        return out
    x = (x + p.crop_x + 0.5) * (width / p.res_w) - 0.5  # sample pixels
    y = (y + p.crop_y + 0.5) * (height / p.res_h) - 0.5
    col, row = np.floor(x + 0.5).astype(np.int64), np.floor(y + 0.5).astype(np.int64)  # pixel i covers [i-0.5, i+0.5)
    cols_in, rows_in = (col >= 0) & (col < region.shape[1]), (row >= 0) & (row < region.shape[0])
    inside = rows_in[:, None] & cols_in[None, :]  # (gh, gw)
    out[inside] = region[np.clip(row, 0, region.shape[0] - 1)[:, None],
                         np.clip(col, 0, region.shape[1] - 1)[None, :]][inside]
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Image checks.

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_image(data: bytes, size: tuple[int, int, int]) -> str | None:
    """Why `data` cannot be the image of shard size (C, H, W), or None when it looks fine (a cheap header check)."""
    if len(data) < 16:
        return f"the image holds only {len(data)} bytes"
    if data[:3] == b"\xff\xd8\xff":
        if data.rfind(b"\xff\xd9") < 3:
            return "the JPEG data has no end marker (truncated)"
    elif data[:8] == _PNG_MAGIC:
        if b"IEND" not in data[-64:]:
            return "the PNG data has no IEND chunk (truncated)"
    from PIL import Image  # imported here: only the workers need it

    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except Exception as e:  # PIL raises many types for unreadable headers
        return f"the image header cannot be read ({type(e).__name__}: {e})"
    if (h, w) != (int(size[1]), int(size[2])):
        return f"the image is {w}x{h} but the shard says {size[2]}x{size[1]} (W x H)"
    return None


def decode_rgb(data: bytes) -> np.ndarray | None:
    """Encoded image bytes (PNG, JPEG, ... as OpenCV reads them) -> (H, W, 3) uint8 RGB, or None when they do not
    decode. The one CPU decoder outside DALI: inference inputs, the assembly fit, the demo's pictures, bad-sample
    checks."""
    import cv2  # imported here: only workers and inference need it

    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if len(data) else None
    except cv2.error:
        return None
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def decode_check(data: bytes) -> str | None:
    """Why `data` cannot be decoded (full decode with OpenCV), or None."""
    return None if decode_rgb(data) is not None else "the image cannot be decoded"


def eval_augment(cfg, num_joints: int = 0) -> Augment:
    """The evaluation geometry of a config: scale = global_scale clamped by min/max_input_size, no jitter, mirror or
    crop (what `fastpose eval` and every inference path apply)."""
    return Augment(train=False, global_scale=float(cfg.global_scale), jitter_lo=1.0, jitter_up=1.0, mirror=False,
                   max_input_size=int(cfg.max_input_size), min_input_size=int(cfg.min_input_size), crop_w=0,
                   crop_h=0, seed=int(cfg.seed), perm=tuple(range(num_joints)), stride=int(cfg.stride))


def _bad_sample_error(ds: ShardDataset, index: int, reason: str) -> UserError:
    shard, row = ds.locate(index)
    return UserError(f"{ds.shard_path(shard)}: sample {index} (row {row} of that shard, split '{ds.split}') is a "
                     f"corrupt image: {reason}. Convert the dataset again from intact source images (`fastpose "
                     f"convert --skip-bad` leaves unreadable entries out), or pass skip_bad=True to skip such samples.")


# ---------------------------------------------------------------------------------------------------------------------
# The external source.


class _Source:
    """Per-sample callable for a parallel `fn.external_source`; picklable (ShardDataset opens h5py lazily)."""

    def __init__(self, ds: ShardDataset, aug: Augment, *, batch_size: int, shard_id: int, num_shards: int,
                 shuffle: bool, start_epoch: int, start_batch: int, skip_bad: bool):
        self.ds, self.aug = ds, aug
        self.batch_size, self.shard_id, self.num_shards, self.shuffle = batch_size, shard_id, num_shards, shuffle
        self.start_epoch, self.start_batch, self.skip_bad = start_epoch, start_batch, skip_bad
        self._order: tuple[int, np.ndarray] | None = None
        self._sizes: np.ndarray | None = None  # (N, 3) read lazily in the worker
        # The workers die with the process that built the pipeline (fastpose/workers.py), bound as early as each start
        # method allows: a forked worker right after the fork (before it waits for its first task, so one killed
        # between build and the first batch is no orphan either), a spawned one when it unpickles this source.
        self.parent_pid = os.getpid()
        register_after_fork(self, _Source._bind)

    def _bind(self) -> None:
        die_with_parent(self.parent_pid, "data worker")

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._bind()  # a spawned worker unpickles its source at start; no-op in the process that built the pipeline

    def order(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:  # one permutation per epoch per worker
            self._order = (epoch, epoch_order(len(self.ds), epoch, seed=self.aug.seed, batch_size=self.batch_size,
                                              shard_id=self.shard_id, num_shards=self.num_shards,
                                              train=self.aug.train, shuffle=self.shuffle))
        return self._order[1]

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, position in that epoch's order) of the `step`-th sample this source emits.

        One endless stream: epochs follow each other without a StopIteration, so DALI keeps prefetching across an
        epoch boundary (a reset drained the pipeline and cost ~a batch of latency per epoch: ~10% on 55 samples).
        """
        rows = batches_per_epoch(len(self.ds), self.batch_size, self.num_shards, self.aug.train) * self.batch_size
        g = self.start_batch * self.batch_size + step
        return self.start_epoch + g // rows, g % rows

    def __call__(self, info):
        self._bind()  # done at the worker's start already; a no-op here unless a start method escaped both hooks
        epoch, pos = self.position(info.idx_in_epoch)  # the pipeline is never reset: one "DALI epoch" for all
        order = self.order(epoch)
        index = int(order[pos])
        padding = index < 0
        if padding:  # eval padding row: any real sample, reported as index -1
            index = int(order[0]) if order[0] >= 0 else 0
        image, size = self.ds.image_bytes(index), self.size(index)
        bad = -1
        reason = check_image(image, size)
        if reason is not None:
            # Never raise here: DALI would re-raise a plain Exception wrapping the worker's traceback. The parent
            # sees `bad` in the metadata and raises the UserError itself (or counts the skip with skip_bad).
            bad, (image, index) = index, self._substitute(order, pos)
            padding = padding or not self.aug.train
        _, h, w = self.size(index)
        src = np.asarray(self.ds.joints(index), np.float32)  # (P, K, 3)
        p = sample_params(self.aug, epoch, index, w, h, src)
        joints = transform_joints(src, w, h, p, self.aug.perm)
        if joints.shape[0] == 0 or padding:  # one all-absent person: no shape is empty, padding rows teach nothing
            joints = np.zeros((1, *joints.shape[1:]), np.float32)
        graph = np.zeros(GRAPH_LEN, np.float32)  # (GRAPH_LEN,)
        graph[:G_MATRIX] = [p.res_w, p.res_h, p.crop_x, p.crop_y, p.crop_w, p.crop_h, p.flip]
        stages = self.aug.stages()
        if stages["rotate"]:
            graph[G_MATRIX:G_MATRIX + 6] = p.dali_matrix(w, h)
        graph[G_BRIGHTNESS:] = [p.brightness, p.contrast, p.saturation, p.hue]
        meta = np.array([-1 if padding else index, p.scale, p.flip, p.crop_h, p.crop_w, p.crop_x, p.crop_y,
                         p.clamped, bad], np.float64)
        out = [np.frombuffer(image, np.uint8), joints, graph, meta]
        if self.aug.ignore:
            rles = [] if padding else self.ignore_rles(index)
            out.append(ignore_grid(rles, w, h, p, self.aug.stride))
        if stages["blur"]:
            g = gaussian_kernel(p.blur_sigma)
            out += [g[None, :], np.ascontiguousarray(g[:, None])]  # (1, k) and (k, 1) float32, [[1]] when off
        if stages["motion"]:
            out.append(motion_kernel(p.motion_length, p.motion_angle))  # (k, k) float32, [[1]] when off
        if stages["noise"]:
            out.append(noise_field(p))  # (crop_h, crop_w, 3) int16, (1, 1, 3) zeros without noise
        return tuple(out)

    def ignore_rles(self, index: int) -> list[dict]:
        """meta["ignore_rle"] of a sample: reads only its meta string (not the whole sample with its image)."""
        return self.ds.meta(index).get("ignore_rle", [])

    def size(self, index: int) -> np.ndarray:
        """(3,) C, H, W of a sample; the column is read once per worker (reading whole samples costs ~2 ms each)."""
        if self._sizes is None:
            self._sizes = self.ds.column("size").reshape(-1, 3)
        return self._sizes[index]

    def _substitute(self, order: np.ndarray, pos: int):
        """The next sample of this epoch's order (wrapping) that passes the check: (image bytes, index)."""
        n = len(order)
        for step in range(1, n + 1):
            index = int(order[(pos + step) % n])
            if index < 0:
                continue
            image = self.ds.image_bytes(index)
            if check_image(image, self.size(index)) is None:
                return image, index
        raise UserError(f"{self.ds.root}: no sample of split '{self.ds.split}' on this rank holds a readable image; "
                        f"the dataset is corrupt. Convert it again.")


# ---------------------------------------------------------------------------------------------------------------------
# The DALI graph and the loader.


def _build_pipeline(source: _Source, *, batch_size: int, num_threads: int, num_workers: int, device_id: int | None,
                    seed: int, crop: bool, mean: list[float], ignore: bool = False, fill: float = 0.0,
                    rotate: bool = False, color: bool = False, blur: bool = False, motion: bool = False,
                    noise: bool = False):
    from nvidia.dali import fn, types
    from nvidia.dali import math as dali_math
    from nvidia.dali.pipeline import Pipeline

    gpu = device_id is not None
    # fork starts workers fast, but cannot follow an initialised CUDA context; spawn then (needs a __main__ guard).
    # FASTPOSE_WORKER_START=spawn forces it, so the GPU's start method can be tested on a CPU machine.
    start = os.environ.get("FASTPOSE_WORKER_START") or ("spawn" if gpu and torch.cuda.is_initialized() else "fork")
    if start not in ("fork", "spawn"):
        raise UserError(f"FASTPOSE_WORKER_START={start}: allowed values are fork and spawn.")
    pipe = Pipeline(batch_size=batch_size, num_threads=num_threads, device_id=device_id, seed=seed,
                    py_num_workers=max(num_workers, 1), py_start_method=start, prefetch_queue_depth=PREFETCH,
                    exec_dynamic=True)
    with pipe:
        # The source's outputs: image bytes, joints, graph, meta, then those the enabled stages need, in this order.
        extra = [types.UINT8] * ignore + [types.FLOAT] * (2 * blur + motion) + [types.INT16] * noise
        data, joints, graph, meta, *rest = fn.external_source(
            source=source, num_outputs=4 + len(extra), batch=False, parallel=num_workers > 0,
            **({"prefetch_queue_depth": PREFETCH} if num_workers > 0 else {}),  # parallel sources only
            dtype=[types.UINT8, types.FLOAT, types.FLOAT, types.FLOAT64] + extra)
        ignore_mask, rest = rest[:ignore], rest[ignore:]
        blur_rows, blur_cols, rest = (*rest[:2], rest[2:]) if blur else (None, None, rest)  # (1, k), (k, 1) float32
        kernel, rest = (rest[0], rest[1:]) if motion else (None, rest)  # (k, k) float32 line kernel per sample
        noise_hwc = rest[0] if noise else None  # (h, w, 3) or (1, 1, 3) int16 per sample
        images = fn.decoders.image(data, device="mixed" if gpu else "cpu", output_type=types.RGB)  # (H, W, 3) uint8
        if rotate:  # scale, rotation and crop in one resampling; size is (H, W)
            shift = 0.0 if gpu else 1.0  # source pixels added on the left and top below (CPU)
            matrix = fn.stack(fn.stack(graph[G_MATRIX], graph[G_MATRIX + 1], graph[G_MATRIX + 2] + shift),
                              fn.stack(graph[G_MATRIX + 3], graph[G_MATRIX + 4], graph[G_MATRIX + 5] + shift))  # (2, 3)
            size = fn.stack(graph[G_CROP_H], graph[G_CROP_W])
            if gpu:
                images = fn.warp_affine(images, matrix=matrix, size=size, fill_value=fill,
                                        interp_type=types.INTERP_LINEAR)  # (h, w, 3) uint8
            else:
                # CPU warp_affine with a fill_value took 36 ms per 832 x 747 image against 17 ms with clamped
                # coordinates (2-core AMD EPYC, one thread). So: a 1-pixel border of the fill grey (fn.cat of grey
                # columns and rows: 2.1 ms; fn.slice with out_of_bounds_policy="pad" took 3.2 ms), then the clamped
                # warp, whose clamped taps read that border: the same bilinear blend with the fill at the edge and the
                # fill beyond it (measured: equal but for float rounding of the shifted offsets, at most 1 grey level
                # on ~30 of 1.5 M values). Whole pipeline, every augmentation: ~15 ms less CPU per image.
                hwc = images.shape(dtype=types.INT32)  # (3,) H, W, C
                grey = fn.constant(idata=[int(np.clip(np.rint(fill), 0, 255))], shape=[1], dtype=types.UINT8)
                column = fn.full(grey, shape=fn.stack(hwc[0], 1, 3), layout="HWC")  # (H, 1, 3) uint8
                row = fn.full(grey, shape=fn.stack(1, hwc[1] + 2, 3), layout="HWC")  # (1, W + 2, 3) uint8
                images = fn.cat(row, fn.cat(column, images, column, axis=1), row, axis=0)  # (H + 2, W + 2, 3) uint8
                # float32 out, rounded once at the end: DALI's float -> uint8 conversion is a roundf call per value
                # on the CPU; the warp took 3.5 ms with uint8 out against 2.1 ms with float32 (300 x 320 image, one
                # thread), and the final conversion from float32 costs 0.7 ms more than from uint8.
                images = fn.warp_affine(images, matrix=matrix, size=size, dtype=types.FLOAT,
                                        interp_type=types.INTERP_LINEAR)  # (h, w, 3) float32
        else:
            images = fn.resize(images, resize_x=graph[G_RES_W], resize_y=graph[G_RES_H],
                               interp_type=types.INTERP_LINEAR, antialias=True)
            if crop:
                images = fn.slice(images, fn.stack(graph[G_CROP_X], graph[G_CROP_Y]),
                                  fn.stack(graph[G_CROP_W], graph[G_CROP_H]), axis_names="WH",
                                  normalized_anchor=False, normalized_shape=False)  # absolute pixels
        cpu_mean = [0.0, 0.0, 0.0]  # (3,) subtracted by the CPU's final conversion: minus the colour offset below
        if color:  # neutral values (1, 1, 1, 0) leave a sample unchanged; float32 out (uint8 -> uint8: 2.9 ms per
            # 300 x 320 image on the CPU, one thread; uint8 -> float32 1.1 ms, float32 -> float32 1.3 ms)
            images = fn.color_twist(images, brightness=graph[G_BRIGHTNESS], contrast=graph[G_CONTRAST],
                                    saturation=graph[G_SATURATION], hue=graph[G_HUE], dtype=types.FLOAT)
            if rotate and not gpu:
                # color_twist centres the contrast on half the input type's range: 128 for uint8, 0.5 for the warp's
                # float32. On float input it gives b (c M x + 0.5 (1 - c)) instead of b (c M x + 128 (1 - c)): a
                # grey offset b (1 - c) 127.5, which the linear stages after it (normalised blur kernels, the noise
                # add) carry unchanged, so the final conversion adds it (its mean, before rounding and saturating).
                offset = graph[G_BRIGHTNESS] * (1.0 - graph[G_CONTRAST]) * 127.5
                cpu_mean = fn.stack(-offset, -offset, -offset)
        # Measured on the CPU and dropped (2-core AMD EPYC, one thread, per 832 x 747 image): one 2-D filter for the
        # Gaussian and motion blur together (a 2-D 11 x 11 Gaussian alone took 14 ms against 3.6 ms for the two 1-D
        # passes and 3-5 ms for the line kernel, whose zero taps OpenCV's filter already skips); rounding and
        # saturating between stages with DALI arithmetic ops (as costly as the conversion it would replace: the
        # stages now stay float32 instead); fn.filter cannot output uint8 from float32; fn.coord_transform
        # (14 ms) and fn.hsv (13 ms) are no cheaper than color_twist (11 ms); fn.rotate (33 ms) no cheaper than the
        # padded warp.
        if blur:  # separable, float32 from here on (one rounding, in the conversion below)
            if not (gpu or rotate or color):  # uint8 only straight from the resize. OpenCV's uint8 -> float32
                # filter is scalar code: the cast + float32 filter 2.0 ms, it 2.6 ms
                images = fn.cast(images, dtype=types.FLOAT)
            images = fn.filter(images, blur_rows, border="reflect_101", dtype=types.FLOAT)
            images = fn.filter(images, blur_cols, border="reflect_101")
        if motion:
            images = fn.filter(images, kernel, border="reflect_101")
        if noise:  # (h, w, 3) int16 or float32 = image + noise
            images = images + (noise_hwc.gpu() if gpu else noise_hwc)
        if gpu and (color or noise):  # values past [0, 255] come only from these two (the blurs' kernels are
            # positive and sum to 1); the CPU's uint8 conversion below saturates, the GPU's float output does not
            images = dali_math.clamp(images, 0, 255)
        flip = fn.cast(graph[G_FLIP], dtype=types.INT32)
        if gpu:
            images = fn.crop_mirror_normalize(images, mirror=flip, mean=mean, std=[1.0, 1.0, 1.0], dtype=types.FLOAT,
                                              output_layout="CHW")  # (3, H, W) float32
            images = fn.pad(images, axis_names="HW", align=[ALIGN, ALIGN], fill_value=0.0)  # (3, H16, W16)
        else:
            # On the CPU, normalising and padding in DALI writes the float batch twice and the parent copies it once
            # more (DALI reuses its buffers). Emit mirrored uint8 CHW samples (a quarter of the bytes) instead;
            # `Loader._images_cpu` subtracts the mean straight into the padded float batch. Measured on a 2-core CPU
            # (batch 8, JPEG 832x747): DALI's threads ~105 -> ~83 ms of CPU per batch, the parent's share unchanged.
            images = fn.crop_mirror_normalize(images, mirror=flip, mean=cpu_mean, std=[1.0, 1.0, 1.0],
                                              dtype=types.UINT8, output_layout="CHW")  # (3, H, W) uint8, rounded
        pipe.set_outputs(images, joints, meta, *ignore_mask)  # ignore_mask: (gh, gw) uint8 per sample, or none
    pipe.build()
    return pipe


def _weak(method):
    """`method` (bound) as a callable that does not keep its object alive (None once the object is gone)."""
    ref = weakref.WeakMethod(method)

    def call():
        bound = ref()
        return None if bound is None else bound()

    return call


class Loader:
    """Iterable of `Batch` over one split for one rank; each `iter()` runs one epoch from the current position."""

    def __init__(self, ds: ShardDataset, aug: Augment, *, batch_size: int, shard_id: int, num_shards: int,
                 shuffle: bool, device: torch.device, num_threads: int, num_workers: int, start_epoch: int,
                 start_batch: int, skip_bad: bool, max_persons: int, dtype: torch.dtype, channels_last: bool,
                 mean: list[float], worker_timeout: float = 0.0):
        self.ds, self.aug, self.batch_size = ds, aug, batch_size
        self.shard_id, self.num_shards, self.shuffle = shard_id, num_shards, shuffle
        self.device, self.dtype, self.channels_last, self.max_persons = device, dtype, channels_last, max_persons
        self.skip_bad = skip_bad
        self._mean = np.asarray(mean, np.float32).reshape(3, 1, 1)  # (3, 1, 1) RGB: CPU batches subtract it here
        self._len = batches_per_epoch(len(ds), batch_size, num_shards, aug.train)
        if self._len == 0:
            raise UserError(f"{ds.root}: split '{ds.split}' has {len(ds)} samples, too few for {num_shards} rank(s) "
                            f"x batch_size {batch_size} (a train epoch drops the remainder). Lower batch_size or add "
                            f"samples.")
        start_epoch += start_batch // self._len  # a position at the end of an epoch is the start of the next
        start_batch %= self._len
        self.epoch, self.batch = start_epoch, start_batch
        self.clamped = 0
        self.skipped: list[int] = []  # sample indices replaced because their image is corrupt (skip_bad)
        self._source = _Source(ds, aug, batch_size=batch_size, shard_id=shard_id, num_shards=num_shards,
                               shuffle=shuffle, start_epoch=start_epoch, start_batch=start_batch, skip_bad=skip_bad)
        device_id = None
        if device.type == "cuda":
            device_id = device.index if device.index is not None else torch.cuda.current_device()
        # DALI's workers are this process's multiprocessing children; the ones that appear during the build are ours
        # (another loader of this process has its own), watched to name the one that died.
        before = {p.pid for p in mp.active_children()}
        self._pipe = _build_pipeline(self._source, batch_size=batch_size, num_threads=num_threads,
                                     num_workers=num_workers, device_id=device_id, seed=aug.seed,
                                     crop=aug.train and aug.crop_w > 0, mean=mean, ignore=aug.ignore,
                                     fill=aug.fill, **aug.stages())
        self.workers = sorted((p for p in mp.active_children() if p.pid not in before), key=lambda p: p.pid)
        self.worker_timeout = worker_timeout
        self._stopped: set[int] = set()  # pids of workers the watchdog killed (not the cause of the failure)
        # The watchdog's threads hold the loader weakly: a loader dropped without close() is still collected (and its
        # pipeline with the workers stopped), as before.
        self._watchdog = Watchdog(worker_timeout, _weak(self._kill_workers), _weak(self._failure_message))
        weakref.finalize(self, self._watchdog.close)
        # Usually DALI fails the wait itself when a worker dies (its observer closes the result queue), but a worker
        # killed while it held the task queue's lock leaves run() stuck in Condition.notify for good: once one dies,
        # no wait may last more than DEATH_BOUND_S (then the watchdog ends the process with _failure_message).
        watchdog = self._watchdog
        on_first_exit(self.workers, lambda: watchdog.cut(DEATH_BOUND_S))

    def __len__(self) -> int:
        return self._len

    def __iter__(self):
        while self.batch < self._len:
            self._watchdog.start()  # a bounded wait: a stuck worker ends in _timeout_message, not in a hang
            try:
                outputs = self._pipe.run()
            except StopIteration:  # the source is endless; a bug if it happens
                raise RuntimeError(f"the DALI pipeline ended in epoch {self.epoch} at batch {self.batch}") from None
            except UserError:
                raise
            except Exception as e:
                # A dead worker makes DALI's pool observer close the result queue: "Worker data receiving interrupted".
                if self._watchdog.fired or self._dead_worker_message() is not None:
                    raise UserError(self._failure_message()) from None
                raise self._explain(e) from e
            finally:
                self._watchdog.stop()
            batch = self._to_batch(outputs)
            self.batch += 1
            yield batch
        # The source's stream goes straight on into the next epoch (`_Source.position`): no StopIteration, no reset.
        self.epoch += 1
        self.batch = 0

    def _to_batch(self, outputs) -> Batch:
        images_tl, joints_tl, meta_tl, *ignore_tl = outputs
        meta = np.array(meta_tl.as_tensor())  # (B, META_LEN)
        self.clamped += int(meta[meta[:, M_INDEX] >= 0, M_CLAMPED].sum())  # padding rows are not samples
        for bad in meta[:, M_BAD]:
            if bad >= 0 and not self.skip_bad:
                index = int(bad)
                reason = check_image(self.ds.image_bytes(index), self._source.size(index))
                raise _bad_sample_error(self.ds, index, reason or "the check failed in the worker")
            if bad >= 0:
                self.skipped.append(int(bad))
        # Joints: pad persons to the batch maximum (at least max_persons).
        per = [np.array(joints_tl[i]) for i in range(len(joints_tl))]  # (P_i, K, 3)
        p_max = max(self.max_persons, *(j.shape[0] for j in per))
        joints = np.zeros((len(per), p_max, *per[0].shape[1:]), np.float32)  # (B, P, K, 3)
        for i, j in enumerate(per):
            joints[i, :j.shape[0]] = j
        images = self._images(images_tl)
        dev = self.device
        ignore = None
        if ignore_tl:  # per-sample (gh, gw) masks, zero-padded like the images to (ceil(H / stride), ceil(W / stride))
            masks = [np.array(ignore_tl[0][i]) for i in range(len(ignore_tl[0]))]
            gh = max(math.ceil(images.shape[-2] / self.aug.stride), *(m.shape[0] for m in masks))
            gw = max(math.ceil(images.shape[-1] / self.aug.stride), *(m.shape[1] for m in masks))
            padded = np.zeros((len(masks), 1, gh, gw), np.float32)  # (B, 1, h, w)
            for i, m in enumerate(masks):
                padded[i, 0, :m.shape[0], :m.shape[1]] = m
            ignore = torch.from_numpy(padded).to(dev)
        return Batch(
            images=images,
            joints=torch.from_numpy(joints).to(dev),
            scale=torch.from_numpy(meta[:, M_SCALE].astype(np.float32)).to(dev),
            flipped=torch.from_numpy(meta[:, M_FLIP] > 0).to(dev),
            valid_hw=torch.from_numpy(meta[:, [M_VALID_H, M_VALID_W]].astype(np.int32)).to(dev),
            index=torch.from_numpy(meta[:, M_INDEX].astype(np.int64)).to(dev),
            offset=torch.from_numpy(meta[:, [M_OFF_X, M_OFF_Y]].astype(np.float32)).to(dev),
            ignore=ignore,
        )

    def _images(self, tl) -> torch.Tensor:
        if self.device.type != "cuda":
            return self._images_cpu(tl)
        tensor = tl.as_tensor()  # (B, 3, H, W) float32
        from nvidia.dali.plugin.pytorch import feed_ndarray

        out = torch.empty(tensor.shape(), dtype=torch.float32, device=self.device)
        feed_ndarray(tensor, out, cuda_stream=torch.cuda.current_stream(self.device))
        if self.dtype != torch.float32:
            out = out.to(self.dtype)
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out

    def _images_cpu(self, tl) -> torch.Tensor:
        """Per-sample (3, H_i, W_i) uint8 -> (B, 3, H16, W16) mean-subtracted, zero-padded, written once per pixel.

        numpy rather than torch: torch's intra-op threads spin against DALI's for the two cores (measured: ~40 ms of
        CPU per batch lost), and numpy asks the kernel for huge pages for a batch this large (torch.empty does not),
        which makes faulting in the fresh tens of MB ~3x cheaper. A fresh batch each time: the caller may keep it.
        """
        shapes = [tl[i].shape() for i in range(len(tl))]
        h = math.ceil(max(s[1] for s in shapes) / ALIGN) * ALIGN
        w = math.ceil(max(s[2] for s in shapes) / ALIGN) * ALIGN
        out = np.empty((len(shapes), 3, h, w), np.float32)  # (B, 3, H16, W16)
        for i, (_, hi, wi) in enumerate(shapes):
            np.subtract(np.asarray(tl[i]), self._mean, out=out[i, :, :hi, :wi])  # a view of DALI's buffer, read now
            out[i, :, hi:] = 0
            out[i, :, :hi, wi:] = 0
        images = torch.from_numpy(out)
        if self.dtype != torch.float32:
            images = images.to(self.dtype)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def _explain(self, error: Exception) -> Exception:
        """Map a DALI error (a decode failure) back to the sample that caused it, by decoding this batch again."""
        # This batch and the ones DALI may have prefetched (the error can surface while they are being prepared),
        # which may lie in the next epoch: the source's stream runs on across epochs.
        rows = []
        for b in range(self.batch, self.batch + 1 + PREFETCH):
            order, k = self._source.order(self.epoch + b // self._len), b % self._len
            rows.extend(order[k * self.batch_size:(k + 1) * self.batch_size])
        for index in rows:
            if index < 0:
                continue
            reason = decode_check(self.ds.image_bytes(int(index)))
            if reason is not None:
                return _bad_sample_error(self.ds, int(index), reason)
        return error

    def _what(self) -> str:
        return (f"the {'training' if self.aug.train else 'evaluation'} data loader of {self.ds.root} (split "
                f"'{self.ds.split}')")

    def _dead_worker_message(self) -> str | None:
        """The paragraph for a worker that died (killed, or crashed in a native library), or None if all live."""
        dead = [(i, p) for i, p in enumerate(self.workers)
                if p.exitcode is not None and p.pid not in self._stopped]  # exitcode polls (WNOHANG)
        if not dead:
            return None
        # DALI's observer stops the other workers with SIGTERM once one has died: name the first cause.
        i, p = next(((i, p) for i, p in dead if p.exitcode != -signal.SIGTERM), dead[0])
        if p.exitcode == -signal.SIGKILL:
            hint = ("SIGKILL usually comes from the out-of-memory killer (see `dmesg`) or kill -9: lower num_workers, "
                    "batch_size or max_input_size if memory is short")
        elif p.exitcode in (-signal.SIGSEGV, -signal.SIGBUS, -signal.SIGABRT, -signal.SIGILL):
            hint = ("a crash in a native library (image decoder, h5py): check the shards with `fastpose info "
                    f"{self.ds.root} --verify`, and report it with the sample position if it repeats")
        else:
            hint = "check the log for the cause"
        return (f"Data worker {i + 1} of {len(self.workers)} (pid {p.pid}) of {self._what()} {exit_reason(p.exitcode)} "
                f"when batch {self.batch} of epoch {self.epoch} was due, so no more batches can come; "
                f"the other workers were stopped. {hint[0].upper()}{hint[1:]}. Then run the command again (training: "
                f"`fastpose train CONFIG --resume` continues from the newest snapshot).")

    def _failure_message(self) -> str:
        return self._dead_worker_message() or self._timeout_message()

    def _timeout_message(self) -> str:
        pids = ", ".join(str(p.pid) for p in self.workers) or "none: the loader has no worker processes"
        return (f"No batch came from {self._what()} for {self.worker_timeout:g} s (worker_timeout) at batch "
                f"{self.batch} of epoch {self.epoch}: a data worker (pids {pids}) is stuck, e.g. on a hung read from "
                f"network storage or a deadlock in a native library; the workers were stopped. Check the dataset's "
                f"storage and `fastpose info {self.ds.root} --verify`; if batches really take that long, raise "
                f"worker_timeout in the config (0 waits forever). Then run the command again (training: `fastpose "
                f"train CONFIG --resume` continues from the newest snapshot).")

    def _kill_workers(self) -> None:
        """The watchdog's way to end a stuck wait: DALI's observer sees the workers die and fails the wait."""
        for p in self.workers:
            if p.exitcode is None:
                self._stopped.add(p.pid)
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def close(self) -> None:
        watchdog = getattr(self, "_watchdog", None)
        if watchdog is not None:
            watchdog.close()
        pipe, self._pipe = getattr(self, "_pipe", None), None
        if pipe is not None:
            del pipe  # DALI stops its worker processes when the pipeline is destroyed

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def build_loader(cfg, dataset_dir, split: str = "train", *, train: bool = True, batch_size: int | None = None,
                 shard_id: int = 0, num_shards: int = 1, device=None, start_epoch: int = 0, start_batch: int = 0,
                 num_joints: int | None = None, skip_bad: bool = False, max_persons: int = 0,
                 dtype: torch.dtype = torch.float32, channels_last: bool = False) -> Loader:
    """A `Loader` over `dataset_dir`/`split` for rank `shard_id` of `num_shards` (see the module docstring)."""
    ds = ShardDataset(Path(dataset_dir), split)
    k = ds.num_joints
    if num_joints is not None and num_joints != k:
        raise UserError(f"{dataset_dir}: the dataset has {k} joints but {num_joints} were expected (num_joints in "
                        f"the config or the model). Use a model/config for {k} joints or convert the data again.")
    if cfg.num_joints and cfg.num_joints != k:
        raise UserError(f"The config says num_joints = {cfg.num_joints} but the dataset {dataset_dir} has {k} "
                        f"joints. Remove num_joints from the config or convert the data with {cfg.num_joints} joints.")
    groups = cfg.all_joints or ds.all_joints
    for group in groups:
        if any(not 0 <= j < k for j in group):
            raise UserError(f"all_joints contains {group} but the dataset {dataset_dir} has {k} joints (ids "
                            f"0..{k - 1}). Fix all_joints in the config.")
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id must be in 0..{num_shards - 1}, got {shard_id}")
    aug = augment(cfg, train=train, perm=symmetric_permutation(k, groups),
                  ignore=train and ds.manifest.get("source", {}).get("format") == "coco")
    return Loader(ds, aug, batch_size=batch_size or cfg.batch_size, shard_id=shard_id, num_shards=num_shards,
                  shuffle=bool(cfg.shuffle) and train, device=pick_device(cfg.device if device is None else device),
                  num_threads=max(1, cfg.num_threads), num_workers=cfg.num_workers, start_epoch=start_epoch,
                  start_batch=start_batch, skip_bad=skip_bad, max_persons=max_persons, dtype=dtype,
                  channels_last=channels_last, mean=[float(m) for m in cfg.mean_pixel],
                  worker_timeout=float(cfg.worker_timeout))


__all__ = ["Batch", "Loader", "build_loader", "epoch_order", "batches_per_epoch", "sample_params", "transform_joints",
           "check_image", "decode_check", "decode_rgb", "eval_augment", "Augment", "Params", "ignore_grid", "augment",
           "rotation_matrix", "gaussian_kernel", "motion_kernel", "noise_field", "normal_quantiles"]
