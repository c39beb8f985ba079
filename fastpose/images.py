"""Images for inference: a file or bytes -> RGB, scaled and mean-subtracted as the eval pipeline does, padded into a
batch. What `fastpose predict`, the assembly fit and the demo feed the network outside DALI.

The geometry is the eval pipeline's (`fastpose.pipeline.eval_augment` and `sample_params`: scale = global_scale
clamped by min/max_input_size, size floor(W s) x floor(H s)) with the project's pixel convention, pixel centres at
integer coordinates: resizing maps x -> (x + 0.5) * (w' / w) - 0.5, which `fastpose.decode.to_sample` undoes.

`network_input` is the one definition of that preprocessing in torch ops (size, resize, mean, padding): `fastpose
predict` runs it eagerly and `fastpose export` traces it into the exported graph, so both feed the network the same
numbers. The resize is separable, two matrix products with weights built from the sizes: area averaging (an exact box
filter, OpenCV's INTER_AREA) along an axis that shrinks, linear interpolation (INTER_LINEAR) along one that grows,
kept in float32 (no rounding back to uint8), so that any runtime that can multiply matrices reproduces it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from fastpose.errors import UserError
from fastpose.pipeline import ALIGN, decode_rgb


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


def eval_size(h: torch.Tensor, w: torch.Tensor, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """Resized (height, width) of (H, W) images under the eval geometry, as int64 tensors of h's shape.

    The arithmetic of `fastpose.pipeline.sample_params` for the eval case, step by step in float64 (bit for bit the
    same as its Python floats) but in tensor ops, so that it also runs inside an exported graph on dynamic sizes."""
    hh, ww = h.to(torch.float64), w.to(torch.float64)
    scale = torch.full_like(hh, float(cfg.global_scale))
    if cfg.min_input_size:
        short = torch.minimum(ww, hh)
        # torch.div of two tensors: `number / tensor` would be reciprocal-then-multiply, not Python's division
        lo = torch.full_like(short, float(cfg.min_input_size))
        scale = torch.where(short * scale < lo, torch.div(lo, short), scale)
    area = torch.floor(ww * scale) * torch.floor(hh * scale)
    hi = torch.full_like(hh, float(cfg.max_input_size))
    scale = torch.where(area > hi * hi, torch.div(hi, torch.sqrt(ww * hh)), scale)
    res_h = torch.clamp(torch.floor(hh * scale), min=1.0).to(torch.int64)
    res_w = torch.clamp(torch.floor(ww * scale), min=1.0).to(torch.int64)
    return res_h, res_w


def resize_weights(size: int, new: torch.Tensor, rows: int | torch.Tensor) -> torch.Tensor:
    """(rows, size) float32: row i holds the weights of the input pixels that make output pixel i of a resize from
    `size` to `new` pixels (new: 0-d int64 tensor); rows i >= new are 0 (padding).

    Shrinking (new < size): area averaging, output pixel i covers [i r, (i + 1) r) of the input with r = size / new
    and weighs each input pixel by the length it overlaps, / r. Growing: linear interpolation at the centre's source
    position (i + 0.5) r - 0.5, clamped into [0, size - 1]. Both map pixel centres x -> (x + 0.5) / r - 0.5."""
    r = torch.div(torch.scalar_tensor(size, dtype=torch.float64, device=new.device), new.to(torch.float64))  # 0-d
    i = torch.arange(rows, dtype=torch.float64, device=new.device)[:, None]  # (rows, 1)
    j = torch.arange(size, dtype=torch.float64, device=new.device)[None, :]  # (1, size)
    overlap = torch.minimum((i + 1) * r, j + 1) - torch.maximum(i * r, j)  # (rows, size)
    area = torch.clamp(overlap, min=0.0) / r
    src = torch.clamp((i + 0.5) * r - 0.5, min=0.0)  # (rows, 1)
    src = torch.minimum(src, (size - 1.0) + torch.zeros_like(src))
    linear = torch.clamp(1.0 - torch.abs(src - j), min=0.0)
    weights = torch.where(r > 1.0, area, linear)
    return torch.where(i < new.to(torch.float64), weights, torch.zeros_like(weights)).to(torch.float32)


def network_input(images: torch.Tensor, cfg, resized: tuple[int, int] | None = None, align: int = ALIGN
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, H, W, 3) uint8 RGB images of one size -> (batch (N, 3, H', W') float32 resized by the eval geometry,
    mean_pixel subtracted and padded with 0 to multiples of `align`; valid_hw (N, 2) int64 resized h, w; ratio (N, 2)
    float64 x, y: the real per-axis resize ratios, resized / original size). resized: the (h, w) that `eval_size`
    gives for these images when the caller knows it (an export for one fixed input size), else computed here.
    align 1: no padding (the export of a slim-layout network, `fastpose.model.runs_unpadded`).

    Plain tensor ops only: `fastpose.export` traces this very function into the exported graph (the resized size is
    data there, hence `.item()` with its bounds checked for torch.export)."""
    n, h, w = images.shape[0], images.shape[1], images.shape[2]
    # (2,) H, W; scalar_tensor keeps symbolic sizes symbolic when traced (torch.tensor would bake them in)
    dev = images.device
    size = torch.stack([torch.scalar_tensor(h, dtype=torch.int64, device=dev),
                        torch.scalar_tensor(w, dtype=torch.int64, device=dev)])
    if resized is None:
        res_h, res_w = eval_size(size[0], size[1], cfg)  # 0-d int64 each
        # torch.jit.trace would freeze an .item() into a constant, while arange takes the 0-d tensor as a traced size;
        # torch.export needs the sizes as (unbacked) integers with their bounds stated.
        rh, rw = (res_h, res_w) if torch.jit.is_tracing() else (res_h.item(), res_w.item())
        if not torch.jit.is_tracing():
            torch._check(rh >= 1)
            torch._check(rw >= 1)
    else:
        rh, rw = resized
        res_h = torch.scalar_tensor(rh, dtype=torch.int64, device=dev)
        res_w = torch.scalar_tensor(rw, dtype=torch.int64, device=dev)
    ph, pw = (rh + align - 1) // align * align, (rw + align - 1) // align * align  # padded sizes
    mean = torch.tensor([float(v) for v in cfg.mean_pixel], dtype=torch.float32, device=dev)
    x = images.permute(0, 3, 1, 2).to(torch.float32) - mean[:, None, None]  # (N, 3, H, W)
    x = torch.matmul(resize_weights(h, res_h, ph), x)  # (N, 3, H', W): rows resized and padded
    # contiguous NCHW: the permuted input leaves channels-last strides, and the network must see the layout predict
    # always gave it (oneDNN picks other kernels, with other rounding, for other strides)
    x = torch.matmul(x, resize_weights(w, res_w, pw).t()).contiguous()  # (N, 3, H', W')
    valid_hw = torch.stack([res_h, res_w]).expand(n, 2)  # (N, 2)
    ratio = (valid_hw.to(torch.float64) / size.to(torch.float64)).flip(1)  # (N, 2) x, y
    return x, valid_hw, ratio


def prepare_image(image: np.ndarray, cfg) -> tuple[np.ndarray, tuple[int, int]]:
    """(H, W, 3) uint8 RGB -> ((h, w, 3) float32 network input, (h, w)) as the eval pipeline makes it: scaled by
    `sample_params` of the eval geometry, mean_pixel subtracted (`network_input` without the padding)."""
    x, valid_hw, _ = network_input(torch.from_numpy(np.ascontiguousarray(image))[None], cfg)
    h, w = int(valid_hw[0, 0]), int(valid_hw[0, 1])
    return x[0, :, :h, :w].permute(1, 2, 0).contiguous().numpy(), (h, w)


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
