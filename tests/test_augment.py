"""The training augmentations of the DALI pipeline (issue 21): rotation folded into the scale's warp, colour, Gaussian
blur, motion blur and noise. Goldens: the defaults reproduce the pipeline as it was before these existed (a digest of
its output, recorded with that code), a 90 degree rotation moves pixels and joints exactly, a 30 degree one within
1e-3 px of the affine written out by hand; a dot drawn at each joint lands within 1 px of the transformed joint under
every combination of rotation, scale jitter, mirror and crop; photometric ops move no joint; absent joints stay
absent, rotated-out joints become absent; resume is exact with every augmentation on; the PIL baseline does the same
work. Tiny images, a few samples, no worker processes except in the resume test.
"""

from __future__ import annotations

import hashlib
import math

import cv2
import numpy as np
import pytest
from oracles.shards import write_samples
from pycocotools import mask as mask_utils

from fastpose import config
from fastpose.baselines import pil_batches
from fastpose.errors import UserError
from fastpose.pipeline import (
    Params,
    augment,
    build_loader,
    ignore_grid,
    motion_kernel,
    noise_field,
    normal_quantiles,
    sample_params,
)
from fastpose.shards import Sample, ShardDataset

K = 3
ALL_JOINTS = [[0, 1], [2]]  # joints 0 and 1 swap under mirroring, 2 stays
PERM = (1, 0, 2)
COLOURS = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255)], np.float32)  # RGB of joint k's dot
BACKGROUND = 40
N = 16
PHOTOMETRIC = ["brightness_range=[0.6, 1.4]", "contrast_range=[0.6, 1.4]", "saturation_range=[0.5, 1.5]",
               "hue_range=[-30, 30]", "color_p=1", "gaussian_blur_range=[0.6, 1.6]", "gaussian_blur_p=1",
               "motion_blur_range=[3, 9]", "motion_blur_p=1", "gaussian_noise_range=[4, 12]", "gaussian_noise_p=1"]
EVERYTHING = ["mirror=true", "scale_jitter_lo=0.8", "scale_jitter_up=1.2", "rotation_range=[-40, 40]",
              "rotation_p=0.7", *[o.replace("_p=1", "_p=0.7") for o in PHOTOMETRIC]]


def _dot_samples(n: int, seed: int) -> list[Sample]:
    """n PNGs (56-96 px) with a dot of radius 3 at each labelled joint, >= 20 px apart and 9 px from the border;
    sample 2 lacks joint 2."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        h, w = int(rng.integers(56, 97)), int(rng.integers(56, 97))
        img = np.full((h, w, 3), BACKGROUND, np.uint8)
        joints = np.zeros((1, K, 3), np.float32)
        points: list[tuple[int, int]] = []
        for k in range(K):
            if i == 2 and k == 2:
                continue  # absent: x = y = visibility = 0
            while True:
                x, y = int(rng.integers(9, w - 9)), int(rng.integers(9, h - 9))
                if all((x - a) ** 2 + (y - b) ** 2 >= 20**2 for a, b in points):
                    break
            points.append((x, y))
            joints[0, k] = (x, y, 2)
            cv2.circle(img, (x, y), 3, tuple(int(c) for c in COLOURS[k][::-1]), -1)  # BGR
        samples.append(Sample(image=cv2.imencode(".png", img)[1].tobytes(), image_format="png", size=(3, h, w),
                              joints=joints))
    return samples


def _write(root, samples: list[Sample]):
    return write_samples(root, samples, K, all_joints=ALL_JOINTS, samples_per_shard=8)


def _cfg(*overrides: str) -> config.Config:
    return config.load(None, ["num_workers=0", "num_threads=1", "seed=3", "batch_size=4", *overrides])


def _collect(loader, epochs: int = 1) -> list[dict]:
    out = []
    for _ in range(epochs):
        for batch in loader:
            out.append({k: v.numpy().copy() for k, v in batch._asdict().items() if v is not None})
    return out


def _pixels(b: dict, i: int, mean) -> np.ndarray:
    """(3, h, w) uint8 of sample i (mean added back, padding cut)."""
    vh, vw = b["valid_hw"][i]
    return np.rint(b["images"][i, :, :vh, :vw] + np.asarray(mean, np.float32)[:, None, None]).astype(np.uint8)


@pytest.fixture(scope="module")
def dots(tmp_path_factory):
    root = _write(tmp_path_factory.mktemp("aug") / "ds", _dot_samples(N, seed=11))
    return root, ShardDataset(root, "train")


# --- defaults: the pipeline as before ------------------------------------------------------------------------------

# sha256 of the batches below, recorded with fastpose/pipeline.py before the augmentations existed (commit 83041d3);
# the CPU decoders and resize are deterministic, so any change of the default path changes it.
GOLDEN = {"plain": "012ae5ff794de27dca3529369ca16bbf5fddee9169dcbf7abdafe2de8239f56d",
          "crop": "04a8362b737f3b44ff536069f0abcd56d0b34f9be306ad14d6c196c493167578"}


def _digest(batches: list[dict]) -> str:
    h = hashlib.sha256()
    for b in batches:
        for key in ("images", "joints", "scale", "flipped", "valid_hw", "index", "offset"):
            h.update(np.ascontiguousarray(b[key]).tobytes())
    return h.hexdigest()


DEFAULT_RUNS = {"plain": ["mirror=true", "scale_jitter_lo=0.7", "scale_jitter_up=1.3"],
                "crop": ["mirror=true", "scale_jitter_lo=0.9", "scale_jitter_up=1.1", "crop_size=[48, 40]"]}


@pytest.mark.parametrize("name", ["plain", "crop"])
def test_defaults_leave_the_pipeline_bit_for_bit_unchanged(dots, name):
    cfg = _cfg(*DEFAULT_RUNS[name])
    assert not any(augment(cfg, train=True, perm=PERM).stages().values())
    with build_loader(cfg, dots[0]) as loader:
        assert _digest(_collect(loader, 2)) == GOLDEN[name]
    # Every range set but every probability 0: no stage is built, the same bits.
    off = [o.split("=")[0] + "=0" if o.split("=")[0].endswith("_p") else o for o in EVERYTHING if "range" in o
           or o.split("=")[0].endswith("_p")]
    with build_loader(_cfg(*DEFAULT_RUNS[name], *off), dots[0]) as loader:
        assert _digest(_collect(loader, 2)) == GOLDEN[name]


# --- rotation goldens ------------------------------------------------------------------------------------------------


def test_rotation_by_90_degrees_moves_pixels_and_joints_exactly(tmp_path):
    """41 x 33 random pixels, scale 1, rotated 90 degrees counter-clockwise about (20, 16): source (x, y) lands on
    (20 + (y - 16), 16 - (x - 20)) = (y + 4, 36 - x); the output keeps the 41 x 33 frame, the rest is fill."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (33, 41, 3), dtype=np.uint8)
    joints = np.array([[[30, 16, 2], [2, 16, 2], [25, 5, 1]]], np.float32)  # the second lands at y = 34: outside
    root = _write(tmp_path / "ds", [Sample(image=cv2.imencode(".png", img[..., ::-1])[1].tobytes(),
                                           image_format="png", size=(3, 33, 41), joints=joints)] * 2)
    cfg = _cfg("batch_size=2", "rotation_range=[90, 90]", "rotation_p=1")
    with build_loader(cfg, root) as loader:
        b = _collect(loader)[0]
    np.testing.assert_array_equal(b["joints"][0, 0], [[20, 6, 1], [0, 0, 0], [9, 11, 1]])
    out = _pixels(b, 0, cfg.mean_pixel).transpose(1, 2, 0)  # (33, 41, 3)
    assert out.shape == (33, 41, 3)
    ys, xs = np.mgrid[0:33, 0:41]  # output pixel (X, Y) shows source (36 - Y, X - 4)
    src_x, src_y = 36 - ys, xs - 4
    inside = (src_x >= 0) & (src_x < 41) & (src_y >= 0) & (src_y < 33)
    np.testing.assert_array_equal(out[inside], img[src_y[inside], src_x[inside]])
    assert (out[~inside] == round(float(np.mean(cfg.mean_pixel)))).all() and (~inside).sum() == 33 * 8


def test_rotation_by_30_degrees_matches_the_hand_computed_affine(tmp_path):
    """60 x 48 at scale 0.75 -> 45 x 36, then 30 degrees counter-clockwise about (22, 17.5)."""
    samples = _dot_samples(8, seed=4)
    big = np.full((48, 60, 3), BACKGROUND, np.uint8)
    pts = [(30, 20), (12, 30), (40, 14)]
    for k, (x, y) in enumerate(pts):
        cv2.circle(big, (x, y), 3, tuple(int(c) for c in COLOURS[k][::-1]), -1)
    joints = np.array([[[x, y, 2] for x, y in pts]], np.float32)
    samples[0] = Sample(image=cv2.imencode(".png", big)[1].tobytes(), image_format="png", size=(3, 48, 60),
                        joints=joints)
    root = _write(tmp_path / "ds", samples)
    cfg = _cfg("global_scale=0.75", "rotation_range=[30, 30]", "rotation_p=1", "shuffle=false")
    c, s = math.sqrt(3) / 2, 0.5
    want = []
    for x, y in pts:
        x1, y1 = (x + 0.5) * 0.75 - 0.5, (y + 0.5) * 0.75 - 0.5
        want.append((22 + c * (x1 - 22) + s * (y1 - 17.5), 17.5 - s * (x1 - 22) + c * (y1 - 17.5)))
    with build_loader(cfg, root) as loader:
        batches = _collect(loader)
    b = batches[0]
    assert b["index"][0] == 0 and tuple(b["valid_hw"][0]) == (36, 45)
    np.testing.assert_allclose(b["joints"][0, 0, :, :2], want, atol=1e-3)
    assert _check_dots(ShardDataset(root, "train"), cfg, batches, (0,)) == 3


# --- the dot test ----------------------------------------------------------------------------------------------------


def _check_dots(ds: ShardDataset, cfg, batches, only=None) -> int:
    """Every present joint away from the border has its dot (the right colour, after the mirror's id swap) within
    1 px; returns how many were checked."""
    checked = 0
    for b in batches:
        for i in range(len(b["index"])):
            if only is not None and b["index"][i] not in only:
                continue
            img = _pixels(b, i, cfg.mean_pixel).astype(np.float32)  # (3, h, w)
            vh, vw = b["valid_hw"][i]
            src = ds.joints(int(b["index"][i]))  # (1, K, 3)
            for k in range(K):
                x, y, present = b["joints"][i, 0, k]
                if not present:
                    continue
                src_k = PERM[k] if b["flipped"][i] else k
                assert src[0, src_k, 2] > 0
                edge = 3 * b["scale"][i] + 1.5  # a dot the frame cuts has a biased centroid
                if not (edge <= x <= vw - 1 - edge and edge <= y <= vh - 1 - edge):
                    continue
                x0, y0 = max(round(x) - 6, 0), max(round(y) - 6, 0)
                win = img[:, y0:min(round(y) + 7, vh), x0:min(round(x) + 7, vw)]
                close = np.abs(win - COLOURS[src_k][:, None, None]).max(0) < 70  # (h, w)
                assert close.sum() >= 3, f"no dot for joint {k} of sample {b['index'][i]} at ({x:.1f}, {y:.1f})"
                ys, xs = np.nonzero(close)
                assert abs(xs.mean() + x0 - x) <= 1.0 and abs(ys.mean() + y0 - y) <= 1.0
                checked += 1
    return checked


@pytest.mark.parametrize("jitter", [False, True])
@pytest.mark.parametrize("crop", [False, True])
def test_dots_follow_their_joints_under_rotation_scale_mirror_and_crop(dots, jitter, crop):
    opts = ["mirror=true", "rotation_range=[-60, 60]", "rotation_p=0.5"]
    opts += ["scale_jitter_lo=0.7", "scale_jitter_up=1.3"] if jitter else []
    opts += ["crop_size=[56, 48]"] if crop else []
    cfg = _cfg(*opts)
    with build_loader(cfg, dots[0]) as loader:
        batches = _collect(loader)
    aug = augment(cfg, train=True, perm=PERM)
    combos = set()
    for b in batches:
        for i, index in enumerate(b["index"]):
            _, h, w = dots[1][int(index)].size
            p = sample_params(aug, 0, int(index), int(w), int(h), dots[1].joints(int(index)))
            combos.add((p.angle != 0, bool(b["flipped"][i])))
            assert (p.scale != 1.0) == jitter and (tuple(b["valid_hw"][i]) != (p.res_h, p.res_w)) <= crop
    assert combos == {(False, False), (False, True), (True, False), (True, True)}  # every combination ran
    assert _check_dots(dots[1], cfg, batches) >= (15 if crop else 35)


# --- photometric ops, absent joints, resume --------------------------------------------------------------------------


def test_photometric_ops_change_pixels_but_no_joint(dots):
    geometry = ["mirror=true", "scale_jitter_lo=0.8", "scale_jitter_up=1.2", "rotation_range=[-40, 40]",
                "rotation_p=0.7"]
    with build_loader(_cfg(*geometry), dots[0]) as loader:
        plain = _collect(loader)
    with build_loader(_cfg(*geometry, *PHOTOMETRIC), dots[0]) as loader:
        photo = _collect(loader)
    for a, b in zip(plain, photo, strict=True):
        for key in ("joints", "scale", "flipped", "valid_hw", "index", "offset"):
            assert np.array_equal(a[key], b[key]), key
        for i in range(len(a["index"])):
            vh, vw = a["valid_hw"][i]
            diff = np.abs(a["images"][i, :, :vh, :vw] - b["images"][i, :, :vh, :vw])
            assert diff.mean() > 3  # colour, blur and noise of every sample changed the pixels
        sample2 = np.nonzero(b["index"] == 2)[0]
        for i in sample2:  # sample 2 has no joint 2 (a singleton group: the mirror keeps its id)
            assert not b["joints"][i, 0, 2].any()


@pytest.mark.parametrize("geometry", [[], ["rotation_range=[-40, 40]", "rotation_p=1"]], ids=["resize", "rotation"])
def test_colour_of_the_background_hand_computed(dots, geometry):
    """brightness b (contrast c (x - 128) + 128), rounded once: the grey background 40 at b = 1.5, c = 0.5 becomes
    126 on either geometry path (uint8 into the colour stage after the resize; float32 after the CPU's warp, where
    color_twist centres the contrast on 0.5 and the final conversion adds the difference back)."""
    colour = ["brightness_range=[1.5, 1.5]", "contrast_range=[0.5, 0.5]", "color_p=1"]
    with build_loader(_cfg(*geometry), dots[0]) as loader:
        plain = _collect(loader)
    with build_loader(_cfg(*geometry, *colour), dots[0]) as loader:
        twisted = _collect(loader)
    mean = _cfg().mean_pixel
    for a, b in zip(plain, twisted, strict=True):
        for i in range(len(a["index"])):
            before, after = _pixels(a, i, mean), _pixels(b, i, mean)
            background = (before == BACKGROUND).all(axis=0)  # (h, w) away from dots, edges and rotated corners
            assert background.mean() > 0.3
            assert (after[:, background] == 126).all()
            assert (after[:, ~background] != before[:, ~background]).any()


def test_joints_rotated_out_of_the_image_become_absent_and_absent_ones_stay_absent(dots):
    cfg = _cfg(*EVERYTHING, "crop_size=[56, 48]")
    aug = augment(cfg, train=True, perm=PERM)
    with build_loader(cfg, dots[0]) as loader:
        batches = _collect(loader, 2)
    dropped = 0
    for e, b in enumerate(batches):
        for i, index in enumerate(b["index"]):
            src = dots[1].joints(int(index))  # (1, K, 3)
            _, h, w = dots[1][int(index)].size
            p = sample_params(aug, e // (N // 4), int(index), int(w), int(h), src)
            out = b["joints"][i, 0]  # (K, 3)
            for k in range(K):
                s = PERM[k] if p.flip else k
                if src[0, s, 2] == 0:
                    assert not out[k].any()  # absent stays absent
                    continue
                xy = p.matrix(int(w), int(h)) @ np.array([src[0, s, 0], src[0, s, 1], 1.0])
                inside = -0.5 <= xy[0] <= p.crop_w - 0.5 and -0.5 <= xy[1] <= p.crop_h - 0.5
                assert bool(out[k, 2]) == inside
                dropped += not inside
    assert dropped > 0


@pytest.fixture(scope="module")
def everything_run(dots):
    cfg = _cfg(*EVERYTHING, "batch_size=4", "num_workers=2")
    with build_loader(cfg, dots[0]) as loader:
        return cfg, _collect(loader, 2)


def test_resume_is_exact_with_every_augmentation_on(dots, everything_run):
    cfg, batches = everything_run
    with build_loader(cfg, dots[0], start_epoch=0, start_batch=2) as loader:
        resumed = _collect(loader, 2)
    assert len(resumed) == len(batches) - 2
    for got, want in zip(resumed, batches[2:], strict=True):
        for key in want:
            assert np.array_equal(got[key], want[key]), key


def test_the_pil_baseline_does_the_same_work(dots):
    """Same parameters, same formulas: PIL's affine transform against fn.warp_affine (both bilinear, pixel centres
    at +0.5), numpy's colour, blur and motion blur against DALI's, the same noise field."""
    cfg = _cfg(*EVERYTHING, "crop_size=[56, 48]")
    with build_loader(cfg, dots[0]) as loader:
        dali = _collect(loader)[0]["images"]
    pil = next(pil_batches(cfg, dots[0], "train", 4)).numpy()
    assert pil.shape == dali.shape
    diff = np.abs(pil - dali)
    # Measured: mean 0.012, 99th percentile 1, max 2 (rounding of the two bilinear implementations).
    assert diff.mean() < 0.1 and np.percentile(diff, 99) <= 1 and diff.max() <= 3


# --- parts -----------------------------------------------------------------------------------------------------------


def test_motion_kernel_hand_computed():
    # Length 5 at 0 degrees: 17 points from -2 to 2 in steps of 1/4 on the middle row; pixels -2 and 2 collect
    # 1 + 3/4 + 1/2 + 1/4 = 2.5 points, the others 4.
    k = motion_kernel(5, 0)
    want = np.zeros((5, 5), np.float32)
    want[2] = np.array([2.5, 4, 4, 4, 2.5]) / 17
    np.testing.assert_allclose(k, want, atol=1e-7)
    np.testing.assert_allclose(motion_kernel(5, 90), want.T, atol=1e-7)
    diag = motion_kernel(7.5, 45)
    assert diag.shape == (9, 9) and diag.sum() == pytest.approx(1) and np.array_equal(diag, diag[::-1, ::-1])
    assert diag[4, 4] > 0 and diag[0, 8] == diag[8, 0] and diag[0, 0] == 0  # along the rising diagonal (y down)
    assert motion_kernel(1, 30).tolist() == [[1.0]]


@pytest.mark.parametrize("override, message", [
    ("rotation_range=[30, -30]", "rotation_range = [30.0, -30.0] is not allowed"),
    ("hue_range=[0, 200]", "-180 <= lo <= hi <= 180"),
    ("gaussian_noise_p=1.5", "gaussian_noise_p = 1.5 is not allowed: it must be a probability"),
    ("motion_blur_range=[0.5, 3]", "motion_blur_range = [0.5, 3.0] is not allowed"),
])
def test_config_rejects_impossible_augmentations(override, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]").replace("+", r"\+")):
        config.load(None, [override])


def test_noise_field_is_a_function_of_its_seed_with_the_drawn_std():
    aug = augment(_cfg("gaussian_noise_range=[6, 6]", "gaussian_noise_p=1"), train=True, perm=PERM)
    p = sample_params(aug, 2, 5, 64, 48, np.zeros((0, K, 3), np.float32))
    field = noise_field(p)  # (48, 64, 3) int16
    assert field.shape == (48, 64, 3) and field.dtype == np.int16 and p.noise_std == 6.0
    assert np.array_equal(field, noise_field(sample_params(aug, 2, 5, 64, 48, np.zeros((0, K, 3), np.float32))))
    assert abs(field.std() - 6.0) < 0.15 and abs(field.mean()) < 0.15  # 9216 rounded N(0, 36) draws
    other = noise_field(sample_params(aug, 3, 5, 64, 48, np.zeros((0, K, 3), np.float32)))  # next epoch
    assert not np.array_equal(field, other)
    off = sample_params(augment(_cfg(), train=True, perm=PERM), 2, 5, 64, 48, np.zeros((0, K, 3), np.float32))
    assert noise_field(off).tolist() == [[[0, 0, 0]]]


def test_noise_field_follows_the_rounded_gaussian():
    """The 16-bit quantile table: each quantile's CDF is its probability, and the levels' frequencies in a field of
    120000 values are P(round(std z) = v) = Phi((v + 0.5) / std) - Phi((v - 0.5) / std) within 4 binomial std."""
    phi = lambda x: 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))  # noqa: E731
    q = normal_quantiles()
    assert q.shape == (65536,) and np.array_equal(q, -q[::-1]) and (np.diff(q) > 0).all()
    for i in (0, 1, 1000, 32767, 40000, 65535):
        assert phi(q[i]) == pytest.approx((i + 0.5) / 65536, rel=1e-9)
    std = 2.5
    p = Params(1.0, False, 200, 200, 0, 0, 200, 200, False, noise_std=std, noise_seed=(7, 8, 9, 10))
    field = noise_field(p)  # (200, 200, 3) int16
    assert field.shape == (200, 200, 3) and field.dtype == np.int16
    assert np.abs(field).max() <= round(4.33 * std)  # the table's tails end at 4.33 std
    for v in range(-6, 7):
        want = phi((v + 0.5) / std) - phi((v - 0.5) / std)
        got = float(np.mean(field == v))
        assert abs(got - want) < 4 * math.sqrt(want * (1 - want) / field.size) + 2 / 65536, v


def test_ignore_grid_follows_the_rotation_hand_computed():
    # 100 x 80, scale 1, 90 degrees about (49.5, 39.5): (x, y) -> (y + 10, 89 - x), so a cell centre (4i + 2, 4j + 2)
    # shows source pixel (87 - 4j, 4i - 8). The region x in [40, 60), y in [16, 32) covers j = 7..11, i = 6..9.
    rle = mask_utils.frPyObjects(np.array([[40, 16, 20, 16]], np.float64), 80, 100)[0]
    rles = [{"size": [80, 100], "counts": rle["counts"].decode()}]
    p = Params(scale=1.0, clamped=False, res_w=100, res_h=80, crop_x=0, crop_y=0, crop_w=100, crop_h=80, flip=False,
               angle=90.0)
    want = np.zeros((20, 25), np.uint8)
    want[7:12, 6:10] = 1
    np.testing.assert_array_equal(ignore_grid(rles, 100, 80, p, stride=4), want)
