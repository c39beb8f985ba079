"""Pixel error (DeepLabCut's train/test error with a p-cutoff), OKS matching and the error pictures, on hand-made
predictions with hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from typer.testing import CliRunner

from fastpose import config as config_mod
from fastpose import metrics, plots
from fastpose.cli import app
from fastpose.errors import UserError
from fastpose.evaluate import check_pcutoff, parse_splits, pixel_errors


def _known():
    """Two samples, three joints: distances 5 (3-4-5), 10 (6-8-10), 0, 2; one NaN prediction, one unlabelled joint."""
    gt = np.array([[[10.0, 10.0], [20.0, 20.0], [0.0, 0.0]], [[50.0, 50.0], [60.0, 60.0], [70.0, 70.0]]])
    pred = gt + np.array([[[3.0, 4.0], [-6.0, 8.0], [1000.0, 1000.0]], [[0.0, 0.0], [np.nan, np.nan], [0.0, 2.0]]])
    visible = np.array([[True, True, False], [True, True, True]])
    scores = np.array([[0.9, 0.6, 0.99], [0.59, 0.9, 0.61]])  # 0.6 is kept (>=), 0.59 is not
    return pred, gt, visible, scores


def test_pixel_error_known_distances_nan_and_cutoff():
    out = metrics.pixel_error(*_known(), pcutoff=0.6)
    assert out["mean"] == 17 / 4  # (5 + 10 + 0 + 2) / 4: the NaN prediction is left out, the unlabelled joint too
    np.testing.assert_array_equal(out["per_joint"], [2.5, 10.0, 2.0])
    assert out["mean_above_pcutoff"] == 17 / 3  # 5 (0.9), 10 (0.6), 2 (0.61); 0 (0.59) and NaN dropped
    np.testing.assert_array_equal(out["per_joint_above_pcutoff"], [5.0, 10.0, 2.0])
    assert out["kept"] == 3 / 5  # of 5 labelled joints
    assert out["unpredicted"] == 1
    np.testing.assert_array_equal(out["labelled"], [2, 2, 1])
    np.testing.assert_array_equal(out["predicted"], [2, 1, 1])
    expected = np.array([[5.0, 10.0, np.nan], [0.0, np.nan, 2.0]])
    np.testing.assert_array_equal(out["errors"], expected)
    # A cutoff of 0 keeps every predicted joint; 1 keeps none.
    everything = metrics.pixel_error(*_known(), pcutoff=0.0)
    assert everything["mean_above_pcutoff"] == 17 / 4 and everything["kept"] == 4 / 5
    nothing = metrics.pixel_error(*_known(), pcutoff=1.0)
    assert math.isnan(nothing["mean_above_pcutoff"]) and nothing["kept"] == 0.0
    assert np.isnan(nothing["per_joint_above_pcutoff"]).all()


def test_pixel_error_with_nothing_labelled():
    pred, gt, _, scores = _known()
    out = metrics.pixel_error(pred, gt, np.zeros((2, 3), bool), scores)
    assert math.isnan(out["mean"]) and math.isnan(out["kept"]) and out["unpredicted"] == 0
    with pytest.raises(ValueError, match="scores"):
        metrics.pixel_error(pred, gt, np.ones((2, 3), bool), scores[:, :2])


def test_oks_matches_the_formula():
    # One person, two labelled joints, area 400, sigmas 0.1: var = 0.04; joint 0 off by 3-4-5, joint 1 exact.
    gt = np.array([[[0.0, 0.0], [10.0, 0.0], [99.0, 99.0]]])
    visible = np.array([[True, True, False]])
    pred = np.array([[[3.0, 4.0], [10.0, 0.0], [np.nan, np.nan]], [[np.nan, np.nan]] * 3])
    sim = metrics.oks(pred, gt, visible, [400.0], np.full(3, 0.1))
    e0 = math.exp(-25 / 0.04 / (400 + np.spacing(1)) / 2)
    np.testing.assert_allclose(sim, [[(e0 + 1.0) / 2, 0.0]], rtol=1e-12)
    assert metrics.oks(pred, gt, np.zeros((1, 3), bool), [400.0], np.full(3, 0.1)).tolist() == [[0.0, 0.0]]


def test_match_persons_greedy_by_score():
    # Person 0 is near both predictions: the higher-scoring one (1) takes it although prediction 0 is closer.
    sim = np.array([[0.95, 0.6], [0.3, 0.55]])
    np.testing.assert_array_equal(metrics.match_persons(sim, [0.5, 0.9]), [1, -1])  # 0.3 < 0.5: person 1 not found
    np.testing.assert_array_equal(metrics.match_persons(sim, [0.9, 0.5]), [0, 1])
    np.testing.assert_array_equal(metrics.match_persons(sim, [0.9, 0.5], threshold=0.6), [0, -1])
    np.testing.assert_array_equal(metrics.match_persons(np.zeros((2, 0)), []), [-1, -1])


def _cfg(k=3):
    return config_mod.load(None, num_joints=k, joint_names=["a", "b", "c"][:k], all_joints=[[0], [1, 2]],
                           all_joints_names=["a", "bc"])


def test_multi_person_two_people_swapped_in_source_pixels():
    """Sample pixels x2 + (10, 20) to the source. Predictions listed in the other order than the people; person 2
    has no prediction near it; the second prediction lacks joint c (score 0). OKS with sigmas 0.1: person a (area
    4000) (1 + exp(-100 / 0.04 / 4000 / 2) + 0) / 3 = 0.58; person b (no area: its extent 20 px squared)
    (exp(-25 / 0.04 / 400 / 2) + 1) / 2 = 0.73; both >= 0.5."""
    a = np.array([[10.0, 10.0, 2], [20.0, 10.0, 2], [30.0, 10.0, 2]])
    b = np.array([[100.0, 80.0, 2], [110.0, 80.0, 2], [120.0, 80.0, 0]])  # joint c unlabelled
    c = np.array([[300.0, 300.0, 2], [310.0, 300.0, 2], [320.0, 300.0, 2]])
    pred_b = np.array([[101.5, 82.0, 0.9], [110.0, 80.0, 0.5], [500.0, 500.0, 0.9]])  # 1.5-2-2.5 off in sample px
    pred_a = np.array([[10.0, 10.0, 0.8], [23.0, 14.0, 0.7], [0.0, 0.0, 0.0]])  # 3-4-5; joint c lacking
    gt = {"persons": [np.stack([a, b, c])], "person_area": [np.array([4000.0, np.nan, 4000.0])],
          "transform": np.array([[2.0, 0.0, 10.0, 0.0, 2.0, 20.0]]),
          "joints": np.zeros((1, 3, 2)), "visible": np.zeros((1, 3), bool)}
    summary, rows = pixel_errors(None, [np.stack([pred_b, pred_a])], gt, _cfg(), pcutoff=0.6)
    np.testing.assert_array_equal(rows[0]["match"], [1, 0, -1])
    # Source errors: person a 0, 10 and c unpredicted; person b 5, 0. Mean (0 + 10 + 5 + 0) / 4.
    assert summary["mean"] == pytest.approx(15 / 4, abs=1e-5)
    assert summary["per_joint"] == pytest.approx({"a": 2.5, "b": 5.0, "c": None}, abs=1e-5)
    assert summary["mean_above_pcutoff"] == pytest.approx(15 / 3, abs=1e-5)  # b's joint b (0.5) dropped
    assert summary["kept"] == pytest.approx(3 / 5)  # of 5 labelled joints of matched people
    assert summary["unpredicted"] == 1 and summary["joints"] == 5
    assert summary["persons"] == 3 and summary["persons_found"] == pytest.approx(2 / 3)
    np.testing.assert_allclose(rows[0]["errors"][:2], [[0.0, 10.0, np.nan], [5.0, 0.0, np.nan]], atol=1e-5)
    assert np.isnan(rows[0]["errors"][2]).all()


def test_single_person_pixel_errors_use_the_first_person_and_the_transform():
    gt = {"joints": np.array([[[10.0, 10.0], [20.0, 20.0], [0.0, 0.0]]]), "visible": np.array([[True, True, False]]),
          "persons": [np.zeros((2, 3, 3))], "person_area": [np.full(2, np.nan)],
          "transform": np.array([[0.5, 0.0, 0.0, 0.0, 0.5, 0.0]])}  # source = half the sample's pixels
    pred = np.array([[[16.0, 18.0, 0.7], [20.0, 20.0, 0.2], [np.nan, np.nan, np.nan]]])  # 6-8-10 in sample px
    summary, rows = pixel_errors(pred, None, gt, _cfg(), pcutoff=0.6)
    assert summary["mean"] == pytest.approx(2.5) and summary["mean_above_pcutoff"] == pytest.approx(5.0)
    assert summary["kept"] == 0.5 and summary["per_group"] == pytest.approx({"a": 5.0, "bc": 0.0})
    assert "persons" not in summary and [r["index"] for r in rows] == [0]


def test_pcutoff_and_splits_are_checked():
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(UserError, match="between 0 and 1"):
            check_pcutoff(bad)
    check_pcutoff(0.0)
    check_pcutoff(1.0)
    with pytest.raises(UserError, match="pcutoff"):
        config_mod.load(None, pcutoff=2.0)
    assert parse_splits("train, test,train") == ["train", "test"]
    with pytest.raises(UserError, match="commas"):
        parse_splits("train,,test")


def test_error_image_draws_labels_predictions_and_faded_ones():
    image = np.zeros((50, 100, 3), np.uint8)
    gt = np.array([[[20.0, 20.0, 2], [70.0, 30.0, 2]]])
    pred = np.array([[[30.0, 20.0, 0.9], [70.0, 40.0, 0.1]]])
    out = plots.error_image(image, gt, pred, np.array([0]), pcutoff=0.6)
    assert out.shape == (200, 400, 3)  # enlarged x4 to MIN_SIDE, no title band
    s = 4.0
    px = lambda x, y: out[int(round((y + 0.5) * s - 0.5)), int(round((x + 0.5) * s - 0.5))]  # noqa: E731
    trusted, faded = px(30, 20), px(70, 40)
    assert trusted[1] > 200 and trusted[0] < 60  # score 0.9: green, drawn fully
    assert 0 < faded[0] < 255 * plots.FADED + 2 and faded[1] < 40  # score 0.1: red, blended at FADED opacity
    assert px(20, 20).min() > 200  # the labelled joint: a white cross
    line = px(25, 20)  # the (antialiased) line between the pair: cyan
    assert line[0] < 30 and line[1] > 200 and line[1] == line[2]
    titled = plots.error_image(image, gt, pred, np.array([-1]), title="x")
    assert titled.shape[0] > out.shape[0]


def test_summary_image_size_and_bars():
    splits = {"train": {"per_joint": [1.0, 2.0, np.nan], "errors": np.array([0.5, 1.5, 2.0]), "mean": 1.33},
              "test": {"per_joint": [4.0, 2.0, 3.0], "errors": np.array([4.0, 2.0, 3.0]), "mean": 3.0}}
    img = plots.summary_image(splits, ["a", "b", "c"])
    assert img.shape == (520, 1200, 3) and img.dtype == np.uint8
    colours = {tuple(c) for c in img.reshape(-1, 3)[::7]}
    assert tuple(plots.SPLIT_COLOURS[0]) in colours and tuple(plots.SPLIT_COLOURS[1]) in colours


def test_eval_command_rejects_a_bad_pcutoff_and_a_file_as_plot_folder(tmp_path):
    """Both are caught before any snapshot is read (the snapshot named here does not exist)."""
    missing = str(tmp_path / "snapshot-1.pt")
    res = CliRunner().invoke(app, ["eval", "--checkpoint", missing, "--pcutoff", "1.5"])
    assert isinstance(res.exception, UserError) and "--pcutoff 1.5: must be between 0 and 1" in str(res.exception)
    (tmp_path / "taken").write_text("x")
    res = CliRunner().invoke(app, ["eval", "--checkpoint", missing, "--plot", str(tmp_path / "taken")])
    assert isinstance(res.exception, UserError)
    assert "--plot" in str(res.exception) and "is a file, not a folder" in str(res.exception)
    res = CliRunner().invoke(app, ["eval", "--checkpoint", missing, "--split", "test", "--splits", "train"])
    assert isinstance(res.exception, UserError) and "give one of them" in str(res.exception)
