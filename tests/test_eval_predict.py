"""`fastpose eval` and `fastpose predict` end to end on a tiny shards set and a tiny random resnet_18 snapshot."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

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
from fastpose.draw import draw_persons, draw_pose
from fastpose.errors import UserError
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



def test_eval_set_without_a_config_applies_to_the_snapshots(shards, snapshot, tmp_path):
    """`eval --checkpoint S --set k=v` (no config file): the override changes the run (it was silently dropped)."""
    joints = {}
    for name, extra in [("saved", []), ("set", ["--set", "global_scale=0.5"])]:
        res = CliRunner().invoke(app, ["eval", "--checkpoint", str(snapshot), "--splits", "test",
                                       "--out", str(tmp_path / name), "--device", "cpu", *extra])
        assert res.exit_code == 0, res.output
        doc = json.loads((tmp_path / name / "predictions.json").read_text())
        joints[name] = np.array([s["joints"] for s in doc["samples"]])  # (N, K, 3)
    assert joints["set"].shape == joints["saved"].shape and np.abs(joints["set"] - joints["saved"]).max() > 0.5
    res = CliRunner().invoke(app, ["eval", "--checkpoint", str(snapshot), "--set", "global_scal=0.5"])
    assert isinstance(res.exception, UserError) and "'global_scal'. Did you mean 'global_scale'" in str(res.exception)

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
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"empty is a folder without images \(\.png, \.jpg, .*\)\. Pass image files, a "
                                        r"folder of images or a glob"):
        expand_inputs([str(tmp_path / "empty")])


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



def test_choose_engine_by_suffix_and_request(tmp_path):
    assert predict_mod.choose_engine(None, "run/snapshot-3.pt") == "torch"
    assert predict_mod.choose_engine(None, tmp_path / "m.onnx") == "onnxruntime"
    assert predict_mod.choose_engine(None, "m.ONNX.pt") == "torch"  # the suffix decides, not the name
    assert predict_mod.choose_engine("onnxruntime", "snapshot-3.pt") == "onnxruntime"  # exported beside it
    assert predict_mod.choose_engine("torch", "snapshot-3.pt") == "torch"
    with pytest.raises(predict_mod.UserError, match=r"--engine 'tensorrt' is not an engine: use one of torch, "
                                                   r"onnxruntime\."):
        predict_mod.choose_engine("tensorrt", "snapshot-3.pt")
    with pytest.raises(predict_mod.UserError, match=r"--engine torch cannot run m\.onnx, an ONNX file"):
        predict_mod.choose_engine("torch", "m.onnx")


def test_unique_stems_prefix_the_folder_then_number():
    paths = [Path("a/x.png"), Path("b/x.jpg"), Path("c/y.png")]
    assert predict_mod._unique_stems(paths) == ["a_x", "b_x", "y"]
    # a_x is taken by the first two (same folder, same stem), then by q/a_x.png itself: numbered from 2.
    paths = [Path("a/x.png"), Path("a/x.jpg"), Path("q/a_x.png"), Path("r/z.png")]
    assert predict_mod._unique_stems(paths) == ["a_x", "a_x_2", "a_x_3", "z"]


def test_all_persons_assembles_each_image_with_its_own_geometry(monkeypatch):
    calls = []

    def record(heads, b, valid_hw, ratio, targets, scale, cfg, assembly):
        assert heads is given
        calls.append((b, valid_hw.tolist(), ratio.tolist(), targets, scale, cfg, assembly))
        return f"persons {b}"

    monkeypatch.setattr(predict_mod, "assemble_persons", record)
    valid_hw = torch.tensor([[32, 56], [53, 47]])  # (B, 2) resized h, w
    ratio = torch.tensor([[0.75, 0.25], [0.5, 1.0]])  # (B, 2) x, y
    given = {"part": None}
    out = predict_mod.all_persons(given, valid_hw, ratio, "cfg", {"w": 1})
    assert out == ["persons 0", "persons 1"]
    assert calls == [(0, [32, 56], [0.75, 0.25], None, 0.5, "cfg", {"w": 1}),
                     (1, [53, 47], [0.5, 1.0], None, 0.75, "cfg", {"w": 1})]  # scale: the mean of x, y ratios


class _ShapeRunner:
    """OnnxModel's interface: each call records its batch; joints (n, K, 3) = (image mean, batch size, call index)."""

    outputs = ["joints", "part", "valid_hw", "ratio"]

    def __init__(self):
        self.batches = []

    def run(self, images):
        self.batches.append(images.shape)
        n = len(images)
        joints = np.zeros((n, K, 3), np.float32)
        joints[..., 0] = images.reshape(n, -1).mean(1)[:, None]
        joints[..., 1] = n
        joints[..., 2] = len(self.batches) - 1
        return {"joints": joints, "part": np.full((n, K, 2, 2), float(len(self.batches)), np.float32),
                "valid_hw": np.full((n, 2), 8, np.int64), "ratio": np.full((n, 2), 0.5, np.float32)}


def test_onnx_batch_runs_each_run_of_equal_sizes_together(monkeypatch):
    images = [np.full((4, 6, 3), v, np.uint8) for v in (10, 20)] + [np.full((6, 4, 3), 30, np.uint8),
                                                                    np.full((4, 6, 3), 40, np.uint8)]
    runner = _ShapeRunner()
    joints, persons = predict_mod.onnx_batch(runner, images, "cfg", None, False)
    assert runner.batches == [(2, 4, 6, 3), (1, 6, 4, 3), (1, 4, 6, 3)]  # only neighbours are batched
    assert joints.dtype == np.float64 and joints.shape == (4, K, 3)
    np.testing.assert_array_equal(joints[:, 0], [[10, 2, 0], [20, 2, 0], [30, 1, 1], [40, 1, 2]])
    assert persons == [None] * 4

    seen = []

    def persons_of(heads, valid_hw, ratio, cfg, assembly):
        seen.append((sorted(heads), heads["part"].flatten()[0].item(), heads["locref"], valid_hw.tolist(),
                     ratio.tolist(), cfg, assembly))
        return [f"image of call {len(seen)}"] * len(valid_hw)

    monkeypatch.setattr(predict_mod, "all_persons", persons_of)
    runner = _ShapeRunner()
    joints, persons = predict_mod.onnx_batch(runner, images, "cfg", {"w": 1}, True)
    assert persons == ["image of call 1"] * 2 + ["image of call 2", "image of call 3"]
    assert seen[0] == (["locref", "pairwise", "part"], 1.0, None, [[8, 8]] * 2, [[0.5, 0.5]] * 2, "cfg", {"w": 1})
    assert [s[1] for s in seen] == [1.0, 2.0, 3.0]


# predict() end to end with PeakModel (its joints are PREDICT_JOINTS, each score sigmoid(3)): batching, bad inputs,
# the JSON documents and drawings, the multi-person choice and the ONNX Runtime engine, each stage's inputs recorded.
SIGMOID3 = 0.9525741268


class _CountingPeakModel(PeakModel):
    def __init__(self, fail: Exception | None = None):
        super().__init__()
        self.batches, self.fail = [], fail

    def forward(self, images):
        self.batches.append(images.shape[0])
        if self.fail is not None:
            raise self.fail
        return super().forward(images)


def _images(folder, kinds):
    """Write one file per kind ("bad": undecodable bytes; 0 / 1: a PNG of PREDICT_SIZES[kind]); their paths."""
    folder.mkdir(exist_ok=True)
    paths = []
    for i, kind in enumerate(kinds):
        path = folder / f"i{i}.png"
        path.write_bytes(b"not an image" if kind == "bad" else _png(*PREDICT_SIZES[kind], 30 + i))
        paths.append(path)
    return paths


@pytest.fixture
def fake_load(shards, monkeypatch):
    """load_model -> (a _CountingPeakModel, the test config); returns (model, cfg, the calls' arguments)."""
    model, cfg, calls = _CountingPeakModel(), _cfg(shards), []

    def load(checkpoint, device, given):
        calls.append((checkpoint, device, given))
        return model, cfg

    monkeypatch.setattr(predict_mod, "load_model", load)
    return model, cfg, calls


def _joints_doc(xys, scores, names=NAMES):
    return [{"name": n, "x": x, "y": y, "score": s} for n, (x, y), s in zip(names, xys, scores)]


def test_predict_batches_and_documents(fake_load, tmp_path):
    model, cfg, calls = fake_load
    kinds = [i % 2 for i in range(9)]
    paths = _images(tmp_path / "imgs", kinds)
    docs = predict_mod.predict("s.pt", [str(tmp_path / "imgs")], tmp_path / "out", cfg=cfg, multi_person=False)
    assert model.batches == [8, 1]  # the default batch size
    assert calls == [("s.pt", torch.device("cpu"), cfg)]  # the default device is auto: the CPU here
    assert len(docs) == 9
    for path, kind, doc in zip(paths, kinds, docs):
        h, w = PREDICT_SIZES[kind]
        assert json.loads((tmp_path / "out" / f"{path.stem}.json").read_text()) == doc
        assert {k: doc[k] for k in ("image", "width", "height", "frame")} == {
            "image": str(path), "width": w, "height": h,
            "frame": "image pixels, 0-based, pixel centres at integer coordinates"}
        assert [j["name"] for j in doc["joints"]] == NAMES
        np.testing.assert_allclose([[j["x"], j["y"], j["score"]] for j in doc["joints"]],
                                   np.c_[PREDICT_JOINTS[kind], [SIGMOID3] * K], atol=1e-4)
    # min_score 0 by default: every joint drawn; 0.96 > sigmoid(3) hides them all (the image as it was)
    assert (tmp_path / "out" / "i0.json").read_text().startswith('{\n "image": ')  # indented by one space
    source = cv2.imread(str(paths[0]))
    drawn = cv2.imread(str(tmp_path / "out" / "i0.png"))
    assert drawn.shape == source.shape and (drawn != source).any()
    pose = np.array([[j["x"], j["y"], j["score"]] for j in docs[0]["joints"]])
    skeleton = draw_pose(source[..., ::-1], pose[:, :2], pose[:, 2], cfg.skeleton)[..., ::-1]  # the edges too
    np.testing.assert_array_equal(drawn, skeleton)
    assert (draw_pose(source[..., ::-1], pose[:, :2], pose[:, 2])[..., ::-1] != drawn).any()
    predict_mod.predict("s.pt", [str(paths[0])], tmp_path / "hidden", cfg=cfg, multi_person=False, min_score=0.96)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "hidden" / "i0.png")), source)
    model.batches.clear()
    assert len(predict_mod.predict("s.pt", [str(paths[0]), str(paths[1])], tmp_path / "one", batch_size=1,
                                   multi_person=False)) == 2
    assert model.batches == [1, 1]
    with pytest.raises(predict_mod.UserError, match=r"^--batch-size must be positive, got 0\.$"):
        predict_mod.predict("s.pt", [str(paths[0])], tmp_path / "zero", batch_size=0)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(predict_mod.UserError, match=r"^--out .*afile: .*afile is a file, not a folder"):
        predict_mod.predict("s.pt", [str(paths[0])], tmp_path / "afile", multi_person=False)


def test_predict_unnamed_joints(fake_load, tmp_path, monkeypatch):
    model, cfg, _ = fake_load
    monkeypatch.setattr(predict_mod, "load_model", lambda *_: (model, dataclasses.replace(cfg, joint_names=[])))
    docs = predict_mod.predict("s.pt", [str(_images(tmp_path / "imgs", [0])[0])], tmp_path / "out",
                               multi_person=False)
    assert [j["name"] for j in docs[0]["joints"]] == ["joint0", "joint1", "joint2"]


def test_predict_bad_inputs_stop_or_are_skipped(fake_load, tmp_path):
    model, cfg, _ = fake_load
    good0, good1, good2, bad = _images(tmp_path / "imgs", [0, 1, 0, "bad"])
    out = tmp_path / "out"
    decode = " could not be decoded as an image. Pass PNG/JPEG files, or remove this one. Or pass --skip-bad"
    with pytest.raises(predict_mod.UserError) as info:
        predict_mod.predict("s.pt", [str(p) for p in (good0, good1, good2, bad)], out, batch_size=2)
    assert str(info.value).startswith(f"{bad} (input 4 of 4; the outputs of the 2 before its batch are in {out})"
                                      f"{decode}")
    assert sorted(p.name for p in out.iterdir()) == ["i0.json", "i0.png", "i1.json", "i1.png"]
    with pytest.raises(predict_mod.UserError) as info:
        predict_mod.predict("s.pt", [str(good0), str(bad)], out, batch_size=2)
    assert str(info.value).startswith(f"{bad} (input 2 of 2){decode}")
    # skipped: a first batch of nothing but bad files, then a bad file between two good ones
    more = _images(tmp_path / "more", ["bad", "bad", "bad", 0, "bad", 1])
    skipped = []
    model.batches.clear()
    docs = predict_mod.predict("s.pt", [str(p) for p in more], tmp_path / "o2", batch_size=3, skip_bad=True,
                               skipped=skipped, multi_person=False)
    assert [d["image"] for d in docs] == [str(more[3]), str(more[5])] and model.batches == [2]
    assert [s[0] for s in skipped] == [str(more[i]) for i in (0, 1, 2, 4)]
    assert skipped[1][1] == f"{more[1]} (input 2 of 6) could not be decoded as an image. Pass PNG/JPEG files, or " \
                            f"remove this one."
    assert skipped[3][1].startswith(f"{more[4]} (input 5 of 6; the outputs of the 3 before its batch are in ")
    docs = predict_mod.predict("s.pt", [str(p) for p in more], tmp_path / "o3", skip_bad=True, multi_person=False)
    assert len(docs) == 2  # no list to append the skipped ones to: still fine


def test_predict_out_of_memory_names_the_batch(shards, tmp_path, monkeypatch):
    cfg = _cfg(shards)
    model = _CountingPeakModel(fail=torch.OutOfMemoryError("CUDA out of memory"))
    monkeypatch.setattr(predict_mod, "load_model", lambda *_: (model, cfg))
    first, second = _images(tmp_path / "imgs", [0, 1])
    with pytest.raises(predict_mod.UserError) as info:
        predict_mod.predict("s.pt", [str(first), str(second)], tmp_path / "out", batch_size=2, multi_person=False)
    assert str(info.value) == (f"Out of GPU memory predicting {first} and the 1 images after it (batch size 2; the "
                               f"largest image is 71 x 67 before scaling). Pass a smaller --batch-size, or --device "
                               f"cpu.")


# One person per image from the fake assembly: its joint 1 lacks (score 0), drawn only above min_score 1e-6.
PERSON = np.array([[[10.0, 12.0, 0.9], [20.0, 22.0, 0.0], [30.0, 32.0, 0.7]]])


@pytest.fixture
def fake_assembly(monkeypatch):
    """classifier_for -> the (classifier, note) a test sets; all_persons -> PERSON per image. Records both calls."""
    rec = {"answer": ({"w": 1}, None), "classifier": [], "persons": []}

    def classifier_for(cfg, checkpoint):
        rec["classifier"].append((cfg, checkpoint))
        return rec["answer"]

    def all_persons(heads, valid_hw, ratio, cfg, assembly):
        rec["persons"].append((heads, valid_hw, ratio, cfg, assembly))
        return [PERSON] * len(valid_hw)

    monkeypatch.setattr(predict_mod, "classifier_for", classifier_for)
    monkeypatch.setattr(predict_mod, "all_persons", all_persons)
    return rec


@pytest.mark.parametrize("asked, change, note, assembled", [
    (None, {}, None, False),  # automatic: on only for a pairwise head or COCO-type data
    (None, {"pairwise_predict": True}, None, True),
    (None, {"dataset_type": "coco"}, None, True),
    (True, {}, None, True),
    (None, {"pairwise_predict": True}, "no statistics", False),  # automatic and no classifier: single person
    (False, {"pairwise_predict": True}, None, False),
])
def test_predict_multi_person_choice(fake_load, fake_assembly, tmp_path, monkeypatch, asked, change, note, assembled):
    model, cfg, _ = fake_load
    cfg = dataclasses.replace(cfg, **change)
    monkeypatch.setattr(predict_mod, "load_model", lambda *_: (model, cfg))
    fake_assembly["answer"] = ({"w": 1}, note)
    image = _images(tmp_path / "imgs", [0])[0]
    doc = predict_mod.predict("s.pt", [str(image)], tmp_path / "out", multi_person=asked)[0]
    assert fake_assembly["classifier"] == ([] if asked is False else [(cfg, "s.pt")])
    np.testing.assert_allclose([[j["x"], j["y"]] for j in doc["joints"]], PREDICT_JOINTS[0], atol=1e-4)
    drawn = cv2.cvtColor(cv2.imread(str(tmp_path / "out" / "i0.png")), cv2.COLOR_BGR2RGB)
    if not assembled:
        assert "persons" not in doc and fake_assembly["persons"] == []
        return
    assert doc["persons"] == [_joints_doc(PERSON[0, :, :2], PERSON[0, :, 2])]
    ((heads, valid_hw, ratio, got_cfg, assembly),) = fake_assembly["persons"]
    assert got_cfg is cfg and assembly == {"w": 1}
    assert heads["part"].shape == (1, K, 4, 8) and heads["part"][0, 2, 3, 5] == 3.0  # PeakModel's output
    assert valid_hw.tolist() == [[32, 56]] and ratio.tolist()[0] == pytest.approx([56 / 71, 32 / 41])
    source = cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(drawn, draw_persons(source, PERSON, cfg.skeleton, min_score=1e-6))
    assert (draw_persons(source, PERSON, cfg.skeleton, min_score=0.0) != drawn).any()  # joint 1 would show


def test_predict_multi_person_without_classifier_is_a_user_error(fake_load, fake_assembly, tmp_path):
    fake_assembly["answer"] = (None, "no statistics")
    with pytest.raises(predict_mod.UserError, match=r"^--multi-person: no statistics\.$"):
        predict_mod.predict("s.pt", [str(_images(tmp_path / "imgs", [0])[0])], tmp_path / "out", multi_person=True)


class _FakeOnnx:
    """OnnxModel's interface; an export for multi-person (its name says) has the pairwise output. joints (n, K, 3):
    x = the image's width, y = its height, score 0.5."""

    made: list = []
    config_values: dict = {}

    def __init__(self, path, device):
        assert device == torch.device("cpu")
        self.path, self.calls = Path(path), 0
        self.outputs = ["joints", "part", "locref", "valid_hw", "ratio"] + (["pairwise"] if "multi" in str(path)
                                                                            else [])
        _FakeOnnx.made.append(self)

    def run(self, images):
        self.calls += 1
        n, h, w = images.shape[:3]
        joints = np.zeros((n, K, 3), np.float32)
        joints[..., 0], joints[..., 1], joints[..., 2] = w, h, 0.5
        return {"joints": joints, "part": np.zeros((n, K, 2, 2), np.float32), "valid_hw": np.full((n, 2), 8),
                "ratio": np.ones((n, 2), np.float32), "pairwise": np.zeros((n, 2 * K * (K - 1), 2, 2), np.float32)}


@pytest.fixture
def fake_onnx(shards, monkeypatch):
    """onnx_for -> `<checkpoint>.single.onnx` or `.multi.onnx` (calls recorded), OnnxModel -> _FakeOnnx carrying the
    test config with joint names a, b, c."""
    exports = []

    def onnx_for(checkpoint, *, multi_person=False):
        exports.append((checkpoint, multi_person))
        return Path(f"{checkpoint}.{'multi' if multi_person else 'single'}.onnx")

    monkeypatch.setattr(predict_mod, "onnx_for", onnx_for)
    monkeypatch.setattr(predict_mod, "OnnxModel", _FakeOnnx)
    monkeypatch.setattr(_FakeOnnx, "made", [])
    monkeypatch.setattr(_FakeOnnx, "config_values", {**_cfg(shards).to_dict(), "joint_names": ["a", "b", "c"]})
    return exports


def test_predict_engine_onnxruntime(fake_onnx, fake_assembly, shards, tmp_path):
    image = _images(tmp_path / "imgs", [1])[0]
    docs = predict_mod.predict("s.pt", [str(image)], tmp_path / "out", engine="onnxruntime", device="cpu",
                               multi_person=False)
    assert fake_onnx == [("s.pt", False)]
    assert [(m.path, m.calls) for m in _FakeOnnx.made] == [(Path("s.pt.single.onnx"), 1)]
    assert docs[0]["joints"] == _joints_doc([(59, 67)] * K, [0.5] * K, ["a", "b", "c"])  # the file's config
    cfg = _cfg(shards)
    docs = predict_mod.predict("m.onnx", [str(image)], tmp_path / "out", cfg=cfg, multi_person=False)
    assert fake_onnx[1] == ("m.onnx", False) and docs[0]["joints"][0]["name"] == "head"  # the given config
    # asked for multi-person: exported with the pairwise outputs, assembled with the classifier
    fake_onnx.clear()
    docs = predict_mod.predict("s.pt", [str(image)], tmp_path / "out", engine="onnxruntime", multi_person=True)
    assert fake_onnx == [("s.pt", True)] and _FakeOnnx.made[-1].calls == 1
    assert docs[0]["persons"] == [_joints_doc(PERSON[0, :, :2], PERSON[0, :, 2], ["a", "b", "c"])]
    ((heads, valid_hw, ratio, got_cfg, assembly),) = fake_assembly["persons"][-1:]
    assert sorted(heads) == ["locref", "pairwise", "part"] and heads["pairwise"] is not None
    assert valid_hw.tolist() == [[8, 8]] and got_cfg.joint_names == ["a", "b", "c"] and assembly == {"w": 1}
    # automatic multi-person (a pairwise head) on a single-person export: exported again with the pairwise outputs
    fake_onnx.clear()
    _FakeOnnx.made.clear()
    pairwise = dataclasses.replace(cfg, pairwise_predict=True)
    docs = predict_mod.predict("s.pt", [str(image)], tmp_path / "out", cfg=pairwise, engine="onnxruntime")
    assert fake_onnx == [("s.pt", False), ("s.pt", True)]
    assert [(m.path, m.calls) for m in _FakeOnnx.made] == [(Path("s.pt.single.onnx"), 0), (Path("s.pt.multi.onnx"), 1)]
    assert "persons" in docs[0]
    with pytest.raises(predict_mod.UserError, match=r"^m\.onnx was exported without --multi-person, so it lacks the "
                                                   r"pairwise offsets"):
        predict_mod.predict("m.onnx", [str(image)], tmp_path / "out", cfg=pairwise)


def test_single_joints_refines_within_the_image_and_maps_back():
    part = torch.zeros(1, 1, 4, 4)  # (B, K, H, W): the best cell inside a 16 x 16 image, a higher one in the padding
    part[0, 0, 1, 1], part[0, 0, 3, 3] = 2.0, 5.0
    locref = torch.zeros(1, 2, 4, 4)  # (B, 2K, H, W) dx, dy in units of locref_stdev
    locref[0, :, 1, 1] = torch.tensor([0.5, -0.25])
    cfg = _cfg_values(stride=8, locref_stdev=7.2801)
    joints = predict_mod.single_joints({"part": part, "locref": locref}, torch.tensor([[16, 16]]),
                                       torch.tensor([[0.5, 0.25]]), cfg)
    # network pixels: x = 1 * 8 + 4 + 0.5 * 7.2801 = 15.64005, y = 12 - 0.25 * 7.2801 = 10.179975; image pixels:
    # (x + 0.5) / 0.5 - 0.5 = 31.7801, (y + 0.5) / 0.25 - 0.5 = 42.2199; score sigmoid(2)
    assert joints.dtype == np.float64
    np.testing.assert_allclose(joints, [[[31.7801, 42.2199, 0.8807970780]]], rtol=1e-6)


def _cfg_values(**values):
    """A stand-in config with just the fields a function reads."""
    return type("Cfg", (), values)()


def test_predict_reports_a_drawing_opencv_cannot_encode(fake_load, tmp_path, monkeypatch):
    image = _images(tmp_path / "imgs", [0])[0]
    monkeypatch.setattr(cv2, "imencode", lambda ext, img: (False, None))
    with pytest.raises(RuntimeError, match=rf"^OpenCV could not encode the drawing of {image} as PNG$"):
        predict_mod.predict("s.pt", [str(image)], tmp_path / "out", multi_person=False)
