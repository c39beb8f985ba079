"""The DALI data pipeline on CPU: geometry of joints vs image content, mirroring, padding, sharding, determinism,
exact resume, eval padding, scale clamping, corrupt images, and DALI vs the PIL reference on real frames.

Synthetic images carry a coloured dot at every labelled joint (one colour per person and joint id), so a test can find
the dot in the pipeline's output and check it sits on the transformed joint (and that mirroring swapped the ids).
Pipelines are built once per module (DALI start-up is the slow part).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from oracles.shards import write_samples

from fastpose import config
from fastpose.baselines import pil_sample
from fastpose.pipeline import (
    Augment,
    Params,
    batches_per_epoch,
    build_loader,
    epoch_order,
    rotation_matrix,
    sample_params,
    transform_joints,
)
from fastpose.shards import Sample, ShardDataset

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DLC = DATA / "deeplabcut" / "Reaching-Mackenzie-2018-08-30" / "labeled-data" / "reachingvideo1"

K = 4
ALL_JOINTS = [[0, 1], [2, 3]]  # two symmetric pairs
PERM = (1, 0, 3, 2)
# Colour of (person p, joint k) = COLOURS[p * K + k]; far apart in RGB so a dot is never mistaken for another.
COLOURS = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0),
                    (255, 0, 255), (0, 255, 255), (255, 255, 255), (128, 0, 255)], np.float32)  # fmt: skip
BACKGROUND = 40
N_DOTS = 16


def _dot_samples(n: int, seed: int) -> list[Sample]:
    """n synthetic PNGs of random sizes; sample 1 has two persons, sample 2 lacks joint 3."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        h, w = int(rng.integers(64, 121)), int(rng.integers(64, 141))
        img = np.full((h, w, 3), BACKGROUND, np.uint8)
        persons = 2 if i == 1 else 1
        joints = np.zeros((persons, K, 3), np.float32)
        points: list[tuple[int, int]] = []
        for p in range(persons):
            for k in range(K):
                if i == 2 and k == 3:
                    continue  # absent joint: x = y = visibility = 0
                while True:  # dots at least 22 px apart, 7 px from the border
                    x, y = int(rng.integers(7, w - 7)), int(rng.integers(7, h - 7))
                    if all((x - a) ** 2 + (y - b) ** 2 >= 22**2 for a, b in points):
                        break
                points.append((x, y))
                joints[p, k] = (x, y, 2)
                cv2.circle(img, (x, y), 3, tuple(int(c) for c in COLOURS[p * K + k][::-1]), -1)  # BGR
        ok, buf = cv2.imencode(".png", img)
        samples.append(Sample(image=buf.tobytes(), image_format="png", size=(3, h, w), joints=joints))
    return samples


def _write(root: Path, samples: list[Sample], num_joints: int = K, all_joints=ALL_JOINTS) -> Path:
    return write_samples(root, samples, num_joints, all_joints=all_joints, samples_per_shard=5)


def _cfg(*overrides: str) -> config.Config:
    return config.load(None, ["num_workers=2", "num_threads=2", "seed=7", *overrides])


def _collect(loader, epochs: int) -> list[tuple[int, int, dict]]:
    """(epoch, batch, numpy copy of the Batch fields) for `epochs` epochs."""
    out = []
    for _ in range(epochs):
        epoch = loader.epoch
        for b, batch in enumerate(loader):
            out.append((epoch, b, {k: v.numpy().copy() for k, v in batch._asdict().items() if v is not None}))
    return out


@pytest.fixture(scope="module")
def dots(tmp_path_factory):
    root = _write(tmp_path_factory.mktemp("dots") / "ds", _dot_samples(N_DOTS, seed=1))
    return root, ShardDataset(root, "train")


@pytest.fixture(scope="module")
def train_run(dots):
    """Two train epochs with scale jitter and mirroring, batch 4."""
    cfg = _cfg("mirror=true", "scale_jitter_lo=0.7", "scale_jitter_up=1.3", "batch_size=4")
    with build_loader(cfg, dots[0]) as loader:
        assert len(loader) == N_DOTS // 4
        batches = _collect(loader, 2)
        assert (loader.epoch, loader.batch, loader.clamped) == (2, 0, 0)
    return cfg, batches


@pytest.fixture(scope="module")
def crop_run(dots):
    cfg = _cfg("mirror=true", "scale_jitter_lo=0.9", "scale_jitter_up=1.1", "batch_size=4", "crop_size=[48, 40]")
    with build_loader(cfg, dots[0]) as loader:
        return cfg, _collect(loader, 1)


def _check_dots(ds: ShardDataset, cfg, batches) -> int:
    """Every present joint has its dot (of the right colour, after the id swap) within 1 px. Returns joints checked
    (those whose dot the crop did not cut)."""
    mean = np.asarray(cfg.mean_pixel, np.float32)[:, None, None]
    checked = 0
    for _, _, b in batches:
        for i in range(len(b["index"])):
            vh, vw = b["valid_hw"][i]
            img = b["images"][i] + mean  # (3, H, W) back in 0..255
            src = ds.joints(int(b["index"][i]))  # (P, K, 3)
            for p in range(src.shape[0]):
                for k in range(K):
                    x, y, present = b["joints"][i, p, k]
                    if not present:
                        continue
                    src_k = PERM[k] if b["flipped"][i] else k  # the mirrored image's joint k was joint perm[k]
                    assert src[p, src_k, 2] > 0
                    edge = 3 * b["scale"][i] + 1.5  # dot radius + blur: a dot the crop cuts has a biased centroid
                    if not (edge <= x <= vw - 1 - edge and edge <= y <= vh - 1 - edge):
                        continue
                    r = 6
                    x0, y0 = max(int(round(x)) - r, 0), max(int(round(y)) - r, 0)
                    win = img[:, y0:min(int(round(y)) + r + 1, vh), x0:min(int(round(x)) + r + 1, vw)]
                    close = np.abs(win - COLOURS[p * K + src_k][:, None, None]).max(0) < 70  # (h, w)
                    assert close.sum() >= 3, f"no dot for joint {k} of sample {b['index'][i]} at ({x:.1f}, {y:.1f})"
                    ys, xs = np.nonzero(close)
                    assert abs(xs.mean() + x0 - x) <= 1.0 and abs(ys.mean() + y0 - y) <= 1.0
                    checked += 1
    return checked


def test_joints_stay_on_their_dots_after_scale_and_mirror(dots, train_run):
    cfg, batches = train_run
    flips = np.concatenate([b["flipped"] for _, _, b in batches])
    assert flips.any() and not flips.all()  # both branches were exercised
    assert _check_dots(dots[1], cfg, batches) == 2 * (N_DOTS * K + K - 1)  # every present joint, both epochs


def test_crop_keeps_joints_on_their_dots(dots, crop_run):
    cfg, batches = crop_run
    for _, _, b in batches:
        assert b["images"].shape[2:] == (48, 48)  # crop 48 x 40 (w x h), padded to multiples of 16
        assert (b["valid_hw"] <= [40, 48]).all()
        for i in range(len(b["index"])):
            s = b["scale"][i]
            h, w = dots[1][int(b["index"][i])].size[1:]
            # The crop is the scaled image clipped to 48 x 40; its origin keeps the window inside the scaled image.
            assert tuple(b["valid_hw"][i]) == (min(40, math.floor(h * s)), min(48, math.floor(w * s)))
            ox, oy = b["offset"][i]
            assert 0 <= ox <= math.floor(w * s) - b["valid_hw"][i, 1]
            assert 0 <= oy <= math.floor(h * s) - b["valid_hw"][i, 0]
            # When the labelled joints' box fits in the window, the crop keeps all of them.
            src = dots[1].joints(int(b["index"][i]))
            xy = (src[src[..., 2] > 0][:, :2] + 0.5) * np.array([math.floor(w * s) / w, math.floor(h * s) / h]) - 0.5
            span = xy.max(0) - xy.min(0)
            if span[0] <= b["valid_hw"][i, 1] - 1 and span[1] <= b["valid_hw"][i, 0] - 1:
                assert b["joints"][i, ..., 2].sum() == len(xy)
            else:
                assert 0 < b["joints"][i, ..., 2].sum() < len(xy)
    assert _check_dots(dots[1], cfg, batches) > 0  # the dots that survived the crop are where the joints say


def test_padding_is_reported_and_zero(dots, train_run):
    _, batches = train_run
    sizes = dots[1].column("size").reshape(-1, 3)
    for _, _, b in batches:
        n, c, hp, wp = b["images"].shape
        valid = b["valid_hw"]
        assert (hp, wp) == (math.ceil(valid[:, 0].max() / 16) * 16, math.ceil(valid[:, 1].max() / 16) * 16)
        for i in range(n):
            _, h, w = sizes[b["index"][i]]
            s = float(b["scale"][i])
            assert 0.7 * 0.999 <= s <= 1.3 * 1.001
            assert tuple(valid[i]) == (math.floor(h * s), math.floor(w * s))
            vh, vw = valid[i]
            assert not b["images"][i, :, vh:, :].any() and not b["images"][i, :, :, vw:].any()
            assert np.abs(b["images"][i, :, :vh, :vw]).min() > 0  # mean-subtracted background is never 0


def test_epochs_are_permutations_and_differ(train_run):
    _, batches = train_run
    e0 = np.concatenate([b["index"] for e, _, b in batches if e == 0])
    e1 = np.concatenate([b["index"] for e, _, b in batches if e == 1])
    assert sorted(e0) == sorted(e1) == list(range(N_DOTS))
    assert (e0 != e1).any()


def test_resume_reproduces_the_uninterrupted_stream(dots, train_run):
    """A second run of the same seed resumed at (epoch 0, batch 2) yields the same batches, bit for bit."""
    cfg, batches = train_run
    with build_loader(cfg, dots[0], start_epoch=0, start_batch=2) as loader:
        assert (loader.epoch, loader.batch) == (0, 2)
        resumed = _collect(loader, 2)
    assert [(e, b) for e, b, _ in resumed] == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (1, 3)]
    for (_, _, got), (_, _, want) in zip(resumed, batches[2:], strict=True):
        for key in want:
            assert np.array_equal(got[key], want[key]), key


def test_transform_joints_hand_computed():
    joints = np.array([[[3, 2, 2], [7, 5, 1], [0, 0, 0], [9, 7, 2]]], np.float32)  # (1, 4, 3)
    # 10 x 8 -> 5 x 4: x' = (x + 0.5) * 0.5 - 0.5; then mirror in width 5: x'' = 4 - x'; ids 0<->1, 2<->3.
    p = Params(scale=0.5, clamped=False, res_w=5, res_h=4, crop_x=0, crop_y=0, crop_w=5, crop_h=4, flip=True)
    out = transform_joints(joints, 10, 8, p, PERM)
    want = [[4 - 3.25, 2.25, 1], [4 - 1.25, 0.75, 1], [4 - 4.25, 3.25, 1], [0, 0, 0]]
    np.testing.assert_allclose(out[0], want, atol=1e-6)
    # A crop origin (1, 1), window 3 x 2: (1.25, 0.75) -> (0.25, -0.25) stays, (3.25, 2.25) -> (2.25, 1.25) stays,
    # (4.25, 3.25) -> (3.25, 2.25) falls outside [-0.5, 2.5] x [-0.5, 1.5] and becomes absent.
    p = Params(scale=0.5, clamped=False, res_w=5, res_h=4, crop_x=1, crop_y=1, crop_w=3, crop_h=2, flip=False)
    out = transform_joints(joints, 10, 8, p, PERM)
    np.testing.assert_allclose(out[0], [[0.25, -0.25, 1], [2.25, 1.25, 1], [0, 0, 0], [0, 0, 0]], atol=1e-6)


def test_transform_joints_crop_along_one_axis_and_joints_outside_without_a_crop():
    # 10 x 8 -> 5 x 6 (x' = 0.5 x - 0.25, y' = 0.75 y - 0.125: different ratios, exact in binary).
    joints = np.array([[[3, 4, 2], [11, 2, 1], [3, -2, 1], [0, 0, 0]]], np.float32)  # joints 1, 2 outside the image
    p = Params(scale=0.5, clamped=False, res_w=5, res_h=6, crop_x=0, crop_y=0, crop_w=5, crop_h=6, flip=False)
    out = transform_joints(joints, 10, 8, p, PERM)
    # No crop, no rotation: joints labelled outside the image stay present (the reference's arithmetic).
    np.testing.assert_array_equal(out[0], [[1.25, 2.875, 1], [5.25, 1.375, 1], [1.25, -1.625, 1], [0, 0, 0]])
    # A crop in x only (window [-0.5, 3.5] x [-0.5, 5.5], origin x 1): joint 1 (x 4.25) is cut; joint 2 (y -1.625)
    # too, though its y was not cropped.
    p = Params(scale=0.5, clamped=False, res_w=5, res_h=6, crop_x=1, crop_y=0, crop_w=4, crop_h=6, flip=False)
    out = transform_joints(joints, 10, 8, p, PERM)
    np.testing.assert_array_equal(out[0], [[0.25, 2.875, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0]])
    # A crop in y only (window [-0.5, 4.5] x [-0.5, 3.5], origin y 1): joint 1 (x 5.25) is cut though x was not.
    p = Params(scale=0.5, clamped=False, res_w=5, res_h=6, crop_x=0, crop_y=1, crop_w=5, crop_h=4, flip=False)
    out = transform_joints(joints, 10, 8, p, PERM)
    np.testing.assert_array_equal(out[0], [[1.25, 1.875, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0]])


def test_rotation_matrix_hand_computed():
    # About the centre (2, 1) of a 5 x 3 image; multiples of 90 degrees exactly (no 6e-17 for cos 90).
    np.testing.assert_array_equal(rotation_matrix(90, 5, 3), [[0, 1, 1], [-1, 0, 3]])  # x' = y + 1, y' = 3 - x
    np.testing.assert_array_equal(rotation_matrix(180, 5, 3), [[-1, 0, 4], [0, -1, 2]])
    np.testing.assert_array_equal(rotation_matrix(270, 5, 3), [[0, -1, 3], [1, 0, -1]])
    np.testing.assert_array_equal(rotation_matrix(-90, 5, 3), [[0, -1, 3], [1, 0, -1]])
    np.testing.assert_array_equal(rotation_matrix(450, 5, 3), [[0, 1, 1], [-1, 0, 3]])
    np.testing.assert_array_equal(rotation_matrix(0, 5, 3), [[1, 0, 0], [0, 1, 0]])
    c = math.sqrt(3) / 2  # cos 30; sin 30 = 1/2
    np.testing.assert_allclose(rotation_matrix(30, 5, 3), [[c, 0.5, 2 - 2 * c - 0.5], [-0.5, c, 1 + 1 - c]],
                               rtol=0, atol=1e-15)
    # Counter-clockwise as seen (y down): the point right of the centre goes up.
    np.testing.assert_array_equal(rotation_matrix(90, 5, 3) @ [4, 1, 1], [2, -1])


def test_params_matrix_scales_rotates_and_crops():
    # 10 x 8 -> 5 x 6: x1 = 0.5 x - 0.25, y1 = 0.75 y - 0.125; 90 degrees about (2, 2.5): x2 = y1 - 0.5,
    # y2 = 4.5 - x1; crop origin (1, 2): x3 = 0.75 y - 1.625, y3 = 2.75 - 0.5 x.
    p = Params(scale=0.5, clamped=False, res_w=5, res_h=6, crop_x=1, crop_y=2, crop_w=3, crop_h=3, flip=False,
               angle=90.0)
    np.testing.assert_array_equal(p.matrix(10, 8), [[0, 0.75, -1.625], [-0.5, 0, 2.75]])
    p = Params(scale=0.5, clamped=False, res_w=5, res_h=6, crop_x=1, crop_y=2, crop_w=3, crop_h=3, flip=False)
    np.testing.assert_array_equal(p.matrix(10, 8), [[0.5, 0, -1.25], [0, 0.75, -2.125]])  # no rotation


# Source (x, y, visibility) -> (x3, y3) = (0.75 y - 1.625, 2.75 - 0.5 x) through the affine above, then the window
# [-0.5, 2.5]^2 of a 3 x 3 crop. Joints 4..7 lie exactly on its four edges (kept); 1, 3, 8, 9 up to one pixel past
# one edge each (cut); joint 2 is unlabelled (visibility 0) though it lands inside, like joint 0.
ROTATED = np.array([[[3, 4, 2], [1, 6, 1], [3, 4, 0], [8, 2, 2], [6.5, 5, 1], [0.5, 3, 2], [2, 1.5, 1],
                     [3, 5.5, 1], [3, 0.5, 2], [0, 4, 1]]], np.float32)  # (1, 10, 3)
ROTATED_OUT = [[1.375, 1.25, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0],  # 1: x3 2.875; 3: y3 -1.25
               [2.125, -0.5, 1], [0.625, 2.5, 1], [-0.5, 1.75, 1], [2.5, 1.25, 1],
               [0, 0, 0], [0, 0, 0]]  # 8: x3 -1.25; 9: y3 2.75


def test_transform_joints_rotated_and_cropped_hand_computed():
    p = Params(scale=0.5, clamped=False, res_w=5, res_h=6, crop_x=1, crop_y=2, crop_w=3, crop_h=3, flip=False,
               angle=90.0)
    out = transform_joints(ROTATED, 10, 8, p, ())
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[0], ROTATED_OUT)
    # Mirrored: x -> 2 - x, and joint k of the mirrored image was joint perm[k] (0 <-> 4, 5 <-> 7).
    perm = (4, 1, 2, 3, 0, 7, 6, 5, 8, 9)
    out = transform_joints(ROTATED, 10, 8, dataclasses.replace(p, flip=True), perm)
    want = np.array(ROTATED_OUT)[list(perm)]
    want[:, 0] = np.where(want[:, 2] > 0, 2 - want[:, 0], 0)
    np.testing.assert_array_equal(out[0], want)
    np.testing.assert_array_equal(out[0, [0, 4, 5, 7]], [[-0.125, -0.5, 1], [0.625, 1.25, 1], [-0.5, 1.25, 1],
                                                         [1.375, 2.5, 1]])


def test_transform_joints_rotated_without_a_crop_drops_joints_turned_out_of_the_image():
    # No crop: x2 = 0.75 y - 0.625, y2 = 4.75 - 0.5 x in the 5 x 6 image ([-0.5, 4.5] x [-0.5, 5.5]).
    joints = np.array([[[3, 4, 2], [1, 7.5, 1]]], np.float32)  # joint 1 -> x2 = 5 > 4.5
    p = Params(scale=0.5, clamped=False, res_w=5, res_h=6, crop_x=0, crop_y=0, crop_w=5, crop_h=6, flip=False,
               angle=90.0)
    np.testing.assert_array_equal(transform_joints(joints, 10, 8, p, ())[0], [[2.375, 3.25, 1], [0, 0, 0]])
    assert transform_joints(np.zeros((0, 2, 3), np.float32), 10, 8, p, ()).shape == (0, 2, 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("angle", [0.0, 30.0])
def test_mirrored_joints_are_the_float32_mirror_of_the_unmirrored_ones(dtype, angle):
    # Inexact ratios (7 -> 3, 9 -> 5) and a 30 degree rotation: the mirror x -> crop_w - 1 - x applies to the float32
    # joints of the unmirrored transform, whatever the input's float type (numpy gives float64).
    rng = np.random.default_rng(0)
    joints = np.concatenate([rng.uniform(0, 7, (2, 6, 2)), np.ones((2, 6, 1))], axis=-1).astype(np.float32)
    p = Params(scale=0.43, clamped=False, res_w=3, res_h=5, crop_x=0, crop_y=1, crop_w=3, crop_h=4, flip=False,
               angle=angle)
    plain = transform_joints(joints.astype(dtype), 7, 9, p, PERM)
    mirrored = transform_joints(joints.astype(dtype), 7, 9, dataclasses.replace(p, flip=True), PERM + (5, 4))
    assert plain.dtype == mirrored.dtype == np.float32 and plain[..., 2].sum() >= 6  # most joints kept
    want = plain[:, list(PERM + (5, 4))]
    want[..., 0] = np.where(want[..., 2] > 0, np.float32(2) - want[..., 0], 0)
    np.testing.assert_array_equal(mirrored, want)


def test_scale_clamp_and_crop_origin_keep_the_person():
    aug = Augment(train=True, global_scale=2.0, jitter_lo=1.0, jitter_up=1.0, mirror=False, max_input_size=100,
                  crop_w=20, crop_h=20, seed=3, perm=PERM)
    joints = np.array([[[50, 40, 2], [60, 45, 2], [0, 0, 0], [55, 30, 1]]], np.float32)
    for index in range(20):
        p = sample_params(aug, 0, index, 100, 80, joints)
        # 200 x 160 > 100^2: s = 100 / sqrt(100 * 80) = 1.118..., 111 x 89 <= 100^2.
        assert p.clamped and p.scale == pytest.approx(100 / math.sqrt(8000))
        assert (p.res_w, p.res_h) == (111, 89)
        out = transform_joints(joints, 100, 80, p, PERM)
        assert out[0, :, 2].tolist() == [1, 1, 0, 1]  # the labelled box fits in 20 x 20: every joint kept
        assert (out[0, [0, 1, 3], :2] >= -0.5).all() and (out[0, [0, 1, 3], :2] <= 19.5).all()


def _crop_origins(joints: np.ndarray, n: int = 300) -> tuple[set, set]:
    """The crop origins (x, y) sample_params draws for a 100 x 80 image at scale 1 (x' = x), crop 20 x 20."""
    aug = Augment(train=True, global_scale=1.0, jitter_lo=1.0, jitter_up=1.0, mirror=False, max_input_size=1000,
                  crop_w=20, crop_h=20, seed=11, perm=PERM)
    params = [sample_params(aug, 0, index, 100, 80, joints) for index in range(n)]
    assert all((p.res_w, p.res_h, p.crop_w, p.crop_h) == (100, 80, 20, 20) for p in params)
    return {p.crop_x for p in params}, {p.crop_y for p in params}


def test_crop_origins_are_exactly_those_that_keep_the_labelled_joints():
    # The window [o - 0.5, o + 19.5] holds x when x - 19.5 <= o <= x + 0.5. Labelled x in [30, 42], y in [10, 25]:
    # o_x in ceil(22.5) .. floor(30.5) = 23..30, o_y in 6..10 (joint 2, unlabelled, is ignored). 300 draws hit each.
    joints = np.array([[[30, 10, 2], [42, 25, 1], [90, 70, 0], [35, 18, 2]]], np.float32)
    xs, ys = _crop_origins(joints)
    assert xs == set(range(23, 31)) and ys == set(range(6, 11))
    # Spanning more than the window (x 10 and 50): the window keeps one joint drawn at random, the anchor:
    # o_x in 0..10 (anchor 10) or 31..50 (anchor 50); y as above (10 and 25 fit: 6..10).
    joints = np.array([[[10, 10, 2], [50, 25, 2], [0, 0, 0], [0, 0, 0]]], np.float32)
    xs, ys = _crop_origins(joints)
    assert xs <= set(range(0, 11)) | set(range(31, 51)) and {0, 10, 31, 50} <= xs and ys == set(range(6, 11))
    # A labelled joint outside the image (x -5): no window holds it, any origin 0..80 is drawn.
    joints = np.array([[[-5, 12, 2], [0, 0, 0], [0, 0, 0], [0, 0, 0]]], np.float32)
    xs, ys = _crop_origins(joints)
    assert 0 in xs and max(xs) <= 80 and max(xs) - min(xs) >= 70 and ys == set(range(0, 13))
    # No labelled joint: any origin, 0..80 and 0..60.
    xs, ys = _crop_origins(np.zeros((1, 4, 3), np.float32))
    assert min(xs) == min(ys) == 0 and max(xs) <= 80 and max(ys) <= 60 and max(xs) >= 70
    # Near the right and bottom edges (x 85..95, y 75): the window stops at the image, 76..80 and 56..60.
    joints = np.array([[[85, 75, 2], [95, 75, 2], [0, 0, 0], [0, 0, 0]]], np.float32)
    assert _crop_origins(joints) == (set(range(76, 81)), set(range(56, 61)))
    # Joints spanning exactly what the window holds (x 30 and 49.5): one origin, 30, without an anchor.
    joints = np.array([[[30, 40, 2], [49.5, 40, 2], [0, 0, 0], [0, 0, 0]]], np.float32)
    assert _crop_origins(joints)[0] == {30}


def test_small_images_are_scaled_up_to_min_input_size():
    aug = Augment(train=False, global_scale=1.0, jitter_lo=1.0, jitter_up=1.0, mirror=False, max_input_size=100,
                  crop_w=0, crop_h=0, seed=0, perm=(), min_input_size=64)
    p = sample_params(aug, 0, 0, 40, 80, np.zeros((0, 1, 3), np.float32))
    assert p.clamped and p.scale == pytest.approx(1.6) and (p.res_w, p.res_h) == (64, 128)
    # the memory bound wins over the minimum: 40 x 400 at s = 1.6 would exceed 100^2
    p = sample_params(aug, 0, 0, 40, 400, np.zeros((0, 1, 3), np.float32))
    assert p.scale == pytest.approx(100 / math.sqrt(40 * 400))


def test_sharding_splits_an_epoch_into_disjoint_covering_parts():
    n, b = 23, 3
    for epoch in range(3):
        parts = [epoch_order(n, epoch, seed=5, batch_size=b, shard_id=r, num_shards=2) for r in range(2)]
        assert [len(p) for p in parts] == [9, 9] and batches_per_epoch(n, b, 2, True) == 3  # floor(23 / 2 / 3)
        assert not set(parts[0]) & set(parts[1])
        # Interleaved: the ranks' i-th batches together are the i-th batch of one process with batch 2 x b.
        perm = epoch_order(n, epoch, seed=5, batch_size=1, shard_id=0, num_shards=1)
        for i in range(3):
            together = np.concatenate([parts[0][i * b:(i + 1) * b], parts[1][i * b:(i + 1) * b]])
            assert sorted(together) == sorted(perm[i * 2 * b:(i + 1) * 2 * b])
    parts = [epoch_order(n, 0, seed=5, batch_size=b, shard_id=r, num_shards=3, train=False) for r in range(3)]
    assert [len(p) for p in parts] == [9, 9, 9]  # ceil(ceil(23 / 3) / 3) = 3 batches each
    real = np.concatenate(parts)
    assert sorted(real[real >= 0]) == list(range(n)) and (real < 0).sum() == 27 - 23


@pytest.fixture(scope="module")
def eval_runs(dots):
    """Eval on two ranks, batch 3, global_scale 0.8, max_input_size 80 (some samples are clamped)."""
    cfg = _cfg("global_scale=0.8", "max_input_size=80", "mirror=true", "scale_jitter_lo=0.5")
    runs = []
    for rank in range(2):
        with build_loader(cfg, dots[0], "train", train=False, batch_size=3, shard_id=rank, num_shards=2) as loader:
            runs.append((_collect(loader, 1), loader.clamped))
    return cfg, runs


def test_eval_sees_every_sample_once_with_padding(dots, eval_runs):
    _, runs = eval_runs
    indices = [np.concatenate([b["index"] for _, _, b in batches]) for batches, _ in runs]
    assert [len(i) for i in indices] == [9, 9]  # 8 samples per rank in 3 batches of 3: one padding row each
    assert indices[0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, -1]
    assert indices[1].tolist() == [8, 9, 10, 11, 12, 13, 14, 15, -1]
    last = runs[0][0][-1][2]
    assert not last["joints"][2].any() and last["joints"][:2, :, :, 2].any()  # padding rows carry no joints


def test_eval_has_no_augmentation_and_clamps_the_scale(dots, eval_runs):
    cfg, runs = eval_runs
    sizes = dots[1].column("size").reshape(-1, 3)
    want_clamped = 0
    for batches, clamped in runs:
        n_clamped = 0
        for _, _, b in batches:
            assert not b["flipped"].any() and not b["offset"].any()
            for i, index in enumerate(b["index"]):
                if index < 0:
                    continue  # a padding row: any sample's content, not counted
                _, h, w = sizes[index]
                over = math.floor(w * 0.8) * math.floor(h * 0.8) > 80**2
                s = 80 / math.sqrt(w * h) if over else 0.8
                assert b["scale"][i] == pytest.approx(s, rel=1e-6)
                assert tuple(b["valid_hw"][i]) == (math.floor(h * s), math.floor(w * s))
                n_clamped += over
        assert clamped == n_clamped
        want_clamped += clamped
    assert want_clamped > 0


def test_mirror_swaps_symmetric_ids_hand_check(dots, train_run):
    """On a flipped sample, output joint 0 is source joint 1 mirrored: x0' = W' - 1 - x1 * r."""
    _, batches = train_run
    sizes = dots[1].column("size").reshape(-1, 3)
    for _, _, b in batches:
        for i in np.nonzero(b["flipped"])[0]:
            index = int(b["index"][i])
            src = dots[1].joints(index)
            _, h, w = sizes[index]
            vh, vw = b["valid_hw"][i]
            x1 = (src[0, 1, 0] + 0.5) * (vw / w) - 0.5
            y1 = (src[0, 1, 1] + 0.5) * (vh / h) - 0.5
            np.testing.assert_allclose(b["joints"][i, 0, 0, :2], [vw - 1 - x1, y1], atol=1e-4)
            return
    pytest.fail("no flipped sample")


# --- corrupt images ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corrupt(tmp_path_factory):
    samples = _dot_samples(6, seed=2)
    truncated = samples[3].image[: len(samples[3].image) // 2]
    samples[3] = Sample(image=truncated, image_format="png", size=samples[3].size, joints=samples[3].joints)
    return _write(tmp_path_factory.mktemp("bad") / "ds", samples)


@pytest.mark.slow
def test_corrupt_image_is_a_clear_error_and_never_hangs(corrupt):
    script = textwrap.dedent(f"""
        from fastpose import config
        from fastpose.errors import UserError
        from fastpose.pipeline import build_loader
        cfg = config.load(None, ["num_workers=2", "batch_size=2"])
        loader = build_loader(cfg, {str(corrupt)!r}, train=False)
        try:
            for b in loader:
                pass
        except UserError as e:
            print("USERERROR", e)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    message = r.stdout.split("USERERROR", 1)[1]
    assert f"{corrupt / 'train' / 'shard-00000.h5'}: sample 3 (row 3" in message
    assert "skip_bad" in message


def test_corrupt_image_is_skipped_and_counted(corrupt):
    with build_loader(_cfg("batch_size=2"), corrupt, train=False, skip_bad=True) as loader:
        rows = [b.index.tolist() for b in loader]
        assert loader.skipped == [3]
    assert rows == [[0, 1], [2, -1], [4, 5]]  # an eval row of a skipped sample becomes padding
    with build_loader(_cfg("batch_size=3"), corrupt, train=True, skip_bad=True) as loader:
        seen = np.concatenate([b.index.numpy() for b in loader])
        assert 3 not in seen and len(seen) == 6 and loader.skipped == [3]


# --- real frames ------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not DLC.is_dir(), reason=f"shared data folder {DLC} is absent (a fresh clone without ../shared)")
def test_real_frames_match_the_pil_reference(tmp_path):
    """4 DeepLabCut frames (two sizes) at scale 0.5: DALI's resize ~ PIL's bilinear, joints where the labels say."""
    rows = list(csv.reader((DLC / "CollectedData_Mackenzie.csv").open()))[3:]
    rows = [rows[0], rows[1], rows[-2], rows[-1]]
    samples = []
    for row in rows:
        data = (DLC.parents[1] / row[0]).read_bytes()
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        v = [float(x) if x else 0.0 for x in row[1:]]
        joints = np.array([[[v[2 * k], v[2 * k + 1], 2 if row[1 + 2 * k] else 0] for k in range(5)]], np.float32)
        samples.append(Sample(image=data, image_format="png", size=(3, *img.shape[:2]), joints=joints))
    root = _write(tmp_path / "dlc", samples, num_joints=5, all_joints=[])
    cfg = _cfg("global_scale=0.5")
    with build_loader(cfg, root, train=False, batch_size=2) as loader:
        batches = list(loader)
    assert sorted(i for b in batches for i in b.index.tolist()) == [0, 1, 2, 3]
    for batch in batches:
        for i, index in enumerate(batch.index.tolist()):
            s = samples[index]
            h, w = s.size[1:]
            vh, vw = batch.valid_hw[i].tolist()
            assert (vh, vw) == (math.floor(h * 0.5), math.floor(w * 0.5))
            ref = pil_sample(s.image, vw, vh, False, cfg.mean_pixel)  # (3, vh, vw)
            diff = np.abs(batch.images[i, :, :vh, :vw].numpy() - ref)
            # Same filter (antialiased bilinear), different rounding: measured mean 0.15, 99th percentile 1, max 4.
            assert diff.mean() < 0.5 and np.percentile(diff, 99) <= 2
            present = s.joints[0, :, 2] > 0
            want = (s.joints[0, present, :2] + 0.5) * np.array([vw / w, vh / h]) - 0.5
            np.testing.assert_allclose(batch.joints[i, 0, present, :2].numpy(), want, atol=1e-4)
            assert batch.joints[i, 0, :, 2].tolist() == present.astype(float).tolist()
    assert torch.is_tensor(batches[0].images) and batches[0].images.dtype == torch.float32
