"""COCO ignore regions: from the shards' RLE through the pipeline (`ignore_grid`, Batch.ignore) to the score loss."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from fastpose import config
from fastpose.kernels.losses import part_loss
from fastpose.pipeline import Batch, Params, build_loader, ignore_grid, sample_params
from fastpose.train import compute_losses

COCO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mmpose" / "coco"


def _box_rle(box, height, width) -> dict:
    rle = mask_utils.frPyObjects(np.array([box], np.float64), height, width)[0]
    return {"size": [height, width], "counts": rle["counts"].decode()}


def test_ignore_grid_undoes_scale_and_mirror_hand_computed():
    # A 100 x 80 image with the region x in [40, 60), y in [16, 32); scale 0.5 (50 x 40), mirrored, stride 4.
    # Cell column i: centre 4i + 2, mirrored 49 - centre, source pixel round(2 x + 0.5): i = 5 -> 55, i = 6 -> 47
    # (inside), i = 4 -> 63, i = 7 -> 39 (outside). Row j: source round(2 (4j + 2) + 0.5): j = 2 -> 21, j = 3 -> 29.
    rles = [_box_rle([40, 16, 20, 16], 80, 100)]
    p = Params(scale=0.5, clamped=False, res_w=50, res_h=40, crop_x=0, crop_y=0, crop_w=50, crop_h=40, flip=True)
    got = ignore_grid(rles, 100, 80, p, stride=4)
    want = np.zeros((10, 13), np.uint8)
    want[2:4, 5:7] = 1
    np.testing.assert_array_equal(got, want)
    # Unmirrored with a crop at (20, 8) of the scale-1 image: centres 4i + 2 + 20 in [40, 60) -> i = 5..9; rows
    # 4j + 2 + 8 in [16, 32) -> j = 2..5. Cells past the image's edge stay 0.
    p = Params(scale=1.0, clamped=False, res_w=100, res_h=80, crop_x=20, crop_y=8, crop_w=48, crop_h=40, flip=False)
    want = np.zeros((10, 12), np.uint8)
    want[2:6, 5:10] = 1
    np.testing.assert_array_equal(ignore_grid(rles, 100, 80, p, stride=4), want)
    assert not ignore_grid([], 100, 80, p, stride=4).any()


@pytest.fixture(scope="module")
def coco_shards(tmp_path_factory):
    if not COCO.is_dir():
        pytest.skip(f"shared test data not found at {COCO}")
    from fastpose.convert import coco

    out = tmp_path_factory.mktemp("coco") / "shards"
    coco.convert(COCO, COCO / "test_coco.json", out, workers=1, quiet=True)
    return out


def test_loader_emits_the_crowd_mask_of_coco_samples(coco_shards):
    # Image 40083 has a person without keypoints (annotation 1202706, bbox x 275.17 + 10.69, y 126.5 + 68.26): its
    # cells, and only those, are ignored; images without such persons get an all-zero mask.
    cfg = config.load(None, ["num_workers=0", "num_threads=1", "seed=3", "batch_size=4", "shuffle=false",
                             "max_input_size=2000", "mirror=true", "scale_jitter_lo=0.8", "scale_jitter_up=1.2"])
    with build_loader(cfg, coco_shards) as loader:
        batch = next(iter(loader))
        ds, aug = loader.ds, loader.aug
        assert batch.ignore is not None and batch.ignore.shape == (4, 1, batch.images.shape[2] // 8,
                                                                   batch.images.shape[3] // 8)
        ids = []
        for i, index in enumerate(batch.index.tolist()):
            sample = ds[index]
            ids.append(sample.meta["image_id"])
            _, h, w = sample.size
            p = sample_params(aug, 0, index, w, h, np.asarray(sample.joints))
            want = ignore_grid(sample.meta["ignore_rle"], w, h, p, 8)
            got = batch.ignore[i, 0].numpy()
            np.testing.assert_array_equal(got[:want.shape[0], :want.shape[1]], want)
            assert not got[want.shape[0]:].any() and not got[:, want.shape[1]:].any()
            assert bool(want.any()) == (sample.meta["image_id"] in (40083, 196141))
    assert sorted(ids) == [785, 40083, 196141, 197388]

    # At scale 1 without mirror the ignored cells of image 40083 have their centres inside the region's bbox.
    gt = json.loads((COCO / "test_coco.json").read_text())
    ann = next(a for a in gt["annotations"] if a["id"] == 1202706)
    ds_index = ids.index(40083)
    sample = ds[int(batch.index[ds_index])]
    p = Params(1.0, False, sample.size[2], sample.size[1], 0, 0, sample.size[2], sample.size[1], False)
    cells = np.argwhere(ignore_grid(sample.meta["ignore_rle"], sample.size[2], sample.size[1], p, 8))
    assert len(cells) >= 3
    x0, y0, bw, bh = ann["bbox"]
    assert ((cells[:, 1] * 8 + 4 >= x0 - 0.5) & (cells[:, 1] * 8 + 4 <= x0 + bw + 0.5)).all()
    assert ((cells[:, 0] * 8 + 4 >= y0 - 0.5) & (cells[:, 0] * 8 + 4 <= y0 + bh + 0.5)).all()


def test_score_loss_skips_ignored_cells():
    cfg = config.load(None, ["num_joints=2", "pos_dist_thresh=6"])
    g = torch.Generator().manual_seed(0)
    joints = torch.tensor([[[[12.0, 12.0, 1], [28.0, 20.0, 1]]]])  # (1, 1, 2, 3)
    ignore = torch.zeros(1, 1, 3, 5)  # one row short of the 4 x 5 grid: compute_losses pads it with zeros
    ignore[0, 0, 0, 3:] = 1
    batch = Batch(images=torch.zeros(1, 3, 32, 40), joints=joints, scale=torch.ones(1),
                  flipped=torch.zeros(1, dtype=torch.bool),
                  valid_hw=torch.tensor([[32, 40]], dtype=torch.int32), index=torch.zeros(1, dtype=torch.long),
                  offset=torch.zeros(1, 2), ignore=ignore)
    out = {"part": torch.randn(1, 2, 4, 5, generator=g)}
    losses = compute_losses(cfg, out, batch)
    weights = torch.ones(1, 2, 4, 5)
    weights[0, :, 0, 3:] = 0
    scmap = torch.zeros(1, 2, 4, 5)
    scmap[0, 0, 1, 1] = 1  # joint 0 at (12, 12) covers the cell centred there only (radius 6 < 8)
    scmap[0, 1, 2, 3] = 1  # joint 1 at (28, 20): the centre (28, 20)
    torch.testing.assert_close(losses["part"], part_loss(out["part"], scmap, weights))
    without = compute_losses(cfg, out, batch._replace(ignore=None))
    assert abs(float(without["part"]) - float(losses["part"])) > 1e-4
