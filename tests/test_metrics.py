"""PCK and PCKh on hand-made cases with hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest

from fastpose import metrics


def _person(points):
    return np.asarray(points, dtype=np.float64)[None]  # (1, K, 2)


def test_perfect_predictions_score_one():
    gt = np.random.default_rng(0).uniform(0, 200, size=(5, 4, 2))
    visible = np.ones((5, 4), bool)
    boxes = np.tile(np.array([[0.0, 0.0], [30.0, 40.0]]), (5, 1, 1))
    np.testing.assert_array_equal(metrics.pck(gt, gt, visible), np.ones(4))
    np.testing.assert_array_equal(metrics.pckh(gt, gt, visible, boxes), np.ones(4))


def test_pck_known_shifts():
    # GT box of the person: x 0..100, y 0..50 -> max(w, h) = 100; PCK@0.2 allows an error of 20 px (inclusive).
    gt = _person([[0, 0], [100, 0], [100, 50], [0, 50]])
    pred = gt + np.array([[[20.0, 0.0], [20.01, 0.0], [12.0, 16.0], [12.0, 16.1]]])  # errors 20, 20.01, 20, ~20.08
    out = metrics.pck(pred, gt, np.ones((1, 4), bool), threshold=0.2)
    np.testing.assert_array_equal(out, [1.0, 0.0, 1.0, 0.0])
    out = metrics.pck(pred, gt, np.ones((1, 4), bool), threshold=0.1)  # 10 px: all wrong
    np.testing.assert_array_equal(out, [0.0, 0.0, 0.0, 0.0])


def test_pck_fractions_over_persons():
    # Four persons with the same 2-joint box of size 10 (0..10 in x); joint 1 shifted by 1, 3, 5, 7 px.
    gt = np.tile(np.array([[[0.0, 0.0], [10.0, 0.0]]]), (4, 1, 1))
    pred = gt.copy()
    pred[:, 1, 1] += [1.0, 3.0, 5.0, 7.0]
    out = metrics.pck(pred, gt, np.ones((4, 2), bool), threshold=0.4)  # 4 px allowed
    np.testing.assert_allclose(out, [1.0, 0.5])


def test_invisible_joints_ignored_and_nan():
    gt = np.array([[[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]])
    pred = gt.copy()
    pred[0, 1] = [1000.0, 1000.0]  # far off, but invisible: must not count
    pred[1, 0] = [1000.0, 1000.0]  # far off and visible: counts as wrong
    visible = np.array([[True, False, False], [True, True, False]])
    out = metrics.pck(pred, gt, visible)
    assert out[0] == 0.5 and out[1] == 1.0 and np.isnan(out[2])
    boxes = np.tile(np.array([[0.0, 0.0], [6.0, 8.0]]), (2, 1, 1))
    out = metrics.pckh(pred, gt, visible, boxes)
    assert out[0] == 0.5 and out[1] == 1.0 and np.isnan(out[2])


def test_invisible_joints_do_not_widen_the_pck_box():
    # The invisible joint at x = 1000 must not enter the person's box: the box stays 10 px, so 3 px > 0.2 x 10 fails.
    gt = _person([[0, 0], [10, 0], [1000, 0]])
    pred = gt + np.array([[[3.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    out = metrics.pck(pred, gt, np.array([[True, True, False]]))
    assert out[0] == 0.0 and out[1] == 1.0 and np.isnan(out[2])


def test_pckh_strict_threshold():
    # Head box 30 x 40 -> diagonal 50 -> head size 0.6 * 50 = 30; PCKh@0.5 allows errors strictly below 15 px.
    gt = _person([[100, 100], [100, 100], [100, 100]])
    pred = gt + np.array([[[15.0, 0.0], [9.0, 11.9], [0.0, 14.999]]])  # 15 exactly, ~14.92, 14.999
    boxes = np.array([[[10.0, 20.0], [40.0, 60.0]]])
    out = metrics.pckh(pred, gt, np.ones((1, 3), bool), boxes, threshold=0.5)
    np.testing.assert_array_equal(out, [0.0, 1.0, 1.0])


def test_pckh_unknown_head_box_left_out():
    gt = np.zeros((2, 1, 2))
    pred = gt + 1.0
    boxes = np.array([[[0.0, 0.0], [30.0, 40.0]], [[np.nan, np.nan], [np.nan, np.nan]]])
    # Person 0 counts (error 1.41 < 15), person 1 is left out rather than counted as wrong.
    np.testing.assert_array_equal(metrics.pckh(pred, gt, np.ones((2, 1), bool), boxes), [1.0])
    out = metrics.pckh(pred[1:], gt[1:], np.ones((1, 1), bool), boxes[1:])
    assert np.isnan(out[0])


def test_pckh_zero_size_head_box_left_out():
    # Person 0: head size 0.6 * 50 = 30, error 1 counts as correct. Persons 1 and 2 have a zero-size head box (a point
    # box, and a box whose corners coincide at the origin): left out of PCKh, not counted as wrong (which would give
    # 1/3) and not as right with the error 0 of person 2 (2/3).
    gt = np.zeros((3, 1, 2))
    pred = gt.copy()
    pred[:2, 0, 0] = 1.0  # errors 1, 1, 0
    boxes = np.array([[[0.0, 0.0], [30.0, 40.0]], [[5.0, 7.0], [5.0, 7.0]], [[0.0, 0.0], [0.0, 0.0]]])
    np.testing.assert_array_equal(metrics.pckh(pred, gt, np.ones((3, 1), bool), boxes), [1.0])
    assert np.isnan(metrics.pckh(pred[1:], gt[1:], np.ones((2, 1), bool), boxes[1:])[0])
    np.testing.assert_allclose(metrics.head_sizes(boxes), [30.0, 0.0, 0.0])


def test_nan_prediction_is_wrong():
    gt = _person([[0, 0], [10, 0]])
    pred = gt.copy()
    pred[0, 0] = np.nan
    np.testing.assert_array_equal(metrics.pck(pred, gt, np.ones((1, 2), bool)), [0.0, 1.0])


def test_shape_errors():
    with pytest.raises(ValueError, match=r"\(N, K, 2\)"):
        metrics.pck(np.zeros((2, 3, 2)), np.zeros((2, 4, 2)), np.ones((2, 3), bool))
    with pytest.raises(ValueError, match="head_boxes"):
        metrics.pckh(np.zeros((2, 3, 2)), np.zeros((2, 3, 2)), np.ones((2, 3), bool), np.zeros((2, 4)))


def test_summarise_groups_and_weighted_mean():
    per_joint = np.array([1.0, 0.5, np.nan, 0.25])
    out = metrics.summarise(per_joint, ["a", "b", "c", "d"], [[0, 1], [2], [3]], ["ab", "c", "d"],
                            counts=[2, 2, 0, 4])
    assert out["per_joint"] == {"a": 1.0, "b": 0.5, "c": None, "d": 0.25}
    assert out["per_group"] == {"ab": 0.75, "c": None, "d": 0.25}
    # (2 * 1 + 2 * 0.5 + 4 * 0.25) / 8 = 0.5
    assert out["mean"] == pytest.approx(0.5)
    assert metrics.summarise(per_joint, ["a", "b", "c", "d"], [], [])["mean"] == pytest.approx(1.75 / 3)


def test_pck_sizes_per_person_by_hand():
    # Person 0: joints 0, 1 labelled with visibility code 2 (not just True) -> box 10 x 5 -> 10. Person 1: its third
    # joint is NaN and so left out -> box 3 x 20 -> 20. Person 2: nothing labelled -> 0.
    gt = np.array([[[0, 0], [10, 5], [99, 99]], [[100, 100], [103, 120], [np.nan, np.nan]], [[5, 5], [6, 6], [7, 7]]])
    visible = np.array([[2, 2, 0], [1, 1, 1], [0, 0, 0]])
    np.testing.assert_array_equal(metrics.pck_sizes(gt, visible), [10.0, 20.0, 0.0])


def test_summarise_mean_edge_counts():
    per_joint = np.array([0.25, 0.75, np.nan])
    assert metrics.summarise(per_joint, ["a", "b", "c"], [], [], counts=[1, 0, 0])["mean"] == 0.25  # one instance
    assert metrics.summarise(per_joint, ["a", "b", "c"], [], [], counts=[0, 0, 3])["mean"] is None  # none counted
    assert metrics.summarise([np.nan, np.nan], ["a", "b"], [[0, 1]], ["ab"]) == {
        "per_joint": {"a": None, "b": None}, "per_group": {"ab": None}, "mean": None}


def test_oks_sigmas_by_keypoint_count():
    sigmas, name = metrics.oks_sigmas(17)
    assert name == "coco" and sigmas is metrics.COCO_SIGMAS and sigmas[0] == pytest.approx(0.026)  # the nose
    sigmas, name = metrics.oks_sigmas(14)
    assert name == "crowdpose" and sigmas is metrics.CROWDPOSE_SIGMAS and len(sigmas) == 14
    for k in (13, 15, 16, 18):
        sigmas, name = metrics.oks_sigmas(k)
        assert name == "uniform 0.1" and sigmas.dtype == np.float64 and sigmas.tolist() == [0.1] * k


def test_visibility_codes_and_a_nan_label_count_per_person():
    # visible given as the datasets' codes (2 = visible, 1 = occluded): both count. Person 1's joint 0 label is NaN:
    # only that instance is left out, not person 0's (error 1 <= 0.2 x 10, and 3 > 2).
    gt = np.array([[[0.0, 0.0], [10.0, 0.0]], [[np.nan, np.nan], [10.0, 0.0]]])
    pred = gt + np.array([[[1.0, 0.0], [3.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    # Person 1 has one labelled joint: its box is 0 x 0, so only an exact prediction (error 0 <= 0) is correct.
    np.testing.assert_array_equal(metrics.pck(pred, gt, np.array([[2, 1], [2, 2]])), [1.0, 0.5])


def test_pckh_default_threshold_and_a_small_head():
    # Head box 3 x 4 -> diagonal 5 -> head size 3: PCKh@0.5 (the default) allows errors below 1.5, so 1.4 counts and
    # 1.6 does not. A head box of diagonal 1 (head size 0.6) is a real head: an error of 0.2 < 0.3 counts.
    gt = np.zeros((3, 1, 2))
    pred = gt + np.array([[[1.4, 0.0]], [[1.6, 0.0]], [[0.2, 0.0]]])
    boxes = np.array([[[0.0, 0.0], [3.0, 4.0]], [[0.0, 0.0], [3.0, 4.0]], [[0.0, 0.0], [0.6, 0.8]]])
    np.testing.assert_allclose(metrics.pckh(pred, gt, np.ones((3, 1), bool), boxes), [2 / 3])


def test_shape_error_messages():
    with pytest.raises(ValueError, match=r"pred and gt must both be \(N, K, 2\) arrays, got \(2, 3, 3\) and"):
        metrics.pck(np.zeros((2, 3, 3)), np.zeros((2, 3, 3)), np.ones((2, 3), bool))
    with pytest.raises(ValueError, match=r"^visible must be \(N, K\) = \(2, 3\), got \(3, 2\)$"):
        metrics.pck(np.zeros((2, 3, 2)), np.zeros((2, 3, 2)), np.ones((3, 2), bool))
    with pytest.raises(ValueError, match=r"^head_boxes has 3 persons, pred has 2$"):
        metrics.pckh(np.zeros((2, 1, 2)), np.zeros((2, 1, 2)), np.ones((2, 1), bool), np.zeros((3, 2, 2)))
    with pytest.raises(ValueError, match=r"head_boxes must be \(N, 2, 2\)"):
        metrics.head_sizes(np.zeros((2, 2, 3)))
