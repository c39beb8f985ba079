"""`fastpose eval` and `fastpose predict` end to end on a tiny shards set and a tiny random resnet_18 snapshot."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import scipy.io
import torch
from typer.testing import CliRunner

from fastpose import config as config_mod
from fastpose import predict as predict_mod
from fastpose.checkpoint import save_snapshot
from fastpose.cli import app
from fastpose.draw import draw_pose
from fastpose.evaluate import evaluate, ground_truth, score
from fastpose.model import build_model
from fastpose.predict import expand_inputs, predict_images
from fastpose.shards import Sample, ShardDataset, ShardWriter

K = 3
NAMES = ["head", "l_hand", "r_hand"]
SIZES = [(96, 80), (70, 120), (64, 64), (100, 90), (81, 77)]  # (H, W) of the test samples


def _png(h: int, w: int, seed: int) -> bytes:
    img = np.random.default_rng(seed).integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".png", img)
    assert ok
    return data.tobytes()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """5 test samples: 1-2 persons, head boxes on all but sample 1, sample 4 without a labelled joint."""
    root = tmp_path_factory.mktemp("eval") / "shards"
    rng = np.random.default_rng(0)
    with ShardWriter(root, K, NAMES, all_joints=[[0], [1, 2]], skeleton=[[0, 1], [0, 2]],
                     samples_per_shard=3) as writer:
        for i, (h, w) in enumerate(SIZES):
            persons = 2 if i == 2 else 1
            joints = np.zeros((persons, K, 3), np.float32)
            joints[..., 0] = rng.uniform(5, w - 5, (persons, K))
            joints[..., 1] = rng.uniform(5, h - 5, (persons, K))
            joints[..., 2] = 2
            joints[0, 1, 2] = 1 if i == 0 else 2  # occluded but labelled: still evaluated
            if i == 3:
                joints[0, 2] = 0  # an unlabelled joint
            if i == 4:
                joints[:] = 0
            head = np.tile(np.array([[10.0, 10.0, 22.0, 26.0]], np.float32), (persons, 1))
            if i == 1:
                head[:] = np.nan
            writer.add(Sample(image=_png(h, w, i), image_format="png", size=(3, h, w), joints=joints,
                              head_box=head, transform=(2.0, 0.0, 10.0, 0.0, 2.0, 20.0), source_path=f"img{i}.png"),
                       split="test")
        writer.add(Sample(image=_png(64, 64, 99), image_format="png", size=(3, 64, 64),
                          joints=np.full((1, K, 3), 2, np.float32)), split="train")
        writer.close()
    return root


def _cfg(shards, **extra):
    values = dict(dataset=str(shards), net_type="resnet_18", num_joints=K, joint_names=NAMES,
                  all_joints=[[0], [1, 2]], all_joints_names=["head", "hand"], skeleton=[[0, 1], [0, 2]],
                  location_refinement=True, batch_size=2, num_workers=1, num_threads=1, device="cpu",
                  precision="fp32", global_scale=0.8, seed=0)
    values.update(extra)
    return config_mod.load(None, **values)


@pytest.fixture(scope="module")
def snapshot(shards, tmp_path_factory):
    cfg = _cfg(shards)
    torch.manual_seed(0)
    model = build_model(cfg)
    return save_snapshot(tmp_path_factory.mktemp("run"), 1, model=model, optimizer=None, cfg=cfg, data_position={})


class PeakModel(torch.nn.Module):
    """Test double of PoseNet: joint k peaks at cell (row k + 1, col 2k + 1) with logit 3, no locref."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the model a device

    def forward(self, images):
        b, _, h, w = images.shape
        part = torch.full((b, K, 2 * -(-h // 16), 2 * -(-w // 16)), -3.0)
        for k in range(K):
            part[:, k, k + 1, 2 * k + 1] = 3.0
        return {"part": part, "locref": None, "intermediate": None, "pairwise": None}


def test_eval_inverts_the_pipeline_scale_exactly(shards):
    cfg = _cfg(shards)
    result = evaluate(cfg, PeakModel(), "test")
    pred = result["predictions"]  # (N, K, 3) in sample pixels
    assert pred.shape == (len(SIZES), K, 3)
    for i, (h, w) in enumerate(SIZES):
        rw, rh = np.floor(w * 0.8) / w, np.floor(h * 0.8) / h  # the pipeline's real resize ratios
        for k in range(K):
            x_net, y_net = (2 * k + 1) * 8 + 4, (k + 1) * 8 + 4
            np.testing.assert_allclose(pred[i, k, :2], [(x_net + 0.5) / rw - 0.5, (y_net + 0.5) / rh - 0.5],
                                       atol=1e-3)
    np.testing.assert_allclose(pred[..., 2], 1 / (1 + np.exp(-3.0)), rtol=1e-6)
    # source_predictions go through the shards' transform x_src = 2 x + 10, y_src = 2 y + 20.
    np.testing.assert_allclose(result["source_predictions"][..., 0], 2 * pred[..., 0] + 10, rtol=1e-5)
    np.testing.assert_allclose(result["source_predictions"][..., 1], 2 * pred[..., 1] + 20, rtol=1e-5)
    assert result["metrics"]["samples"] == 4  # sample 4 has no labelled joint


def test_score_perfect_and_known(shards):
    cfg = _cfg(shards)
    ds = ShardDataset(shards, "test")
    gt = ground_truth(ds)
    assert gt["visible"].sum() == 3 * 4 - 1  # sample 3 lacks one joint, sample 4 all; person 2 of sample 2 unused
    perfect = np.concatenate([gt["joints"], np.ones((len(SIZES), K, 1))], axis=2)
    out = score(perfect, gt, cfg, 0.2, 0.5)
    assert out["pck"]["mean"] == 1.0 and out["pckh"]["mean"] == 1.0
    assert out["pck"]["per_joint"] == {"head": 1.0, "l_hand": 1.0, "r_hand": 1.0}
    assert out["pckh"]["samples"] == 3  # samples 0, 2, 3: sample 1 has no head box, sample 4 no joints
    # Head box 12 x 16 -> head size 0.6 * 20 = 12: an error of 6 is not < 0.5 * 12, an error of 5.9 is.
    shifted = perfect.copy()
    shifted[:, 0, 0] += 6.0
    shifted[:, 1, 1] += 5.9
    out = score(shifted, gt, cfg, 0.2, 0.5)
    assert out["pckh"]["per_joint"]["head"] == 0.0 and out["pckh"]["per_joint"]["l_hand"] == 1.0
    assert out["pckh"]["per_group"]["hand"] == 1.0
    ds.close()


def test_eval_command_writes_documented_json(shards, snapshot, tmp_path):
    out_json = tmp_path / "metrics.json"
    res = CliRunner().invoke(app, ["eval", "--checkpoint", str(snapshot), "--split", "test", "--json", str(out_json),
                                   "--out", str(tmp_path / "ev"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    doc = json.loads(out_json.read_text())
    assert set(doc) >= {"pck", "pckh", "samples"}
    assert doc["samples"] == 4
    assert doc["pck"]["threshold"] == 0.2 and set(doc["pck"]["per_joint"]) == set(NAMES)
    assert doc["pckh"]["threshold"] == 0.5 and set(doc["pckh"]["per_joint"]) == set(NAMES)
    # The means, derived from the written predictions and the samples' labels by the definitions (PCK@0.2: error <=
    # 0.2 max side of the labelled joints' box; PCKh@0.5: error < 0.5 * 0.6 * the 12 x 16 head box's diagonal 20).
    pred = np.array([s["joints"] for s in json.loads((tmp_path / "ev" / "predictions.json").read_text())["samples"]])
    ds = ShardDataset(shards, "test")
    hits = counted = hits_h = counted_h = 0
    for i in range(len(SIZES)):
        gt = ds.joints(i)[0]  # (K, 3): the first person is the one evaluated
        vis = gt[:, 2] > 0
        if not vis.any():
            continue
        err = np.hypot(*(pred[i, :, :2] - gt[:, :2]).T)  # (K,)
        side = (gt[vis, :2].max(0) - gt[vis, :2].min(0)).max()
        hits, counted = hits + int((err[vis] <= 0.2 * side).sum()), counted + int(vis.sum())
        if i != 1:  # sample 1 has no head box
            hits_h, counted_h = hits_h + int((err[vis] < 0.5 * 0.6 * 20.0).sum()), counted_h + int(vis.sum())
    ds.close()
    assert (counted, counted_h, hits, hits_h) == (11, 8, 1, 0)  # the untrained net is right once
    assert doc["pck"]["mean"] == pytest.approx(hits / counted)
    assert doc["pckh"]["mean"] == pytest.approx(hits_h / counted_h)
    mat = scipy.io.loadmat(tmp_path / "ev" / "predictions.mat")
    assert mat["joints"].shape[1] == len(SIZES) or mat["joints"].shape[0] == len(SIZES)
    assert mat["joints"].ravel()[0].shape == (K, 3)
    preds = json.loads((tmp_path / "ev" / "predictions.json").read_text())
    assert len(preds["samples"]) == len(SIZES) and len(preds["samples"][0]["joints"]) == K
    assert "PCK" in res.output


def test_eval_missing_snapshot_is_a_user_error(tmp_path):
    res = CliRunner().invoke(app, ["eval", "--checkpoint", str(tmp_path / "nope.pt")])
    assert res.exit_code != 0
    assert "does not exist" in str(res.exception) + res.output


def test_predict_writes_png_and_json(snapshot, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, (h, w) in enumerate([(90, 70), (50, 130)]):
        (folder / f"p{i}.png").write_bytes(_png(h, w, 10 + i))
    res = CliRunner().invoke(app, ["predict", "--checkpoint", str(snapshot), str(folder), "--out",
                                   str(tmp_path / "out"), "--device", "cpu", "--batch-size", "2"])
    assert res.exit_code == 0, res.output
    for i, (h, w) in enumerate([(90, 70), (50, 130)]):
        doc = json.loads((tmp_path / "out" / f"p{i}.json").read_text())
        assert [j["name"] for j in doc["joints"]] == NAMES
        assert (doc["width"], doc["height"]) == (w, h)
        for j in doc["joints"]:
            assert 0.0 < j["score"] < 1.0
            assert -0.5 <= j["x"] <= w - 0.5 + 8 and -0.5 <= j["y"] <= h - 0.5 + 8  # a cell centre in the image
        png = cv2.imread(str(tmp_path / "out" / f"p{i}.png"))
        assert png is not None and png.shape == (h, w, 3)


# Two odd-sized images whose x and y resize ratios differ (global_scale 0.8 -> floor(W 0.8) x floor(H 0.8)), and
# PeakModel's joints mapped back by hand: x = (x_net + 0.5) * W / floor(0.8 W) - 0.5, likewise y.
PREDICT_SIZES = [(41, 71), (67, 59)]  # (H, W) -> network (32, 56), (53, 47)
PREDICT_JOINTS = [
    # k = 0: net (12, 12); k = 1: net (28, 20); k = 2: net (44, 28)
    [[12.5 * 71 / 56 - 0.5, 12.5 * 41 / 32 - 0.5], [28.5 * 71 / 56 - 0.5, 20.5 * 41 / 32 - 0.5],
     [44.5 * 71 / 56 - 0.5, 28.5 * 41 / 32 - 0.5]],
    [[12.5 * 59 / 47 - 0.5, 12.5 * 67 / 53 - 0.5], [28.5 * 59 / 47 - 0.5, 20.5 * 67 / 53 - 0.5],
     [44.5 * 59 / 47 - 0.5, 28.5 * 67 / 53 - 0.5]],
]


def test_predict_images_maps_joints_to_each_images_own_pixels(shards):
    expected = np.array(PREDICT_JOINTS)  # (2, K, 2)
    np.testing.assert_allclose(expected[0, 2], [55.919643, 36.015625], atol=1e-6)  # the formula, evaluated by hand
    images = [np.random.default_rng(i).integers(0, 255, (h, w, 3), dtype=np.uint8)
              for i, (h, w) in enumerate(PREDICT_SIZES)]
    out = predict_images(PeakModel(), _cfg(shards), images, torch.device("cpu"))  # one batch, padded to 64 x 64
    assert out.shape == (2, K, 3)
    np.testing.assert_allclose(out[..., :2], expected, atol=1e-4)
    np.testing.assert_allclose(out[..., 2], 0.9525741268, rtol=1e-6)  # sigmoid(3)
    for i, image in enumerate(images):  # alone in its batch: the same answer
        np.testing.assert_allclose(predict_images(PeakModel(), _cfg(shards), [image], torch.device("cpu"))[0],
                                   out[i], atol=1e-5)


def test_predict_json_holds_source_pixel_joints(shards, tmp_path, monkeypatch):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, (h, w) in enumerate(PREDICT_SIZES):
        (folder / f"p{i}.png").write_bytes(_png(h, w, 20 + i))
    cfg = _cfg(shards)
    monkeypatch.setattr(predict_mod, "load_model", lambda checkpoint, device, cfg_=None: (PeakModel(), cfg))
    docs = predict_mod.predict("unused.pt", [str(folder)], tmp_path / "out", batch_size=2, device="cpu",
                               multi_person=False)
    for i, (h, w) in enumerate(PREDICT_SIZES):
        doc = json.loads((tmp_path / "out" / f"p{i}.json").read_text())
        assert doc == docs[i] and (doc["width"], doc["height"]) == (w, h)
        got = [[j["x"], j["y"]] for j in doc["joints"]]
        np.testing.assert_allclose(got, PREDICT_JOINTS[i], atol=1e-4)
        assert [j["score"] for j in doc["joints"]] == pytest.approx([0.9525741268] * K, rel=1e-6)


def test_expand_inputs(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "b.png").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in expand_inputs([str(tmp_path)])] == ["a.jpg", "b.png"]
    assert [p.name for p in expand_inputs([str(tmp_path / "*.png"), str(tmp_path / "b.png")])] == ["b.png"]
    from fastpose.errors import UserError

    with pytest.raises(UserError, match="matched no files"):
        expand_inputs([str(tmp_path / "*.gif")])


def test_draw_pose_colours_and_min_score():
    img = np.zeros((40, 40, 3), np.uint8)
    joints = np.array([[10.0, 10.0], [30.0, 30.0], [10.0, 30.0]])
    drawn = draw_pose(img, joints, np.array([1.0, 0.0, 0.9]), [[0, 1], [0, 2]], min_score=0.5)
    assert img.sum() == 0  # the input is not modified
    centre0, centre1 = drawn[10, 10], drawn[30, 30]
    assert centre0[1] > 200 and centre0[0] < 60  # score 1: green
    assert centre1.sum() == 0  # score 0 < min_score: hidden, and so is edge 0-1
    assert drawn[20, 20].sum() == 0
    assert drawn[20, 10].sum() > 0  # edge 0-2 is drawn


def test_eval_pixel_error_is_in_source_pixels(shards):
    """PeakModel's predictions against the first persons, through the shards' transform (x 2 + (10, 20)): every
    source-pixel error is twice the sample-pixel one."""
    result = evaluate(_cfg(shards), PeakModel(), "test", pcutoff=0.5)
    gt = result["ground_truth"]
    d = np.linalg.norm(result["predictions"][..., :2] - gt["joints"], axis=2)  # (N, K) sample pixels
    px = result["metrics"]["pixel_error"]
    assert px["mean"] == pytest.approx(2 * d[gt["visible"]].mean(), rel=1e-5)
    assert px["per_joint"]["r_hand"] == pytest.approx(2 * d[gt["visible"][:, 2], 2].mean(), rel=1e-5)
    # Every score is sigmoid(3) = 0.95 >= 0.5: all kept, the same mean.
    assert px["kept"] == 1.0 and px["mean_above_pcutoff"] == pytest.approx(px["mean"])
    assert px["joints"] == 11 and px["pcutoff"] == 0.5
    assert evaluate(_cfg(shards), PeakModel(), "test", pcutoff=0.99)["metrics"]["pixel_error"]["kept"] == 0.0


def test_eval_command_pixel_errors_of_both_splits_and_plots(shards, snapshot, tmp_path):
    out_json, plot = tmp_path / "metrics.json", tmp_path / "plots"
    res = CliRunner().invoke(app, ["eval", "--checkpoint", str(snapshot), "--json", str(out_json), "--plot", str(plot),
                                   "--out", str(tmp_path / "ev"), "--device", "cpu", "--pcutoff", "0.3"])
    assert res.exit_code == 0, res.output
    doc = json.loads(out_json.read_text())
    assert doc["split"] == "test" and list(doc["splits"]) == ["test", "train"]  # the default: test, then train
    for split in ("test", "train"):
        px = doc["splits"][split]["pixel_error"]
        assert set(px) >= {"mean", "per_joint", "pcutoff", "mean_above_pcutoff", "kept"}
        assert px["pcutoff"] == 0.3 and set(px["per_joint"]) == set(NAMES) and px["mean"] > 0
    assert doc["pixel_error"] == doc["splits"]["test"]["pixel_error"]
    assert "test error:" in res.output and "train error:" in res.output and "error px" in res.output
    # One PNG per evaluated image (4 test samples have labelled joints, 1 train sample), worst first, + summary.
    pictures = sorted((plot / "test").glob("*.png"))
    assert len(pictures) == 4 and len(list((plot / "train").glob("*.png"))) == 1
    shown = [float(p.name.split("_")[1][:-2]) for p in pictures]
    assert shown == sorted(shown, reverse=True)
    rows = evaluate(None, snapshot, "test", device="cpu")["pixel_rows"]
    assert shown == pytest.approx(sorted((np.nanmean(r["errors"]) for r in rows), reverse=True), abs=0.051)
    for p in pictures:
        img = cv2.imread(str(p))
        assert img is not None and max(img.shape[:2]) >= 400
    summary = cv2.imread(str(plot / "summary.png"))
    assert summary is not None and summary.shape == (520, 1200, 3)
    # --splits picks the splits; the first one is the main one.
    res = CliRunner().invoke(app, ["eval", "--checkpoint", str(snapshot), "--json", str(out_json), "--splits",
                                   "train", "--out", str(tmp_path / "ev2"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    doc2 = json.loads(out_json.read_text())
    assert doc2["split"] == "train" and list(doc2["splits"]) == ["train"]
    assert doc2["pixel_error"]["mean"] == pytest.approx(doc["splits"]["train"]["pixel_error"]["mean"])

