"""Pairwise statistics (fastpose.pairwise) and pairwise targets (fastpose.kernels.pairwise): golden grids, twins."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from oracles import targets as oracle_targets

from fastpose.errors import UserError
from fastpose.kernels.losses import locref_loss
from fastpose.kernels.pairwise import (
    make_pairwise_targets,
    make_pairwise_targets_torch,
    make_pairwise_targets_triton,
    pair_channels,
    pair_id,
)
from fastpose.kernels.targets import make_targets
from fastpose.pairwise import compute_stats, load_stats, sample_stats, save_stats, stats_from_shards
from fastpose.pipeline import Params, transform_joints

COCO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mmpose" / "coco"
BOTH = [make_pairwise_targets_torch, make_pairwise_targets_triton]


def test_pair_ids_are_the_row_major_off_diagonal():
    k = 4
    ids = [pair_id(s, e, k) for s in range(k) for e in range(k) if s != e]
    assert ids == list(range(k * (k - 1)))
    assert pair_id(0, 1, 3) == 0 and pair_id(1, 0, 3) == 2 and pair_id(2, 1, 3) == 5
    assert pair_channels(3).tolist() == [1, 2, 3, 5, 6, 7]  # s * K + e of ids 0..5
    with pytest.raises(ValueError):
        pair_id(1, 1, 3)


@pytest.mark.parametrize("s, e", [(3, 0), (0, 3), (-1, 0), (0, -1), (2, 2)])
def test_pair_id_rejects_joints_outside_0_to_k_minus_1(s, e):
    # K = 3: the last valid pairs are (2, 1) -> 5 and (1, 2) -> 3; one step past either bound raises.
    with pytest.raises(ValueError, match=rf"^pair \({s}, {e}\) is not an ordered pair of distinct joints in 0\.\.2$"):
        pair_id(s, e, 3)
    assert pair_id(2, 1, 3) == 5 and pair_id(1, 2, 3) == 3 and pair_id(np.int64(2), np.int64(0), 3) == 4


def test_pair_id_of_arrays_matches_the_scalar_ids():
    # The assembly asks for many pairs at once: (K - 1) s + e - [s < e] elementwise, K = 4 (hand-computed).
    s = np.array([0, 0, 1, 3, 2, 3])
    e = np.array([1, 3, 0, 2, 3, 0])
    assert pair_id(s, e, 4).tolist() == [0, 2, 3, 11, 8, 9]
    assert pair_id(0, np.array([1, 2]), 3).tolist() == [0, 1]  # one scalar and one array: the array path
    assert pair_id([2, 1], [0, 2], 3).tolist() == [4, 3]  # lists too


def _golden_inputs():
    # Two persons, K = 3, stride 8, grid 3 x 4 (cell centres x = 4, 12, 20, 28; y = 4, 12, 20), dist_thresh 8.
    joints = torch.zeros(1, 2, 3, 3)
    joints[0, 0, 0] = torch.tensor([12.0, 12.0, 1])
    joints[0, 0, 1] = torch.tensor([30.0, 2.0, 1])  # person 0 has no joint 2
    joints[0, 1, 0] = torch.tensor([20.0, 12.0, 1])
    joints[0, 1, 1] = torch.tensor([2.0, 22.0, 2])
    joints[0, 1, 2] = torch.tensor([10.0, 10.0, 1])
    mean = torch.zeros(1, 3, 3, 2)
    std = torch.ones(1, 3, 3, 2)
    mean[0, 0, 1] = torch.tensor([1.0, -1.0])
    std[0, 0, 1] = torch.tensor([2.0, 4.0])
    std[0, 0, 2] = torch.tensor([0.5, 1.0])
    return joints, mean, std


# Hand-computed: {pair id: {(row, col): (x, y)}}; every other cell of a pair is 0 with mask 0.
# Joint 0: person 0 (12, 12) covers the plus around cell (1, 1); person 1 (20, 12) the plus around (1, 2); on the
# overlap (1, 1) and (1, 2) the nearer person (distance 0 against 8) owns the cell.
GOLDEN = {
    0: {  # (0, 1): ((joint_1 - centre) - (1, -1)) / (2, 4)
        (1, 1): (8.5, -2.25), (1, 0): (12.5, -2.25), (0, 1): (8.5, -0.25), (2, 1): (8.5, -4.25),  # person 0
        (1, 2): (-9.5, 2.75), (1, 3): (-13.5, 2.75), (0, 2): (-9.5, 4.75), (2, 2): (-9.5, 0.75),  # person 1
    },
    1: {  # (0, 2): (joint_2 - centre) / (0.5, 1); person 0 has no joint 2
        (1, 2): (-20.0, -2.0), (1, 3): (-36.0, -2.0), (0, 2): (-20.0, 6.0), (2, 2): (-20.0, -10.0),
    },
    2: {(0, 3): (-16.0, 8.0), (2, 0): (16.0, -8.0)},  # (1, 0): joint 1 covers (0, 3) (person 0), (2, 0) (person 1)
    3: {(2, 0): (6.0, -10.0)},  # (1, 2): person 1 only
    4: {(1, 1): (8.0, 0.0), (1, 0): (16.0, 0.0), (0, 1): (8.0, 8.0)},  # (2, 0): person 1's joint 2 at (10, 10)
    5: {(1, 1): (-10.0, 10.0), (1, 0): (-2.0, 10.0), (0, 1): (-10.0, 18.0)},  # (2, 1)
}


@pytest.mark.parametrize("fn", BOTH)
def test_golden_grid(fn):
    joints, mean, std = _golden_inputs()
    t = fn(joints, (3, 4), mean, std, stride=8, dist_thresh=8.0)
    want = torch.zeros(1, 12, 3, 4)
    want_mask = torch.zeros(1, 12, 3, 4)
    for pair, cells in GOLDEN.items():
        for (r, c), (x, y) in cells.items():
            want[0, 2 * pair, r, c], want[0, 2 * pair + 1, r, c] = x, y
            want_mask[0, 2 * pair:2 * pair + 2, r, c] = 1
    torch.testing.assert_close(t.target, want, rtol=0, atol=1e-6)
    torch.testing.assert_close(t.mask, want_mask, rtol=0, atol=0)
    assert t.target.is_contiguous() and t.target.dtype == torch.float32


@pytest.mark.parametrize("fn", BOTH)
def test_tie_goes_to_the_lower_person_index(fn):
    # Both persons put joint 0 at the same spot; their joints 1 differ: the cell takes person 0's.
    joints = torch.zeros(1, 2, 2, 3)
    joints[0, :, 0] = torch.tensor([4.0, 4.0, 1])
    joints[0, 0, 1] = torch.tensor([9.0, 4.0, 1])
    joints[0, 1, 1] = torch.tensor([-7.0, 4.0, 1])
    t = fn(joints, (1, 1), torch.zeros(1, 2, 2, 2), torch.ones(1, 2, 2, 2), stride=8, dist_thresh=1.0)
    assert t.target[0, :2, 0, 0].tolist() == [5.0, 0.0]  # pair (0, 1) from person 0
    assert t.mask[0, :2, 0, 0].tolist() == [1.0, 1.0]
    # Pair (1, 0): no joint 1 lies within 1 pixel of the cell centre (4, 4), so nothing is written.
    assert t.target[0, 2:, 0, 0].tolist() == [0.0, 0.0] and t.mask[0, 2:, 0, 0].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("fn", BOTH)
def test_stats_of_the_wrong_shape_are_named_in_the_error(fn):
    joints, mean, std = _golden_inputs()  # B = 1, K = 3
    with pytest.raises(ValueError, match=r"^mean must have shape \(B, K, K, 2\) = \(1, 3, 3, 2\); got \(1, 3, 2, 2\)$"):
        fn(joints, (3, 4), mean[:, :, :2], std)
    with pytest.raises(ValueError, match=r"^std must have shape \(B, K, K, 2\) = \(1, 3, 3, 2\); got \(3, 3, 2\)$"):
        fn(joints, (3, 4), mean, std[0])


def test_twin_rejects_an_infinite_threshold_naming_it():
    joints, mean, std = _golden_inputs()
    with pytest.raises(ValueError, match=r"^dist_thresh must be finite; got a maximum of inf$"):
        make_pairwise_targets_torch(joints, (3, 4), mean, std, dist_thresh=torch.tensor([float("inf")]))


@pytest.mark.parametrize("fn", BOTH)
@pytest.mark.parametrize("p, k", [(0, 3), (2, 1), (1, 0)])
def test_nobody_or_no_pair_gives_zero_targets_of_the_right_shape(fn, p, k):
    # No person (P = 0), one joint (K = 1: no pair) or no joint: (B, 2K(K-1), H, W) zeros, mask included.
    joints = torch.ones(2, p, k, 3)
    out = fn(joints, (3, 5), torch.zeros(2, k, k, 2), torch.ones(2, k, k, 2), stride=8, dist_thresh=9.0)
    for t in out:
        assert t.shape == (2, 2 * k * (k - 1), 3, 5) and t.dtype == torch.float32
        assert t.is_contiguous() and not t.any()
    out.target.add_(1.0)  # target and mask are separate tensors
    assert not out.mask.any()


@pytest.mark.parametrize("fn", [*BOTH, make_pairwise_targets])
def test_the_default_threshold_is_17(fn):
    # One row of cells (centres x = 4, 12, 20, 28) and joint 0 at x = 21.5: 17.5 px from the first centre, so the
    # default 17 covers columns 1..3 only. Pair (0, 1) reads joint 1 at (30, 4): x offsets 30 - centre. One person.
    joints = torch.tensor([[[[21.5, 4.0, 1.0], [30.0, 4.0, 1.0]]]])
    out = fn(joints, (1, 4), torch.zeros(1, 2, 2, 2), torch.ones(1, 2, 2, 2))
    assert out.mask[0, 0, 0].tolist() == [0.0, 1.0, 1.0, 1.0]
    assert out.target[0, 0, 0].tolist() == [0.0, 18.0, 10.0, 2.0]
    # Pair (1, 0): joint 1 (30, 4) is 26, 18, 10, 2 px from the centres: columns 2 and 3 only; x offsets of joint 0.
    assert out.target[0, 2, 0].tolist() == [0.0, 0.0, 1.5, -6.5]


def test_an_absent_joint_covers_nothing_even_on_a_fine_grid():
    # Stride 1: cell (0, 0) has its centre (0.5, 0.5) within 1 px of (0, 0), where absent joints are moved; joint 0
    # absent, joint 1 present: no cell is owned for joint 0, so pair (0, 1) stays empty.
    joints = torch.tensor([[[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]]])
    out = make_pairwise_targets_torch(joints, (2, 2), torch.zeros(1, 2, 2, 2), torch.ones(1, 2, 2, 2), stride=1,
                                      dist_thresh=0.5)
    assert not out.mask.any()


@pytest.mark.parametrize("fn", BOTH)
def test_float64_inputs_give_the_float32_targets(gen, fn):
    # The spec: both outputs are float32, computed in float32 whatever the dtypes of joints and statistics (numpy
    # gives float64): random (inexact) values give the same bits as their float32 inputs.
    joints, mean, std, thresh = _random_batch(gen)
    joints = torch.nan_to_num(joints)
    want = fn(joints, (6, 7), mean, std, stride=8, dist_thresh=thresh)
    assert want.mask.sum() > 50
    for args in [(joints.double(), mean, std), (joints, mean.double(), std), (joints, mean, std.double())]:
        got = fn(args[0], (6, 7), *args[1:], stride=8, dist_thresh=thresh)
        assert got.target.dtype == got.mask.dtype == torch.float32
        assert torch.equal(got.target, want.target) and torch.equal(got.mask, want.mask)


def _random_batch(gen, b=3, p=4, k=5, size=48):
    joints = torch.rand(b, p, k, 3, generator=gen)
    joints[..., :2] = joints[..., :2] * (size + 16) - 8  # some joints just outside the image
    joints[..., 2] = (joints[..., 2] > 0.3).float()
    joints[0, 1] = joints[0, 0]  # an exact duplicate person: ties everywhere
    joints[1, 2, 3, 0] = float("nan")  # a non-finite joint counts as absent
    mean = torch.randn(b, k, k, 2, generator=gen) * 5
    std = torch.rand(b, k, k, 2, generator=gen) + 0.5
    thresh = torch.tensor([9.0, 17.0, 12.5])[:b]
    return joints, mean, std, thresh


def test_triton_matches_the_torch_twin(gen):
    joints, mean, std, thresh = _random_batch(gen)
    grid = (6, 7)
    a = make_pairwise_targets_torch(joints, grid, mean, std, stride=8, dist_thresh=thresh)
    b = make_pairwise_targets_triton(joints, grid, mean, std, stride=8, dist_thresh=thresh, block=16)
    # The interpreter runs the kernel's float32 operations one by one, as the twin does: the same bits.
    assert torch.equal(b.mask, a.mask) and torch.equal(b.target, a.target)
    assert a.mask.sum() > 50  # the case is not empty
    c = make_pairwise_targets(joints, grid, mean, std, stride=8, dist_thresh=thresh)  # CPU: the twin
    torch.testing.assert_close(c.target, a.target, rtol=0, atol=0)


@pytest.mark.cuda
def test_triton_on_cuda_matches_the_torch_twin_exactly(gen):
    # Launched without FMA contraction and dividing with div_rn, the kernel does the twin's float32 operations.
    joints, mean, std, thresh = _random_batch(gen, size=160)
    grid = (20, 21)
    a = make_pairwise_targets_torch(joints, grid, mean, std, stride=8, dist_thresh=thresh)
    b = make_pairwise_targets(joints.cuda(), grid, mean.cuda(), std.cuda(), stride=8, dist_thresh=thresh.cuda())
    assert a.mask.sum() > 100
    assert torch.equal(b.mask.cpu(), a.mask) and torch.equal(b.target.cpu(), a.target)


def test_targets_invert_to_the_same_persons_joints(gen):
    # At every masked cell: locref gives the owner's joint s, the pairwise target (times std, plus mean) its joint e;
    # both must belong to one and the same person (the owner of make_targets' locref).
    joints, mean, std, thresh = _random_batch(gen)
    joints = torch.nan_to_num(joints)
    b, p, k, _ = joints.shape
    grid, stride = (6, 7), 8
    t = make_targets(joints, grid, stride, thresh, locref_stdev=1.0)
    pw = make_pairwise_targets(joints, grid, mean, std, stride=stride, dist_thresh=thresh)
    cx = torch.arange(grid[1]) * stride + stride / 2
    cy = torch.arange(grid[0]) * stride + stride / 2
    checked = 0
    for bi in range(b):
        for s in range(k):
            for e in range(k):
                if s == e:
                    continue
                ch = 2 * pair_id(s, e, k)
                on = pw.mask[bi, ch] > 0  # (H, W)
                assert bool((t.scmap[bi, s][on] == 1).all())
                for r, c in on.nonzero().tolist():
                    js = torch.stack([t.locref[bi, 2 * s, r, c] + cx[c], t.locref[bi, 2 * s + 1, r, c] + cy[r]])
                    je = pw.target[bi, ch:ch + 2, r, c] * std[bi, s, e] + mean[bi, s, e] + torch.stack([cx[c], cy[r]])
                    match = [q for q in range(p) if joints[bi, q, s, 2] > 0 and joints[bi, q, e, 2] > 0
                             and torch.allclose(joints[bi, q, s, :2], js, atol=1e-4)
                             and torch.allclose(joints[bi, q, e, :2], je, atol=1e-3)]
                    assert match, (bi, s, e, r, c)
                    checked += 1
    assert checked > 50


def test_loss_is_the_masked_huber_of_locref(gen):
    joints, mean, std, thresh = _random_batch(gen)
    t = make_pairwise_targets(joints, (6, 7), mean, std, stride=8, dist_thresh=thresh)
    pred = torch.randn(t.target.shape, generator=gen).requires_grad_()
    loss = locref_loss(pred, t.target, t.mask, huber=True)
    d = (pred - t.target)[t.mask > 0]
    want = torch.where(d.abs() < 1, 0.5 * d * d, d.abs() - 0.5).mean()
    torch.testing.assert_close(loss, want)
    loss.backward()
    assert bool((pred.grad[t.mask == 0] == 0).all())


# ------------------------------------------------------------------------------------------------------- statistics


def _two_persons() -> np.ndarray:
    joints = np.zeros((2, 3, 3), np.float32)
    joints[0, 0], joints[0, 1] = [0, 0, 1], [2, 4, 2]  # person A: joint 2 unlabelled
    joints[1, 0], joints[1, 1], joints[1, 2] = [1, 1, 1], [5, 3, 1], [7, 7, 2]
    return joints


def test_stats_hand_computed():
    mean, std, count = compute_stats(_two_persons())
    # (0, 1): offsets (2, 4) and (4, 2) -> mean (3, 3), std (1, 1); (1, 0) the negation.
    np.testing.assert_allclose(mean[0, 1], [3, 3])
    np.testing.assert_allclose(std[0, 1], [1, 1])
    np.testing.assert_allclose(mean[1, 0], [-3, -3])
    # (0, 2), (1, 2): person B only -> the offset itself, std 0 -> 1.
    np.testing.assert_allclose(mean[0, 2], [6, 6])
    np.testing.assert_allclose(mean[1, 2], [2, 4])
    np.testing.assert_allclose(mean[2, 1], [-2, -4])
    np.testing.assert_allclose(std[0, 2], [1, 1])
    assert count.tolist() == [[0, 2, 1], [2, 0, 1], [1, 1, 0]]
    np.testing.assert_allclose(mean[0, 0], [0, 0])  # the diagonal is never used
    np.testing.assert_allclose(std[1, 1], [1, 1])


@pytest.mark.parametrize("suffix", [".npz", ".mat"])
def test_save_load_round_trip_and_unseen_pairs(tmp_path, suffix):
    joints = np.concatenate([_two_persons(), np.zeros((2, 3, 3), np.float32)], axis=1)[:, :4]  # joint 3 never seen
    mean, std, count = compute_stats(joints)
    path = save_stats(tmp_path / f"stats{suffix}", mean, std, count, "train")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"stats{suffix}"]  # no temp file left
    with pytest.warns(UserWarning, match="6 of 12 joint pairs never appear"):
        m, s = load_stats(path)
    np.testing.assert_array_equal(m, mean)
    np.testing.assert_array_equal(s, std)
    np.testing.assert_array_equal(m[3, 0], [0, 0])
    np.testing.assert_array_equal(s[0, 3], [1, 1])


def test_load_stats_errors(tmp_path):
    with pytest.raises(UserError, match="fastpose pairwise-stats"):
        load_stats(tmp_path / "missing.mat")
    bad = tmp_path / "bad.npz"
    np.savez(bad, something=np.zeros(3))
    with pytest.raises(UserError, match="not a pairwise statistics file"):
        load_stats(bad)
    with pytest.raises(UserError, match="suffix"):
        save_stats(tmp_path / "x.txt", *compute_stats(_two_persons()))


def test_sample_stats_follow_scale_and_mirror():
    # One person: its stats are its exact offsets. After the pipeline's resize (x2, exact) and mirror, the per-sample
    # statistics must equal the offsets of the transformed joints (joint ids swapped by perm, x negated).
    joints = np.array([[[10, 20, 1], [30, 25, 1], [12, 40, 2]]], np.float32)  # (1, K=3, 3)
    perm = (0, 2, 1)  # joints 1 and 2 are a left/right pair
    mean, std, _ = compute_stats(joints)
    params = Params(scale=2.0, clamped=False, res_w=200, res_h=160, crop_x=0, crop_y=0, crop_w=200, crop_h=160,
                    flip=True)
    moved = transform_joints(joints, 100, 80, params, perm)[0]  # (K, 3) in the network input
    m, sd = sample_stats(mean, std, torch.tensor([2.0, 2.0]), torch.tensor([True, False]), perm)
    for s in range(3):
        for e in range(3):
            if s != e:
                np.testing.assert_allclose(m[0, s, e].numpy(), moved[e, :2] - moved[s, :2], atol=1e-5)
                np.testing.assert_allclose(m[1, s, e].numpy(), 2 * mean[s, e], atol=1e-5)  # not mirrored
    np.testing.assert_allclose(sd.numpy(), 2.0)  # std 1 everywhere (one person), times the scale


@pytest.mark.skipif(not COCO.is_dir(), reason=f"shared test data not found at {COCO}")
def test_stats_from_coco_shards_match_the_json(tmp_path):
    import json

    from typer.testing import CliRunner

    from fastpose.cli import app
    from fastpose.convert import coco

    coco.convert(COCO, COCO / "test_coco.json", tmp_path / "coco", workers=1, quiet=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every pair of COCO's 17 keypoints appears in these 12 persons
        mean, std, count = stats_from_shards(tmp_path / "coco", "train")
    # The command writes the same numbers to the config's pairwise_stats_fn (relative to the config file).
    (tmp_path / "cfg.yaml").write_text("dataset: coco\npairwise_stats_fn: stats/pairwise.mat\n")
    result = CliRunner().invoke(app, ["pairwise-stats", str(tmp_path / "cfg.yaml")])
    assert result.exit_code == 0, result.output
    assert "272 of 272 joint pairs seen" in result.output
    m, sd = load_stats(tmp_path / "stats" / "pairwise.mat")
    np.testing.assert_allclose(m, mean)
    np.testing.assert_allclose(sd, std)
    anns = [np.array(a["keypoints"], np.float64).reshape(17, 3) for a in json.loads(
        (COCO / "test_coco.json").read_text())["annotations"] if any(a["keypoints"][2::3])]
    # Pair (5, 6) (left_shoulder -> right_shoulder) straight from the json:
    offs = np.array([a[6, :2] - a[5, :2] for a in anns if a[5, 2] > 0 and a[6, 2] > 0])
    assert count[5, 6] == len(offs) > 3
    np.testing.assert_allclose(mean[5, 6], offs.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std[5, 6], offs.std(0), rtol=1e-6)


def test_compute_losses_adds_the_weighted_pairwise_loss(gen):
    from fastpose import config
    from fastpose.pipeline import Batch
    from fastpose.train import compute_losses

    cfg = config.load(None, ["num_joints=3", "all_joints=[[0], [1, 2]]", "pos_dist_thresh=10",
                             "pairwise_loss_weight=0.5", "pairwise_huber_loss=false"])
    joints = torch.tensor([[[[12.0, 12.0, 1], [20.0, 14.0, 1], [6.0, 20.0, 2]]],
                           [[[30.0, 8.0, 1], [22.0, 10.0, 1], [0.0, 0.0, 0]]]])  # (2, 1, 3, 3)
    batch = Batch(images=torch.zeros(2, 3, 32, 48), joints=joints, scale=torch.tensor([1.0, 2.0]),
                  flipped=torch.tensor([False, True]), valid_hw=torch.tensor([[32, 48], [32, 48]], dtype=torch.int32),
                  index=torch.arange(2), offset=torch.zeros(2, 2))
    mean, std, _ = compute_stats(np.array([[[0, 0, 1], [5, 1, 1], [-4, 6, 1]], [[0, 0, 1], [9, 3, 1], [-8, 10, 1]]]))
    out = {"part": torch.randn(2, 3, 4, 6, generator=gen), "pairwise": torch.randn(2, 12, 4, 6, generator=gen)}
    losses = compute_losses(cfg, out, batch, (torch.as_tensor(mean), torch.as_tensor(std)))
    # The expected loss without the code under test: per-sample statistics by hand (sample 1: scale 2 and mirrored,
    # all_joints [[0], [1, 2]] swaps joints 1 and 2 and negates x), targets from the loop-by-loop reference, and the
    # squared error (pairwise_huber_loss false) averaged over the masked values.
    perm = [0, 2, 1]
    m = np.stack([mean, mean[perm][:, perm] * [-1.0, 1.0] * 2.0])  # (B, K, K, 2)
    sd = np.stack([std, std[perm][:, perm] * 2.0])
    target, mask = oracle_targets.pairwise_targets(joints.numpy(), (4, 6), 8, [10.0, 20.0], m, sd)
    assert mask[0].sum() > 0 and mask[1].sum() > 0
    d = out["pairwise"].double().numpy() - target
    want = (d * d * mask).sum() / mask.sum()
    assert losses["pairwise"].item() == pytest.approx(want, rel=1e-5)
    assert losses["total"].item() == pytest.approx(losses["part"].item() + 0.5 * want, rel=1e-5)
    with pytest.raises(ValueError, match="pairwise_stats"):
        compute_losses(cfg, out, batch)
