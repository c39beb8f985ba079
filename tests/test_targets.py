"""Score-map / locref targets: hand-computed grids, the Triton kernel against the torch twin, the numpy oracle, and
the round trip back to the joints."""

from __future__ import annotations

import re
import threading

import pytest
import torch

from fastpose.baselines import numpy_targets
from fastpose.kernels.targets import Targets, make_targets, make_targets_torch, make_targets_triton

STDEV = 7.2801
NAN = float("nan")


def _numpy_impl(joints, grid, stride, dist_thresh, locref_stdev, ignore=None, present_only=False) -> Targets:
    """The numpy oracle behind the same signature as the kernels."""
    if isinstance(dist_thresh, torch.Tensor):
        dist_thresh = dist_thresh.numpy()
    ignore = None if ignore is None else ignore.numpy()
    out = numpy_targets(joints.numpy(), grid, stride, dist_thresh, locref_stdev, ignore, present_only)
    return Targets(*(torch.from_numpy(a) for a in out))


IMPLS = {"torch": make_targets_torch, "triton": make_targets_triton, "numpy": _numpy_impl}


def _grid(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


@pytest.mark.parametrize("impl", IMPLS)
def test_golden_3x3_two_persons_compete_threshold_absent_and_outside(impl):
    # Cell centres 4, 12, 20 on both axes; t = 6 (t^2 = 36).
    joints = torch.tensor(
        [
            [
                [[10.0, 12.0, 1.0], [12.0, 12.0, 0.0]],  # person 0: joint 0 present, joint 1 absent (would cover)
                [[15.0, 13.0, 1.0], [-1.0, 20.0, 1.0]],  # person 1: joint 1 left of the grid
            ]
        ]
    )  # (1, 2, 2, 3)
    out = IMPLS[impl](joints, (3, 3), 8, 6.0, STDEV)
    # Joint 0: person 0 covers (1,0) at d^2 = 36 exactly and (1,1) at 4; person 1 covers (1,1) at 10 and (1,2) at 26.
    # Joint 1: only (2,0) at d^2 = 25.
    s0 = _grid([[0, 0, 0], [1, 1, 1], [0, 0, 0]])
    s1 = _grid([[0, 0, 0], [0, 0, 0], [1, 0, 0]])
    assert torch.equal(out.scmap, torch.stack([s0, s1])[None])
    assert torch.equal(out.scmap_weights, torch.ones(1, 2, 3, 3))
    assert torch.equal(out.locref_mask, torch.stack([s0, s0, s1, s1])[None])
    lx0 = _grid([[0, 0, 0], [6, -2, -5], [0, 0, 0]])  # (1,1) goes to the nearer person 0
    ly0 = _grid([[0, 0, 0], [0, 0, 1], [0, 0, 0]])
    lx1 = _grid([[0, 0, 0], [0, 0, 0], [-5, 0, 0]])
    ly1 = torch.zeros(3, 3)
    expected = torch.stack([lx0, ly0, lx1, ly1])[None] / STDEV
    torch.testing.assert_close(out.locref, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("impl", IMPLS)
def test_golden_5x5_tie_per_sample_threshold_ignore_and_present_only(impl):
    # Cell centres 4, 12, 20, 28, 36. Sample 0: t = 8; sample 1: t = 10.
    joints = torch.tensor(
        [
            [  # sample 0
                [[16.0, 20.0, 1.0], [0.0, 0.0, 0.0]],  # person 0
                [[24.0, 20.0, 1.0], [4.0, 4.0, 1.0]],  # person 1: joint 0 ties with person 0 at cell (2,2)
            ],
            [  # sample 1: joint 1 absent in every person
                [[20.0, 20.0, 0.0], [20.0, 20.0, 0.0]],
                [[37.0, 34.0, 1.0], [NAN, NAN, 0.0]],
            ],
        ]
    )  # (2, 2, 2, 3)
    ignore = torch.zeros(2, 1, 5, 5)
    ignore[0, 0, 0, 0] = 1.0
    ignore[1, 0, 4, 4] = 1.0
    out = IMPLS[impl](joints, (5, 5), 8, torch.tensor([8.0, 10.0]), STDEV, ignore=ignore, present_only=True)

    scmap = torch.zeros(2, 2, 5, 5)
    scmap[0, 0, 2, 1:4] = 1.0  # both persons at d^2 = 16 of (2,2); (2,1) and (2,3) one each; rows 1, 3 at 80 > 64
    scmap[0, 1, 0, 0] = scmap[0, 1, 0, 1] = scmap[0, 1, 1, 0] = 1.0  # (0,1) and (1,0) at d^2 = 64 = t^2
    scmap[1, 0, 4, 4] = scmap[1, 0, 3, 4] = scmap[1, 0, 4, 3] = 1.0  # d^2 = 5, 37, 85 <= 100; (3,3) at 117
    assert torch.equal(out.scmap, scmap)
    assert torch.equal(out.locref_mask, scmap.repeat_interleave(2, dim=1))

    locref = torch.zeros(2, 2, 2, 5, 5)  # (B, K, xy, H, W)
    locref[0, 0, 0, 2, 1] = 4.0
    locref[0, 0, 0, 2, 2] = -4.0  # the tie at (2,2) goes to person 0 (dx = 16 - 20), not person 1 (+4)
    locref[0, 0, 0, 2, 3] = -4.0
    locref[0, 1, 0, 0, 1] = -8.0  # (0,0) is covered at distance 0: locref 0 there, mask 1
    locref[0, 1, 1, 1, 0] = -8.0
    locref[1, 0, :, 4, 4] = torch.tensor([1.0, -2.0])
    locref[1, 0, :, 3, 4] = torch.tensor([1.0, 6.0])
    locref[1, 0, :, 4, 3] = torch.tensor([9.0, -2.0])
    torch.testing.assert_close(out.locref, locref.reshape(2, 4, 5, 5) / STDEV, rtol=1e-6, atol=1e-7)

    weights = torch.ones(2, 2, 5, 5)
    weights[0, :, 0, 0] = 0.0  # ignored cell
    weights[1, :, 4, 4] = 0.0
    weights[1, 1] = 0.0  # joint 1 absent in all persons of sample 1
    assert torch.equal(out.scmap_weights, weights)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's inf - inf
@pytest.mark.parametrize("impl", IMPLS)
def test_far_away_nan_and_inf_joints_cover_nothing(impl):
    joints = torch.tensor([[[[1e6, -1e6, 1.0], [NAN, 4.0, 1.0], [float("inf"), 4.0, 1.0], [-9.0, 4.0, 1.0]]]])
    out = IMPLS[impl](joints, (3, 5), 8, 8.0, STDEV)
    assert out.scmap.sum() == 0 and out.locref.abs().sum() == 0 and out.locref_mask.sum() == 0
    assert torch.equal(out.scmap_weights, torch.ones(1, 4, 3, 5))


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the interpreter's t * t in numpy
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("thresh", [1e6, 1e20])  # t^2 of 1e20 overflows float32 to inf: still every cell
def test_a_threshold_beyond_the_grid_covers_every_cell(impl, thresh):
    joints = torch.tensor([[[[3.0, 50.0, 1.0], [20.0, 1.0, 0.0]]]])  # joint 1 absent
    out = IMPLS[impl](joints, (5, 7), 8, thresh, STDEV)
    assert torch.equal(out.scmap[0, 0], torch.ones(5, 7)) and out.scmap[0, 1].sum() == 0
    assert torch.equal(out.locref_mask[0, :2], torch.ones(2, 5, 7))
    cx = torch.arange(7) * 8 + 4.0
    torch.testing.assert_close(out.locref[0, 0], ((3.0 - cx) / STDEV).expand(5, 7), rtol=0, atol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
def test_golden_joint_exactly_on_the_threshold_of_a_column_away_from_the_edge(impl):
    # Centres x = 4, 12, ..., 60; t = 6: the joint at x = 26 reaches column 2 (centre 20) at exactly 6 px, column 3 at
    # 2 px. The window's first column, floor((26 - 6 - 4) / 8) = 2, is that exact boundary, far from the clamp at 0.
    joints = torch.tensor([[[[26.0, 12.0, 1.0]]]])  # (1, 1, 1, 3) on row 1's centre line
    out = IMPLS[impl](joints, (3, 8), 8, 6.0, STDEV)
    scmap = torch.zeros(1, 1, 3, 8)
    scmap[0, 0, 1, 2:4] = 1.0
    assert torch.equal(out.scmap, scmap)
    locref = torch.zeros(1, 2, 3, 8)
    locref[0, 0, 1, 2], locref[0, 0, 1, 3] = 6.0, -2.0
    torch.testing.assert_close(out.locref, locref / STDEV, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("impl", IMPLS)
def test_golden_grid_narrower_than_the_window_and_a_joint_right_of_it(impl):
    # 5 x 3 cells, t = 8: the window is 4 wide, wider than the grid. The joint sits on the centre (28, 20) of the
    # missing column 3, row 2; it reaches only (2, 2) at d^2 = 64 = t^2 (never a cell past the edge, wrapped into the
    # next row).
    joints = torch.tensor([[[[28.0, 20.0, 1.0]]]])
    out = IMPLS[impl](joints, (5, 3), 8, 8.0, STDEV)
    scmap = torch.zeros(1, 1, 5, 3)
    scmap[0, 0, 2, 2] = 1.0
    assert torch.equal(out.scmap, scmap) and torch.equal(out.locref_mask, scmap.expand(1, 2, 5, 3))
    locref = torch.zeros(1, 2, 5, 3)
    locref[0, 0, 2, 2] = 8.0
    torch.testing.assert_close(out.locref, locref / STDEV, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_the_default_threshold_is_17(impl):
    # One row of centres x = 4, 12, 20, 28; the joint at x = 21.5 is 17.5 px from the first: outside the default 17.
    # Joint 1 is absent: by default (present_only false) its channel keeps weight 1.
    joints = torch.tensor([[[[21.5, 4.0, 1.0], [0.0, 0.0, 0.0]]]])
    out = IMPLS[impl](joints, (1, 4))
    assert out.scmap[0, :, 0].tolist() == [[0.0, 1.0, 1.0, 1.0], [0.0] * 4]
    assert torch.equal(out.scmap_weights, torch.ones(1, 2, 1, 4))
    for name, a, e in zip(Targets._fields, make_targets(joints, (1, 4)), out, strict=True):
        assert torch.equal(a, e), name


@pytest.mark.parametrize("impl", IMPLS)
def test_a_zero_threshold_covers_only_a_cell_whose_centre_is_the_joint(impl):
    # Sample 0 has t = 0 (a valid threshold: only d^2 = 0 hits), sample 1 t = 5; both joints on the centre (12, 4).
    joints = torch.tensor([[[[12.0, 4.0, 1.0]]], [[[12.0, 4.0, 1.0]]]])
    out = IMPLS[impl](joints, (2, 3), 8, torch.tensor([0.0, 5.0]), STDEV)
    assert out.scmap[0, 0].tolist() == [[0, 1, 0], [0, 0, 0]]
    assert out.scmap[1, 0].tolist() == [[0, 1, 0], [0, 0, 0]]  # the next centres are 8 px away
    assert out.locref.abs().sum() == 0 and out.locref_mask.sum() == 4
    out = IMPLS[impl](joints[:1], (2, 3), 8, 0.0, STDEV)  # the float 0 too
    assert out.scmap[0, 0].tolist() == [[0, 1, 0], [0, 0, 0]]


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_a_float64_threshold_tensor_is_rounded_to_float32_first(impl):
    # t = 8.1 in float32 is 8.1000003815; the joint at x = 12.1 (float32) is dx = 8.1000003815 from the centre 4:
    # d^2 = t^2 in float32 (65.610008), so the cell is covered, though d^2 > 8.1^2 = 65.61 in float64.
    joints = torch.tensor([[[[12.1, 4.0, 1.0]]]])
    for thresh in (8.1, torch.tensor([8.1]), torch.tensor([8.1], dtype=torch.float64)):
        assert IMPLS[impl](joints, (1, 3), 8, thresh, STDEV).scmap[0, 0, 0].tolist() == [1.0, 1.0, 1.0], thresh


@pytest.mark.parametrize("b, p, k", [(0, 2, 3), (2, 0, 3), (2, 1, 0)])
@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_an_empty_batch_person_or_joint_axis_gives_empty_or_zero_targets(impl, b, p, k):
    joints = torch.ones(b, p, k, 3)
    for thresh in (9.0, torch.full((b,), 9.0)):
        out = IMPLS[impl](joints, (3, 4), 8, thresh, STDEV)
        shapes = [(b, k, 3, 4), (b, k, 3, 4), (b, 2 * k, 3, 4), (b, 2 * k, 3, 4)]
        for name, t, shape in zip(Targets._fields, out, shapes, strict=True):
            assert t.shape == shape and t.dtype == torch.float32, name
        assert not out.scmap.any() and not out.locref.any() and not out.locref_mask.any()
        assert torch.equal(out.scmap_weights, torch.ones(shapes[1]))


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_float64_joints_give_the_float32_targets(gen, impl):
    joints = _random_joints(gen, 2, 3, 4, 6, 7)
    want = IMPLS[impl](joints, (6, 7), 8, 12.0, STDEV)
    want = [t.clone() for t in want]
    got = IMPLS[impl](joints.double(), (6, 7), 8, 12.0, STDEV)
    assert want[0].sum() > 0
    for name, a, e in zip(Targets._fields, got, want, strict=True):
        assert a.dtype == torch.float32 and torch.equal(a, e), name


@pytest.mark.parametrize("thresh", [float("inf"), torch.tensor([3.0, float("inf")])])
def test_torch_twin_rejects_an_infinite_threshold_naming_it(thresh):
    with pytest.raises(ValueError, match=r"^dist_thresh must be finite; got a maximum of inf$"):
        make_targets_torch(torch.zeros(2, 1, 3, 3), (4, 4), 8, thresh, STDEV)


def test_torch_twin_rejects_a_negative_threshold_in_a_tensor():
    with pytest.raises(ValueError, match="dist_thresh must be >= 0; got a minimum of -2"):
        make_targets_torch(torch.zeros(2, 1, 3, 3), (4, 4), 8, torch.tensor([5.0, -2.0]), STDEV)


def _random_joints(gen, b, p, k, h, w, stride=8, margin=24.0, absent=0.25):
    """Joints spread over the grid and a margin around it, about a quarter absent."""
    span = torch.tensor([w * stride + 2 * margin, h * stride + 2 * margin])
    xy = torch.rand(b, p, k, 2, generator=gen) * span - margin
    present = (torch.rand(b, p, k, 1, generator=gen) > absent).float()
    return torch.cat([xy, present], dim=-1)


@pytest.mark.parametrize(
    "b, p, k, h, w",
    [(1, 1, 14, 5, 5), (5, 3, 17, 7, 9), (5, 6, 14, 13, 11), (16, 1, 14, 46, 46), (4, 6, 17, 64, 64)],
)
def test_torch_twin_matches_the_numpy_loop(gen, b, p, k, h, w):
    joints = _random_joints(gen, b, p, k, h, w)
    thresh = 17 * (0.85 + 0.3 * torch.rand(b, generator=gen))  # pos_dist_thresh 17 times a jittered scale
    ignore = (torch.rand(b, 1, h, w, generator=gen) > 0.9).float()
    got = make_targets_torch(joints, (h, w), 8, thresh, STDEV, ignore=ignore, present_only=True)
    ref = _numpy_impl(joints, (h, w), 8, thresh, STDEV, ignore=ignore, present_only=True)
    assert got.scmap.sum() > 0 and got.scmap_weights.min() == 0  # the case is not trivial
    assert torch.equal(got.scmap, ref.scmap)
    assert torch.equal(got.scmap_weights, ref.scmap_weights)
    assert torch.equal(got.locref_mask, ref.locref_mask)
    # The oracle computes in float64, the twin in float32: locref agrees to the last float32 bit.
    torch.testing.assert_close(got.locref, ref.locref, rtol=0, atol=5e-7)


@pytest.mark.parametrize(
    "b, p, k, h, w, present_only, with_ignore",
    [
        (1, 2, 14, 5, 5, False, False),
        (5, 4, 17, 3, 3, True, True),
        (2, 3, 3, 9, 7, True, False),
        (3, 1, 5, 9, 8, False, False),  # one person, grid wider than a window: the twin's scatter-all path
        (2, 1, 3, 3, 4, False, True),  # one person, grid narrower than a window
    ],
)
def test_triton_matches_torch_twin_on_cpu(gen, b, p, k, h, w, present_only, with_ignore):
    joints = _random_joints(gen, b, p, k, h, w)
    thresh = 6 + 10 * torch.rand(b, generator=gen)
    ignore = (torch.rand(b, 1, h, w, generator=gen) > 0.7).float() if with_ignore else None
    want = make_targets_torch(joints, (h, w), 8, thresh, STDEV, ignore=ignore, present_only=present_only)
    got = make_targets_triton(joints, (h, w), 8, thresh, STDEV, ignore=ignore, present_only=present_only, block=16)
    assert want.scmap.sum() > 0
    for name, a, e in zip(Targets._fields, got, want, strict=True):
        assert a.shape == e.shape and a.dtype == torch.float32, name
        assert torch.equal(a, e), name  # the interpreter runs the same float32 operations as the twin


@pytest.mark.cuda
def test_triton_on_cuda_matches_torch_twin(gen):
    b, p, k, h, w = 8, 6, 17, 64, 48
    joints = _random_joints(gen, b, p, k, h, w)
    thresh = 17 * (0.85 + 0.3 * torch.rand(b, generator=gen))
    ignore = (torch.rand(b, 1, h, w, generator=gen) > 0.9).float()
    want = make_targets_torch(joints, (h, w), 8, thresh, STDEV, ignore=ignore, present_only=True)
    got = make_targets(joints.cuda(), (h, w), 8, thresh.cuda(), STDEV, ignore=ignore.cuda(), present_only=True)
    # The kernel is launched without fused multiply-adds and divides with div_rn: the same float32 operations as
    # the twin, so the GPU gives the same bits.
    for name, a, e in zip(Targets._fields, got, want, strict=True):
        assert torch.equal(a.cpu(), e), name


@pytest.mark.parametrize("impl", ["torch", "triton"])
@pytest.mark.parametrize("b, k, h, w", [(1, 14, 5, 7), (5, 17, 9, 5)])
def test_round_trip_argmax_plus_locref_gives_the_joint_back(gen, impl, b, k, h, w):
    stride = 8
    # Joints anywhere inside the grid's cells, one person: every channel has exactly one joint.
    xy = torch.rand(b, 1, k, 2, generator=gen) * torch.tensor([w * stride - 1.0, h * stride - 1.0])
    joints = torch.cat([xy, torch.ones(b, 1, k, 1)], dim=-1)
    thresh = torch.full((b,), stride * 0.75)  # covers at least the joint's own cell (corner at stride / sqrt 2)
    out = IMPLS[impl](joints, (h, w), stride, thresh, STDEV)
    cell = out.scmap.reshape(b, k, h * w).argmax(-1)  # (B, K) first positive cell
    row, col = cell // w, cell % w
    lx = out.locref[:, 0::2].reshape(b, k, h * w).gather(-1, cell[..., None])[..., 0]  # (B, K)
    ly = out.locref[:, 1::2].reshape(b, k, h * w).gather(-1, cell[..., None])[..., 0]
    x = col * stride + stride / 2 + lx * STDEV
    y = row * stride + stride / 2 + ly * STDEV
    torch.testing.assert_close(torch.stack([x, y], -1), xy[:, 0], rtol=0, atol=1e-4)
    assert torch.all(out.scmap.reshape(b, k, -1).amax(-1) == 1)


def test_float_threshold_equals_tensor_threshold_and_dispatch_uses_the_twin_on_cpu(gen):
    joints = _random_joints(gen, 3, 2, 5, 6, 6)
    a = make_targets(joints, (6, 6), 8, 13.6, STDEV)
    b = make_targets_torch(joints, (6, 6), 8, torch.full((3,), 13.6), STDEV)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_bad_sizes_raise_a_message_naming_them(impl):
    joints = torch.zeros(2, 1, 3, 3)
    for grid in [(4, 0), (4,), (4, 4, 1)]:
        message = rf"^grid must be \(H, W\) with positive sizes; got {re.escape(str(grid))}$"
        with pytest.raises(ValueError, match=message):
            IMPLS[impl](joints, grid, 8, 8.0, STDEV)
    for stride, stdev in [(0, STDEV), (8, 0.0), (-1, -1.0)]:
        with pytest.raises(ValueError, match=rf"^stride and locref_stdev must be positive; got stride={stride}, "
                                             rf"locref_stdev={stdev}$"):
            IMPLS[impl](joints, (4, 4), stride, 8.0, stdev)
    # A 0-d tensor threshold is every sample's.
    joints[:, 0, 0] = torch.tensor([12.0, 12.0, 1.0])
    want = IMPLS[impl](joints, (3, 3), 8, 8.0, STDEV)
    assert want.scmap.sum() == 2 * 5  # the plus around (1, 1) in both samples
    for a, e in zip(IMPLS[impl](joints, (3, 3), 8, torch.tensor(8.0), STDEV), want, strict=True):
        assert torch.equal(a, e)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"joints": torch.zeros(2, 3, 3)}, "joints must have shape"),
        ({"grid": (0, 4)}, "grid must be"),
        ({"dist_thresh": torch.ones(3)}, "dist_thresh must be"),
        ({"dist_thresh": -1.0}, "dist_thresh must be >= 0"),
        ({"ignore": torch.zeros(2, 4, 4)}, "ignore must have shape"),
    ],
)
@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_bad_inputs_raise_a_clear_error(impl, kwargs, match):
    args = {"joints": torch.zeros(2, 1, 3, 3), "grid": (4, 4), "dist_thresh": 8.0, "ignore": None}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        IMPLS[impl](args["joints"], args["grid"], 8, args["dist_thresh"], STDEV, ignore=args["ignore"])


def test_torch_twin_outputs_are_independent_contiguous_float32(gen):
    # The twin carves scmap, locref and its mask out of one buffer: each must still behave as a tensor of its own.
    joints = _random_joints(gen, 2, 3, 4, 6, 7)
    out = make_targets_torch(joints, (6, 7), 8, 12.0, STDEV)
    want = [t.clone() for t in out]
    shapes = [(2, 4, 6, 7), (2, 4, 6, 7), (2, 8, 6, 7), (2, 8, 6, 7)]
    for name, t, shape in zip(Targets._fields, out, shapes, strict=True):
        assert t.shape == shape and t.dtype == torch.float32 and not t.is_inference(), name
        assert t.is_contiguous() or name == "scmap_weights", name
    out.scmap.add_(5.0)  # writing one output leaves the others alone
    for name, t, e in zip(Targets._fields[1:], out[1:], want[1:], strict=True):
        assert torch.equal(t, e), name
    again = make_targets_torch(joints, (6, 7), 8, 12.0, STDEV)  # a second call shares nothing with the first
    assert torch.equal(again.scmap, want[0]) and torch.equal(out.scmap, want[0] + 5.0)


@pytest.mark.parametrize("present_only, with_ignore", [(False, False), (True, False), (False, True), (True, True)])
def test_torch_twin_weights_are_a_read_only_broadcast_unless_both_factors_vary(gen, present_only, with_ignore):
    b, p, k, h, w = 3, 2, 5, 4, 6
    joints = _random_joints(gen, b, p, k, h, w, absent=0.6)
    ignore = (torch.rand(b, 1, h, w, generator=gen) > 0.7).float() if with_ignore else None
    out = make_targets_torch(joints, (h, w), 8, 10.0, STDEV, ignore=ignore, present_only=present_only)
    ref = _numpy_impl(joints, (h, w), 8, 10.0, STDEV, ignore=ignore, present_only=present_only)
    assert torch.equal(out.scmap_weights, ref.scmap_weights)
    assert torch.equal(out.scmap_weights.contiguous(), ref.scmap_weights)
    if present_only and with_ignore:
        assert out.scmap_weights.is_contiguous()
    else:
        assert 0 in out.scmap_weights.stride()  # no B K H W floats written for a constant
        with pytest.raises(RuntimeError):  # an in-place write fails loudly instead of aliasing
            out.scmap_weights.mul_(2.0)


def test_torch_twin_misses_inside_a_window_are_positive_zero(gen):
    joints = _random_joints(gen, 4, 1, 6, 9, 9, margin=0.0)  # one person: every candidate of a window is written
    out = make_targets_torch(joints, (9, 9), 8, 13.6, STDEV)
    off = out.locref_mask == 0
    assert off.any() and not torch.signbit(out.locref[off]).any()  # +0 like the kernel, never -0


def test_torch_twin_from_several_threads_gives_each_its_own_targets(gen):
    # The buffer pool is per thread: concurrent calls never share a buffer.
    from concurrent.futures import ThreadPoolExecutor

    batches = [_random_joints(gen, 3, 1, 5, 9, 9) for _ in range(8)]
    want = [[t.clone() for t in make_targets_torch(j, (9, 9), 8, 13.6, STDEV)] for j in batches]

    def run(i):
        for _ in range(20):  # drop and remake: the buffers are reused within each thread
            got = make_targets_torch(batches[i], (9, 9), 8, 13.6, STDEV)
            if not all(torch.equal(a, e) for a, e in zip(got, want[i], strict=True)):
                return False
        return True

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(run, range(8)))


def test_torch_twin_reuses_its_buffer_only_when_no_tensor_uses_it(gen):
    from fastpose.kernels import targets

    if targets._use_count is None:
        pytest.skip("this torch lacks the storage use count: the twin never reuses a buffer")
    h = w = 9
    first = _random_joints(gen, 4, 1, 6, h, w, absent=0.0)
    second = _random_joints(gen, 4, 1, 6, h, w, absent=0.5)
    want = [t.clone() for t in make_targets_torch(second, (h, w), 8, 13.6, STDEV)]

    def ptr(out):
        return out.scmap.untyped_storage().data_ptr()

    def same(out):  # a function, so that no loop variable keeps an output alive
        return all(torch.equal(a, e) for a, e in zip(out, want, strict=True))

    held = make_targets_torch(first, (h, w), 8, 13.6, STDEV)
    kept = held.locref_mask  # one view keeps the whole buffer in use
    del held
    got = make_targets_torch(second, (h, w), 8, 13.6, STDEV)
    assert got.locref_mask.untyped_storage().data_ptr() != kept.untyped_storage().data_ptr()
    assert same(got)

    # Dropped outputs: the next call reuses that buffer and leaves nothing of the previous targets in it.
    p0 = ptr(got)
    del got
    again = make_targets_torch(second, (h, w), 8, 13.6, STDEV)
    assert ptr(again) == p0 and same(again)

    # A buffer made in inference mode never comes back outside it (autograd could not save such outputs).
    del again
    with torch.inference_mode():
        inside = make_targets_torch(second, (h, w), 8, 13.6, STDEV)
        assert inside.scmap.is_inference()
    del inside
    again = make_targets_torch(second, (h, w), 8, 13.6, STDEV)
    assert not again.scmap.is_inference() and same(again)

    # Targets that autograd saved for backward are in use too.
    logits = torch.zeros(4, 6, h, w, requires_grad=True)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, again.scmap)
    p1 = ptr(again)
    del again
    other = make_targets_torch(first, (h, w), 8, 13.6, STDEV)
    assert ptr(other) != p1
    loss.backward()


def test_torch_twin_pool_holds_this_threads_two_latest_buffers(gen):
    # Three targets held at once: the pool keeps the two latest buffers (newest first) and drops the oldest; when the
    # middle one is dropped, the next call gets its buffer back. In a thread of its own: an empty pool to start with.
    from fastpose.kernels import targets

    if targets._use_count is None:
        pytest.skip("this torch lacks the storage use count: the twin never reuses a buffer")
    joints = _random_joints(gen, 2, 1, 3, 5, 5)
    seen = {}

    def run():
        def ptr(out):
            return out.scmap.untyped_storage().data_ptr()

        t1, t2, t3 = (make_targets_torch(joints, (5, 5), 8, 9.0, STDEV) for _ in range(3))
        seen["pool"] = [b.data_ptr() for b in targets._POOL.slots] == [ptr(t3), ptr(t2)]  # t1's buffer dropped
        second = ptr(t2)
        del t2
        seen["reused"] = ptr(make_targets_torch(joints, (5, 5), 8, 9.0, STDEV)) == second

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == {"pool": True, "reused": True}


def test_twin_weights_are_float32_whatever_the_ignore_dtype():
    # The spec: all four outputs are float32. ignore may come as float64 (numpy masks) or uint8; present_only weights
    # come from a bool "any".
    joints = torch.tensor([[[[4.0, 4.0, 1.0], [0.0, 0.0, 0.0]]]])  # (1, 1, 2, 3): joint 1 absent
    for ignore in (None, torch.zeros(1, 1, 2, 3, dtype=torch.float64), torch.ones(1, 1, 2, 3, dtype=torch.uint8)):
        for present_only in (False, True):
            w = make_targets_torch(joints, (2, 3), 8, 5.0, 7.2801, ignore, present_only).scmap_weights
            assert w.dtype == torch.float32, (ignore, present_only)
            want = 0.0 if ignore is not None and ignore.dtype == torch.uint8 else 1.0
            assert w[0, 0].unique().tolist() == [want]
            assert w[0, 1].unique().tolist() == [0.0 if present_only else want]
