"""Network outputs -> joint positions: the inverse of the training targets (fastpose.kernels.targets).

Per sample and joint: the argmax cell (j, i) of the part score map, its centre (i * stride + stride / 2,
j * stride + stride / 2) plus locref * locref_stdev there, and score = sigmoid(logit) at the argmax (the reference's
test-time decoding). That position is in network-input pixels; `to_sample` undoes the crop and the resize of the
pipeline and `to_source` applies a shard sample's affine transform, giving the original image's pixels.

Pixel convention (the project's): pixel centres at integer coordinates; resizing by s maps x -> (x + 0.5) * s - 0.5,
so its inverse is x -> (x + 0.5) / s - 0.5. Everything is batched torch on the outputs' device.
"""

from __future__ import annotations

import torch


def valid_grid(valid_hw, stride: int) -> torch.Tensor:
    """(..., 2) int64 rows and columns of output cells whose centre lies inside the valid (unpadded) image: cell
    (j, i) is inside when j * stride + stride / 2 < height (and likewise i for the width), so the counts are
    ceil((size - stride / 2) / stride), at least 0. valid_hw (..., 2) = (height, width) in network-input pixels.

    The one definition of "inside the image" for training (its padding mask), decoding and the assembly."""
    hw = torch.as_tensor(valid_hw).to(torch.float64)
    return torch.ceil((hw - stride / 2) / stride).clamp(min=0).to(torch.int64)


def valid_cells(valid_hw: torch.Tensor, grid: tuple[int, int], stride: int) -> torch.Tensor:
    """(B, H, W) bool: the cells of a (H, W) grid inside each valid image (`valid_grid`).

    valid_hw (B, 2) = (height, width) of each image in network-input pixels before batch padding. Training ignores
    the complement (fastpose.train.padding_ignore): those logits are never trained.
    """
    h, w = grid
    valid_hw = torch.as_tensor(valid_hw)
    counts = valid_grid(valid_hw, stride).to(valid_hw.device)  # (B, 2)
    rows = torch.arange(h, device=valid_hw.device)[None, :] < counts[:, 0:1]  # (B, H)
    cols = torch.arange(w, device=valid_hw.device)[None, :] < counts[:, 1:2]  # (B, W)
    return rows[:, :, None] & cols[:, None, :]


def decode(part: torch.Tensor, locref: torch.Tensor | None, stride: int, locref_stdev: float,
           valid_hw: torch.Tensor | None = None) -> torch.Tensor:
    """Joints from the heads' outputs, in network-input pixels: (B, K, 3) float32 = x, y, score.

    part (B, K, H, W) logits; locref (B, 2K, H, W) (channels 2k, 2k + 1 = dx, dy divided by locref_stdev) or None
    (then the cell centre is the position); valid_hw (B, 2) image sizes before padding: padding cells never win.
    """
    if part.dim() != 4:
        raise ValueError(f"part must be (B, K, H, W) logits, got shape {tuple(part.shape)}")
    b, k, h, w = part.shape
    logits = part.detach().float()  # (B, K, H, W); autocast may hand bf16/fp16
    if valid_hw is not None:
        mask = valid_cells(torch.as_tensor(valid_hw).to(part.device), (h, w), stride)  # (B, H, W)
        logits = logits.masked_fill(~mask[:, None], float("-inf"))
    best, idx = logits.reshape(b, k, h * w).max(dim=2)  # (B, K), (B, K)
    row = torch.div(idx, w, rounding_mode="floor")
    col = idx - row * w
    half = stride / 2.0
    x = col.float() * stride + half  # (B, K) cell centres
    y = row.float() * stride + half
    if locref is not None:
        if locref.shape != (b, 2 * k, h, w):
            raise ValueError(f"locref must be (B, 2K, H, W) = {(b, 2 * k, h, w)}, got {tuple(locref.shape)}")
        offsets = locref.detach().float().reshape(b, k, 2, h * w)  # (B, K, 2, HW)
        picked = offsets.gather(3, idx[:, :, None, None].expand(b, k, 2, 1))[..., 0]  # (B, K, 2)
        x = x + picked[..., 0] * locref_stdev
        y = y + picked[..., 1] * locref_stdev
    score = torch.sigmoid(best)  # (B, K); 0 where every cell was padding (-inf)
    return torch.stack([x, y, score], dim=2)


def to_sample(xy: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
    """Network-input pixels -> the shard sample's pixels: undo the crop, then the resize.

    xy (B, K, 2+) (extra columns such as the score pass through); scale (B,) or (B, 2) per-axis factors (network
    size / sample size); offset (B, 2) = (x, y) of the crop origin in the resized image, or None for no crop.
    The pipeline maps x_net = (x_sample + 0.5) * s - 0.5 - offset_x, so x_sample = (x_net + offset_x + 0.5) / s - 0.5.
    """
    out = xy.float().clone()
    scale = torch.as_tensor(scale, dtype=torch.float32, device=xy.device)
    if scale.dim() == 1:
        scale = scale[:, None].expand(-1, 2)  # (B, 2)
    pos = out[..., :2]  # (B, K, 2)
    if offset is not None:
        pos = pos + torch.as_tensor(offset, dtype=torch.float32, device=xy.device)[:, None, :]
    out[..., :2] = (pos + 0.5) / scale[:, None, :] - 0.5
    return out


def to_source(xy: torch.Tensor, transform: torch.Tensor) -> torch.Tensor:
    """Shard sample pixels -> source image pixels through the shard's affine [a, b, c, d, e, f] (B, 6) or (6,):
    src_x = a*x + b*y + c, src_y = d*x + e*y + f. Extra columns (the score) pass through."""
    t = torch.as_tensor(transform, dtype=torch.float32, device=xy.device)
    if t.dim() == 1:
        t = t[None].expand(xy.shape[0], 6)
    out = xy.float().clone()
    x, y = xy[..., 0].float(), xy[..., 1].float()  # (B, K)
    out[..., 0] = t[:, 0:1] * x + t[:, 1:2] * y + t[:, 2:3]
    out[..., 1] = t[:, 3:4] * x + t[:, 4:5] * y + t[:, 5:6]
    return out
