"""Images for inference: a file or bytes -> RGB, scaled and mean-subtracted as the eval pipeline does, padded into a
batch. What `fastpose predict`, the assembly fit and the demo feed the network outside DALI.

The geometry is the eval pipeline's (`fastpose.pipeline.eval_augment` and `sample_params`: scale = global_scale
clamped by min/max_input_size, size floor(W s) x floor(H s)) with the project's pixel convention, pixel centres at
integer coordinates: resizing maps x -> (x + 0.5) * (w' / w) - 0.5, which `fastpose.decode.to_sample` undoes.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch

from fastpose.errors import UserError
from fastpose.pipeline import ALIGN, decode_rgb, eval_augment, sample_params


def read_image(path: str | Path, where: str = "") -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file, or a UserError naming it (`where` is added after the path)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise UserError(f"{path}{where} could not be read ({e.strerror}). Check the path and its "
                        f"permissions.") from None
    image = decode_rgb(data)
    if image is None:
        raise UserError(f"{path}{where} could not be decoded as an image. Pass PNG/JPEG files, or remove this one.")
    return image


def prepare_image(image: np.ndarray, cfg) -> tuple[np.ndarray, tuple[int, int]]:
    """(H, W, 3) uint8 RGB -> ((h, w, 3) float32 network input, (h, w)) as the eval pipeline makes it: scaled by
    `sample_params` of the eval geometry, mean_pixel subtracted."""
    h, w = image.shape[:2]
    p = sample_params(eval_augment(cfg), 0, 0, w, h, np.zeros((0, max(cfg.num_joints, 1), 3), np.float32))
    if (p.res_w, p.res_h) != (w, h):
        # Area averaging when shrinking (antialiased, as DALI's resize), bilinear when enlarging; both map pixel
        # centres x -> (x + 0.5) * (w' / w) - 0.5.
        shrink = p.res_w < w or p.res_h < h
        image = cv2.resize(image, (p.res_w, p.res_h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    net = image.astype(np.float32) - np.asarray(cfg.mean_pixel, np.float32)  # (h, w, 3)
    return net, (p.res_h, p.res_w)


def batch_images(prepared: list[np.ndarray]) -> torch.Tensor:
    """(B, 3, H, W) float32, each (h, w, 3) image padded with 0 (after mean subtraction, as the pipeline) to the
    batch's largest size rounded up to a multiple of ALIGN."""
    hmax = math.ceil(max(a.shape[0] for a in prepared) / ALIGN) * ALIGN
    wmax = math.ceil(max(a.shape[1] for a in prepared) / ALIGN) * ALIGN
    out = np.zeros((len(prepared), 3, hmax, wmax), np.float32)
    for i, a in enumerate(prepared):
        out[i, :, :a.shape[0], :a.shape[1]] = a.transpose(2, 0, 1)
    return torch.from_numpy(out)


def network_batch(images: list[np.ndarray], cfg) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A list of (H, W, 3) uint8 RGB images -> (batch (B, 3, H', W') float32, valid_hw (B, 2) int64 resized h, w,
    ratio (B, 2) float64 x, y: the real per-axis resize ratios, resized / original size)."""
    prepared = [prepare_image(im, cfg) for im in images]
    batch = batch_images([p[0] for p in prepared])
    valid_hw = torch.tensor([p[1] for p in prepared], dtype=torch.int64)  # (B, 2)
    orig = torch.tensor([im.shape[:2] for im in images], dtype=torch.float64)  # (B, 2) H, W
    return batch, valid_hw, (valid_hw.double() / orig).flip(1)
