"""Decoding is the inverse of the targets: make_targets -> logits -> decode -> the joints back, to 1e-3 px."""

from __future__ import annotations

import math

import pytest
import torch

from fastpose.decode import decode, to_sample, to_source, valid_cells, valid_grid
from fastpose.kernels.targets import make_targets
from fastpose.train import padding_ignore

STRIDE = 8
STDEV = 7.2801


def _logits_from(scmap: torch.Tensor) -> torch.Tensor:
    """Logits whose argmax is a positive cell: +4 on positives (any positive cell is a correct answer), -4 elsewhere."""
    return scmap * 8.0 - 4.0


def test_round_trip_with_make_targets_through_the_scale_inverse():
    gen = torch.Generator().manual_seed(0)
    b, k = 3, 5
    scale = torch.tensor([0.8452830189, 1.0, 1.37])
    sample_hw = torch.tensor([[300.0, 220.0], [150.0, 190.0], [97.0, 131.0]])
    # Joints in the shard sample's pixels, inside the image.
    joints_sample = torch.rand(b, k, 2, generator=gen) * (sample_hw.flip(1)[:, None, :] - 1)  # x < W - 1, y < H - 1
    joints_net = (joints_sample + 0.5) * scale[:, None, None] - 0.5  # the pipeline's resize
    valid_hw = torch.floor(sample_hw * scale[:, None])  # (B, 2)
    grid = (int(math.ceil(valid_hw[:, 0].max() / 16)) * 2, int(math.ceil(valid_hw[:, 1].max() / 16)) * 2)
    present = torch.ones(b, 1, k, 1)
    t = make_targets(torch.cat([joints_net[:, None], present], dim=3), grid, STRIDE, 17.0 * scale, STDEV)
    assert (t.scmap.flatten(2).amax(2) == 1).all()  # every joint has a positive cell
    out = decode(_logits_from(t.scmap), t.locref, STRIDE, STDEV, valid_hw)  # (B, K, 3)
    assert out.shape == (b, k, 3)
    torch.testing.assert_close(out[..., :2], joints_net, atol=1e-3, rtol=0)
    torch.testing.assert_close(out[..., 2], torch.full((b, k), torch.sigmoid(torch.tensor(4.0)).item()))
    back = to_sample(out, scale)
    torch.testing.assert_close(back[..., :2], joints_sample, atol=1e-3, rtol=0)
    torch.testing.assert_close(back[..., 2], out[..., 2])  # the score passes through


def test_crop_offset_inverse():
    # The pipeline: resize by s, then crop at (ox, oy): x_net = (x + 0.5) * s - 0.5 - ox.
    xy = torch.tensor([[[10.0, 20.0, 0.9], [0.0, 0.0, 0.1]]])
    scale, offset = torch.tensor([2.0]), torch.tensor([[5.0, 7.0]])
    net = xy.clone()
    net[..., :2] = (xy[..., :2] + 0.5) * 2.0 - 0.5 - offset[:, None]
    torch.testing.assert_close(to_sample(net, scale, offset), xy)
    # Per-axis scales (the real output / input size ratios).
    scale2 = torch.tensor([[2.0, 0.5]])
    net[..., 0] = (xy[..., 0] + 0.5) * 2.0 - 0.5
    net[..., 1] = (xy[..., 1] + 0.5) * 0.5 - 0.5
    torch.testing.assert_close(to_sample(net, scale2), xy)


def test_centre_without_locref_and_hand_computed_position():
    part = torch.full((1, 2, 4, 6), -5.0)
    part[0, 0, 2, 3] = 1.0  # row 2, col 3 -> centre (3 * 8 + 4, 2 * 8 + 4) = (28, 20)
    part[0, 1, 0, 5] = 0.0  # row 0, col 5 -> (44, 4)
    out = decode(part, None, STRIDE, STDEV)
    expected = torch.tensor([[[28.0, 20.0, torch.sigmoid(torch.tensor(1.0)).item()], [44.0, 4.0, 0.5]]])
    torch.testing.assert_close(out, expected)
    locref = torch.zeros(1, 4, 4, 6)
    locref[0, 0, 2, 3], locref[0, 1, 2, 3] = 0.5, -1.0  # joint 0: dx = 0.5 * stdev, dy = -stdev
    out = decode(part, locref, STRIDE, STDEV)
    torch.testing.assert_close(out[0, 0, :2], torch.tensor([28.0 + 0.5 * STDEV, 20.0 - STDEV]))
    torch.testing.assert_close(out[0, 1, :2], torch.tensor([44.0, 4.0]))


def test_padding_cells_never_win():
    # Sample 0 is 20 x 30 pixels in a batch padded to 32 x 48 (grid 4 x 6): cell centres 4, 12, 20, 28, ... so the
    # valid cells (centre < size, as training's padding mask) are rows 0-1 and columns 0-3.
    part = torch.zeros(2, 1, 4, 6)
    part[:, 0, 3, 5] = 10.0  # the highest logit sits in the padding of sample 0
    part[:, 0, 1, 2] = 3.0
    valid_hw = torch.tensor([[20, 30], [32, 48]])
    out = decode(part, None, STRIDE, STDEV, valid_hw)
    torch.testing.assert_close(out[0, 0, :2], torch.tensor([2 * 8 + 4.0, 1 * 8 + 4.0]))  # the best valid cell
    torch.testing.assert_close(out[1, 0, :2], torch.tensor([5 * 8 + 4.0, 3 * 8 + 4.0]))  # unpadded: the true max
    # The score is the chosen cell's: sigmoid(3) = 0.952574 for sample 0 (not the padding's sigmoid(10) = 0.999955).
    torch.testing.assert_close(out[:, 0, 2], torch.tensor([0.9525741268, 0.9999546021]))
    mask = valid_cells(valid_hw, (4, 6), STRIDE)
    assert mask[0].sum() == 2 * 4 and mask[0, :2, :4].all() and mask[1].all()
    # The locref offset is the chosen cell's too: dx = 0.25 * stdev at (1, 2); the padding cell's offset is 10.
    locref = torch.zeros(2, 2, 4, 6)
    locref[:, :, 3, 5] = 10.0
    locref[:, 0, 1, 2], locref[:, 1, 1, 2] = 0.25, -0.5
    out = decode(part, locref, STRIDE, STDEV, valid_hw)
    torch.testing.assert_close(out[0, 0], torch.tensor([20.0 + 0.25 * STDEV, 12.0 - 0.5 * STDEV, 0.9525741268]))
    torch.testing.assert_close(out[1, 0], torch.tensor([44.0 + 10 * STDEV, 28.0 + 10 * STDEV, 0.9999546021]))


def test_image_without_a_valid_cell_scores_zero():
    # 4 x 5 pixels: no cell centre (4, 12, ...) lies strictly inside the height, so every cell is padding: score 0.
    part = torch.full((1, 2, 2, 2), 5.0)
    out = decode(part, None, STRIDE, STDEV, torch.tensor([[4, 5]]))
    torch.testing.assert_close(out[0, :, 2], torch.zeros(2))
    out = decode(part, None, STRIDE, STDEV, torch.tensor([[5, 5]]))  # centre 4 < 5: cell (0, 0) counts
    torch.testing.assert_close(out[0], torch.tensor([[4.0, 4.0, 0.9933071490]] * 2))


def test_to_source_affine():
    xy = torch.tensor([[[10.0, 20.0, 0.7]], [[1.0, 2.0, 0.2]]])
    transform = torch.tensor([[2.0, 0.0, 100.0, 0.0, 2.0, 50.0], [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]])
    out = to_source(xy, transform)
    torch.testing.assert_close(out, torch.tensor([[[120.0, 90.0, 0.7]], [[1.0, 2.0, 0.2]]]))
    rot = torch.tensor([0.0, -1.0, 5.0, 1.0, 0.0, 3.0])  # a shared (6,) transform: 90 degree rotation + shift
    torch.testing.assert_close(to_source(xy, rot)[0, 0, :2], torch.tensor([5.0 - 20.0, 3.0 + 10.0]))


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"^locref must be \(B, 2K, H, W\) = \(1, 4, 3, 3\), got \(1, 2, 3, 3\)$"):
        decode(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3), STRIDE, STDEV)
    with pytest.raises(ValueError, match=r"^part must be \(B, K, H, W\) logits, got shape \(2, 3, 3\)$"):
        decode(torch.zeros(2, 3, 3), None, STRIDE, STDEV)


def test_outputs_stay_on_the_heads_device():
    # Meta tensors stand in for a GPU: the sizes, scales, offsets and transforms come as CPU tensors or lists and are
    # moved to the heads' device (mixing devices raises).
    meta = torch.device("meta")
    part, locref = torch.zeros(2, 3, 4, 6, device=meta), torch.zeros(2, 6, 4, 6, device=meta)
    valid_hw = torch.tensor([[20, 30], [32, 48]])
    out = decode(part, locref, STRIDE, STDEV, valid_hw)
    assert out.device == meta and out.shape == (2, 3, 3)
    assert valid_cells(valid_hw.to(meta), (4, 6), STRIDE).device == meta
    assert to_sample(out, [0.5, 2.0], torch.tensor([[1.0, 2.0], [0.0, 0.0]])).device == meta
    assert to_sample(out, torch.tensor([[0.5, 0.25], [2.0, 1.0]])).device == meta
    assert to_source(out, [1.0, 0.0, 3.0, 0.0, 1.0, 4.0]).device == meta


def test_valid_grid_counts_the_cells_whose_centre_is_inside():
    # Cell centres at 4, 12, 20, 28, 36, 44 (stride 8): counted while centre < size, by hand.
    valid_hw = torch.tensor([[20, 30], [32, 48], [17, 9], [1, 47], [4, 5]])
    expected = [[2, 4], [4, 6], [2, 1], [0, 6], [0, 1]]
    assert valid_grid(valid_hw, STRIDE).tolist() == expected
    assert valid_grid(valid_hw, STRIDE).dtype == torch.int64  # counts, for arange and slicing
    assert valid_grid(torch.tensor([20, 30]), STRIDE).tolist() == [2, 4]  # one image
    mask = valid_cells(valid_hw, (4, 6), STRIDE)  # (B, H, W)
    for m, (rows, cols) in zip(mask, expected):
        want = torch.zeros(4, 6, dtype=torch.bool)
        want[:rows, :cols] = True
        assert torch.equal(m, want)
    # Training ignores exactly the rest: the padding cells.
    assert torch.equal(padding_ignore(valid_hw, (4, 6), STRIDE)[:, 0] == 0, mask)
