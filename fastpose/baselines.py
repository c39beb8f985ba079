"""The baselines `fastpose bench` and tools/ measure fastpose against: what the reference (or a plain Python
re-implementation) does for the same work, written to be obviously right rather than fast.

- `numpy_targets`: score-map and locref targets the way the reference computed them, a numpy loop per sample,
  person and joint (the baseline of `fastpose bench targets`; also the independent oracle of tests/test_targets.py:
  it shares no code with `fastpose.kernels.targets`). Like the reference it visits cells in Python, but only those
  within reach of the threshold (a window one cell wider than needed on every side, clipped to the grid), and marks
  those with dx^2 + dy^2 <= t^2. A nearer person overwrites the locref of a cell; a tie keeps the earlier person (the
  reference's strict `>` comparison). The arithmetic is Python float (float64), as in the reference; the kernels use
  float32, so the two can disagree only for a cell within float32 rounding of the threshold (or of a tie between two
  persons), and locref differs in the last float32 bit at most.
- `pil_sample`, `pil_augmented`, `pil_batch`, `pil_batches`: a per-sample PIL/numpy loader doing the DALI pipeline's
  work (decode, bilinear resize to floor(W s) x floor(H s), or with rotation one PIL affine transform of scale,
  rotation and crop; crop; colour, Gaussian blur, motion blur, noise in numpy with DALI's formulas; mirror, mean
  subtraction, CHW, padding to multiples of 16) with the same per-sample parameters
  (`fastpose.pipeline.sample_params`, `noise_field`): the baseline of `fastpose bench data`.
- `gaec`: greedy additive edge contraction written plainly (join the two clusters with the most negative summed cost
  while it is negative), the baseline the native multicut solver must never lose to (tests/test_assembly.py,
  tools/bench_assembly.py).
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image

from fastpose.config import symmetric_permutation
from fastpose.pipeline import (
    ALIGN,
    Augment,
    Params,
    augment,
    epoch_order,
    gaussian_kernel,
    motion_kernel,
    noise_field,
    sample_params,
)
from fastpose.shards import ShardDataset


def numpy_targets(joints, grid, stride=8, dist_thresh=17.0, locref_stdev=7.2801, ignore=None, present_only=False):
    """Returns (scmap, scmap_weights, locref, locref_mask) as float32 numpy arrays; see fastpose.kernels.targets.

    joints (B, P, K, 3) array-like; dist_thresh a float or (B,) array-like; ignore None or (B, 1, H, W).
    """
    joints = np.asarray(joints, dtype=np.float32)
    b, p, k, _ = joints.shape
    h, w = int(grid[0]), int(grid[1])
    thresh = np.broadcast_to(np.asarray(dist_thresh, dtype=np.float32), (b,))
    half = stride / 2.0

    scmap = np.zeros((b, k, h, w), np.float32)
    locref = np.zeros((b, k, 2, h, w), np.float32)
    best = np.full((k, h, w), np.inf)  # squared distance of the person holding each cell (one sample)
    for s in range(b):
        t = float(thresh[s])
        t2 = t * t
        best.fill(np.inf)
        for person in range(p):
            for j in range(k):
                x, y, v = (float(c) for c in joints[s, person, j])
                if not (v > 0 and math.isfinite(x) and math.isfinite(y)):
                    continue
                # Window of candidate cells, one spare cell on each side; the exact test below decides.
                lo_i = max(math.floor((x - t - half) / stride) - 1, 0)
                hi_i = min(math.ceil((x + t - half) / stride) + 1, w - 1)
                lo_j = max(math.floor((y - t - half) / stride) - 1, 0)
                hi_j = min(math.ceil((y + t - half) / stride) + 1, h - 1)
                for r in range(lo_j, hi_j + 1):
                    dy = y - (r * stride + half)
                    for c in range(lo_i, hi_i + 1):
                        dx = x - (c * stride + half)
                        d2 = dx * dx + dy * dy
                        if d2 <= t2:
                            scmap[s, j, r, c] = 1.0
                            if d2 < best[j, r, c]:  # strict: a tie keeps the earlier person
                                best[j, r, c] = d2
                                locref[s, j, 0, r, c] = dx / locref_stdev
                                locref[s, j, 1, r, c] = dy / locref_stdev

    weights = np.ones((b, k, h, w), np.float32)
    if present_only:
        present = (joints[..., 2] > 0) & np.isfinite(joints[..., 0]) & np.isfinite(joints[..., 1])  # (B, P, K)
        weights *= present.any(axis=1).astype(np.float32)[:, :, None, None]
    if ignore is not None:
        weights *= 1.0 - np.asarray(ignore, dtype=np.float32)
    locref_mask = np.repeat(scmap, 2, axis=1)  # (B, 2K, H, W), channels 2k and 2k + 1 from scmap[:, k]
    return scmap, weights, locref.reshape(b, 2 * k, h, w), locref_mask


def pil_sample(data: bytes, res_w: int, res_h: int, flip: bool, mean: list[float]) -> np.ndarray:
    """(3, res_h, res_w) float32: decoded, bilinear-resized, mirrored, mean-subtracted (the reference's work)."""
    with Image.open(io.BytesIO(data)) as im:
        img = im.convert("RGB").resize((res_w, res_h), Image.BILINEAR)
    a = np.asarray(img, np.float32)  # (H, W, 3)
    if flip:
        a = a[:, ::-1]
    a = a - np.asarray(mean, np.float32)
    return np.ascontiguousarray(a.transpose(2, 0, 1))


# DALI color_twist's colour space: RGB -> YIQ with these constants, and back with their exact inverse (measured: the
# numpy transform below equals DALI 2.4's output bit for bit on random images).
RGB2YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.321], [0.211, -0.523, 0.311]])


def color_twist(a: np.ndarray, brightness: float, contrast: float, saturation: float, hue: float) -> np.ndarray:
    """(H, W, 3) -> float32 as DALI's fn.color_twist with float32 output (the pipeline's): hue rotation and saturation
    scaling in YIQ, then out = brightness (contrast (x - 128) + 128), neither rounded nor saturated (the pipeline
    rounds once, at the end)."""
    h = math.radians(hue)
    rot = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(h), math.sin(h)], [0.0, -math.sin(h), math.cos(h)]])
    m = brightness * contrast * np.linalg.inv(RGB2YIQ) @ rot @ np.diag([1.0, saturation, saturation]) @ RGB2YIQ
    offset = (128.0 - 128.0 * contrast) * brightness
    return a.astype(np.float32) @ m.T.astype(np.float32) + np.float32(offset)  # (H, W, 3)


def correlate(a: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """(H, W, 3) image correlated with a (kh, kw) kernel (odd sizes, centred) as DALI's fn.filter: border reflect 101,
    float32 arithmetic, one shifted multiply-add per non-zero tap; a uint8 image gives uint8 (rounded to nearest,
    saturated), a float32 one float32."""
    rh, rw = kernel.shape[0] // 2, kernel.shape[1] // 2
    pad = np.pad(a.astype(np.float32), ((rh, rh), (rw, rw), (0, 0)), mode="reflect")  # (H + 2 rh, W + 2 rw, 3)
    out = np.zeros(a.shape, np.float32)
    h, w = a.shape[:2]
    for dy, dx in zip(*np.nonzero(kernel), strict=True):
        out += kernel[dy, dx] * pad[dy:dy + h, dx:dx + w]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8) if a.dtype == np.uint8 else out


def gaussian_blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W, 3) -> float32 (H, W, 3): the pipeline's two 1-D passes (`gaussian_kernel` along rows, then columns), not
    rounded."""
    g = gaussian_kernel(sigma)
    return correlate(correlate(a.astype(np.float32), g[None, :]), g[:, None])


def pil_augmented(data: bytes, p: Params, aug: Augment, width: int, height: int, mean: list[float]) -> np.ndarray:
    """(3, crop_h, crop_w) float32: `pil_sample`'s work plus crop, rotation and the photometric augmentations of
    `p` (the DALI pipeline's stages, in its order)."""
    with Image.open(io.BytesIO(data)) as im:
        img = im.convert("RGB")
    if aug.stages()["rotate"]:  # one resampling, as fn.warp_affine: output -> source in pixel-centre (+0.5) coords
        fill = int(np.clip(np.rint(aug.fill), 0, 255))
        img = img.transform((p.crop_w, p.crop_h), Image.Transform.AFFINE, tuple(float(v) for v in
                            p.dali_matrix(width, height)), resample=Image.BILINEAR, fillcolor=(fill,) * 3)
    else:
        img = img.resize((p.res_w, p.res_h), Image.BILINEAR)
        if (p.crop_w, p.crop_h) != (p.res_w, p.res_h):
            img = img.crop((p.crop_x, p.crop_y, p.crop_x + p.crop_w, p.crop_y + p.crop_h))
    a = np.asarray(img)  # (H, W, 3) uint8
    if (p.brightness, p.contrast, p.saturation, p.hue) != (1.0, 1.0, 1.0, 0.0):
        a = color_twist(a, p.brightness, p.contrast, p.saturation, p.hue)
    if p.blur_sigma > 0:
        a = gaussian_blur(a, p.blur_sigma)
    if p.motion_length > 1:
        a = correlate(a, motion_kernel(p.motion_length, p.motion_angle))
    if p.noise_std > 0:
        a = a.astype(np.float32 if a.dtype == np.float32 else np.int16) + noise_field(p)
    a = np.clip(np.rint(a), 0, 255).astype(np.float32)  # the pipeline's one rounding, saturating (a no-op on uint8)
    if p.flip:
        a = a[:, ::-1]
    a = a - np.asarray(mean, np.float32)
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def pil_batch(samples: list[np.ndarray]) -> torch.Tensor:
    """(B, 3, H, W) float32, zero-padded to the batch maximum rounded up to a multiple of 16."""
    h = math.ceil(max(s.shape[1] for s in samples) / ALIGN) * ALIGN
    w = math.ceil(max(s.shape[2] for s in samples) / ALIGN) * ALIGN
    out = np.zeros((len(samples), 3, h, w), np.float32)
    for i, s in enumerate(samples):
        out[i, :, :s.shape[1], :s.shape[2]] = s
    return torch.from_numpy(out)


def pil_batches(cfg, dataset_dir, split: str, batch_size: int, train: bool = True):
    """Endless generator of (B, 3, H, W) batches, same order and geometry as `build_loader` (rank 0 of 1)."""
    ds = ShardDataset(dataset_dir, split)
    aug = augment(cfg, train=train, perm=symmetric_permutation(ds.num_joints, cfg.all_joints or ds.all_joints))
    plain = not (aug.train and (aug.crop_w or any(aug.stages().values())))
    epoch = 0
    while True:
        order = epoch_order(len(ds), epoch, seed=cfg.seed, batch_size=batch_size, train=train,
                            shuffle=cfg.shuffle and train)
        for b in range(len(order) // batch_size):
            samples = []
            for index in order[b * batch_size:(b + 1) * batch_size]:
                s = ds[int(max(index, 0))]
                p = sample_params(aug, epoch, int(index), s.size[2], s.size[1], s.joints)
                if plain:
                    samples.append(pil_sample(s.image, p.res_w, p.res_h, p.flip, cfg.mean_pixel))
                else:
                    samples.append(pil_augmented(s.image, p, aug, s.size[2], s.size[1], cfg.mean_pixel))
            yield pil_batch(samples)
        epoch += 1


def gaec(n: int, edges: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """Greedy additive edge contraction: labels (n,). Dense (n, n) summed costs between clusters; O(n^3)."""
    cost = np.zeros((n, n))
    edges = np.asarray(edges).reshape(-1, 2)
    keep = edges[:, 0] != edges[:, 1]
    np.add.at(cost, (edges[keep, 0], edges[keep, 1]), np.asarray(costs, np.float64)[keep])
    cost = cost + cost.T  # (n, n) symmetric
    alive = np.ones(n, bool)
    labels = np.arange(n)
    while True:
        masked = np.where(alive[:, None] & alive[None, :], cost, np.inf)
        np.fill_diagonal(masked, np.inf)
        flat = int(np.argmin(masked))
        u, v = divmod(flat, n)
        if not masked[u, v] < 0:
            break
        cost[u] += cost[v]  # v joins u: its summed costs add to u's
        cost[:, u] += cost[:, v]
        alive[v] = False
        labels[labels == v] = u
    return np.unique(labels, return_inverse=True)[1].reshape(n)
