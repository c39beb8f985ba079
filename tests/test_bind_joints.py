"""Every command that takes a config and a snapshot binds the joint set the same way (checkpoint.bind_snapshot_joints):
a config that leaves it open (as the README's DeepLabCut config does) gets the snapshot's, a config that sets it must
agree with the snapshot and with the dataset's manifest, and a disagreement is one paragraph with exit status 2.

Through the CLI (typer's CliRunner on fastpose.cli.app): eval, predict, bench and fit-assembly, on a tiny shards set of
two-person samples (K = 3) and a random resnet_18 snapshot with location refinement and a pairwise head.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fastpose import config as config_mod
from fastpose import dataset
from fastpose.checkpoint import bind_snapshot_joints, load_snapshot, save_snapshot
from fastpose.cli import app
from fastpose.errors import UserError
from fastpose.model import build_model
from fastpose.pairwise import write_stats
from fastpose.shards import Sample, ShardWriter

K = 3
NAMES = ["nose", "left_paw", "right_paw"]
GROUPS = [[0], [1, 2]]

# A DeepLabCut-like config: the joint set is left to the dataset (and, for eval/predict, to the snapshot).
OPEN_CFG = """\
dataset: {shards}
net_type: resnet_18
freeze_bn: false
global_scale: 1.0
pos_dist_thresh: 40
location_refinement: true
pairwise_predict: true
pairwise_stats_fn: {root}/pairwise_stats.npz
det_min_score: 0.0
nms_radius: 1.0
batch_size: 2
num_workers: 1
num_threads: 1
device: cpu
precision: fp32
seed: 0
out_dir: {root}/run
"""


def _png(h: int, w: int, seed: int) -> bytes:
    ok, data = cv2.imencode(".png", np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))
    assert ok
    return data.tobytes()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """(root, shards, snapshot): 4 train + 2 test samples of 64 x 80 with two persons each; a snapshot whose saved
    config was bound to that manifest, as `fastpose train` binds it."""
    root = tmp_path_factory.mktemp("bind")
    shards = root / "shards"
    rng = np.random.default_rng(0)
    with ShardWriter(shards, K, NAMES, all_joints=GROUPS, skeleton=[[0, 1], [0, 2]], samples_per_shard=4) as writer:
        for i in range(6):
            joints = np.zeros((2, K, 3), np.float32)  # (P, K, 3)
            joints[0, :, 0], joints[1, :, 0] = rng.uniform(5, 35, K), rng.uniform(45, 75, K)
            joints[..., 1] = rng.uniform(5, 59, (2, K))
            joints[..., 2] = 2
            writer.add(Sample(image=_png(64, 80, i), image_format="png", size=(3, 64, 80), joints=joints),
                       split="train" if i < 4 else "test")
        writer.close()
    (root / "open.yaml").write_text(OPEN_CFG.format(shards=shards, root=root))
    cfg, _ = dataset.bind_joints(config_mod.load(root / "open.yaml"), quiet=True)
    write_stats(cfg, quiet=True)
    torch.manual_seed(0)
    snapshot = save_snapshot(root / "run", 1, model=build_model(cfg), optimizer=None, cfg=cfg, data_position={})
    return root, shards, snapshot


def _config(root, name: str, extra: str = "") -> str:
    path = root / name
    path.write_text((root / "open.yaml").read_text() + extra)
    return str(path)


def _ok(res) -> None:
    assert res.exit_code == 0, res.output + repr(res.exception)


def _user_error(res, *needles: str) -> None:
    """Exit status 2 (fastpose.cli.main's handling of a UserError) and one paragraph naming every needle."""
    assert isinstance(res.exception, UserError), repr(res.exception)
    text = str(res.exception)
    assert "\n" not in text and "Traceback" not in text
    for needle in needles:
        assert needle in text, text


def test_bind_fills_an_open_joint_set_and_keeps_the_callers_config(project):
    root, _, snapshot = project
    ckpt = load_snapshot(snapshot)
    given = config_mod.load(root / "open.yaml")
    assert given.num_joints == 0 and given.joint_names == []
    bound = bind_snapshot_joints(given, ckpt, snapshot)
    assert (bound.num_joints, bound.joint_names, bound.all_joints) == (K, NAMES, GROUPS)
    assert bound.skeleton == [[0, 1], [0, 2]]
    assert given.num_joints == 0  # a copy: the caller's config is unchanged
    with pytest.raises(UserError, match=r"joint_names = \['a', 'b', 'c'\].*trained with joint_names"):
        bind_snapshot_joints(config_mod.load(root / "open.yaml", ["joint_names=[a, b, c]"]), ckpt, snapshot)


@pytest.mark.parametrize("extra", ["", "num_joints: 3\n", "num_joints: 3\njoint_names: [nose, left_paw, right_paw]\n"])
def test_eval_with_config_with_and_without_joint_set(project, tmp_path, extra):
    root, _, snapshot = project
    cfg = _config(root, f"eval{len(extra)}.yaml", extra)
    out_json = tmp_path / "m.json"
    res = CliRunner().invoke(app, ["eval", cfg, "--checkpoint", str(snapshot), "--split", "test", "--json",
                                   str(out_json), "--out", str(tmp_path / "ev")])
    _ok(res)
    doc = json.loads(out_json.read_text())
    assert doc["samples"] == 2 and list(doc["pck"]["per_joint"]) == NAMES
    assert list(doc["pck"]["per_group"]) == ["nose", "left_paw+right_paw"]  # the snapshot's all_joints


def test_eval_config_disagreeing_with_the_snapshot_is_one_paragraph(project, tmp_path):
    root, _, snapshot = project
    res = CliRunner().invoke(app, ["eval", _config(root, "five.yaml", "num_joints: 5\n"), "--checkpoint",
                                   str(snapshot), "--out", str(tmp_path / "ev")])
    _user_error(res, "num_joints = 5", str(snapshot), "num_joints = 3", "Remove num_joints")


def test_eval_snapshot_disagreeing_with_the_data_is_one_paragraph(project, tmp_path):
    root, _, _ = project
    other = tmp_path / "other"
    with ShardWriter(other, 2, ["a", "b"]) as writer:
        writer.add(Sample(image=_png(32, 32, 7), image_format="png", size=(3, 32, 32),
                          joints=np.full((1, 2, 3), 2, np.float32)), split="test")
        writer.close()
    cfg = config_mod.load(root / "open.yaml", [f"dataset={other}", "num_joints=2", "pairwise_predict=false"])
    torch.manual_seed(0)
    snap = save_snapshot(tmp_path / "run", 1, model=build_model(cfg), optimizer=None, cfg=cfg, data_position={})
    res = CliRunner().invoke(app, ["eval", str(root / "open.yaml"), "--checkpoint", str(snap), "--out",
                                   str(tmp_path / "ev"), "--set", "pairwise_predict=false"])
    _user_error(res, "has 3 joints", "predicts 2")


def test_predict_binds_the_snapshots_joint_set(project, tmp_path):
    _, _, snapshot = project
    (tmp_path / "a.png").write_bytes(_png(48, 40, 3))
    res = CliRunner().invoke(app, ["predict", "--checkpoint", str(snapshot), str(tmp_path / "a.png"), "--out",
                                   str(tmp_path / "out"), "--device", "cpu", "--single-person"])
    _ok(res)
    doc = json.loads((tmp_path / "out" / "a.json").read_text())
    assert [j["name"] for j in doc["joints"]] == NAMES


def test_bench_step_with_an_open_config_uses_the_manifests_joints(project, tmp_path):
    root, _, _ = project
    out_json = tmp_path / "b.json"
    res = CliRunner().invoke(app, ["bench", "step", "--config", str(root / "open.yaml"), "--size", "64", "--iters",
                                   "1", "--warmup", "0", "--device", "cpu", "--json", str(out_json)])
    _ok(res)
    assert json.loads(out_json.read_text())["results"]["step"]["net_type"] == "resnet_18"
    res = CliRunner().invoke(app, ["bench", "step", "--config", _config(root, "bench5.yaml", "num_joints: 5\n"),
                                   "--size", "64", "--iters", "1", "--warmup", "0", "--device", "cpu"])
    _user_error(res, "num_joints = 5", "has 3 joints")


@pytest.mark.parametrize("extra", ["", "num_joints: 3\n"])
def test_fit_assembly_with_config_with_and_without_joint_set(project, tmp_path, extra):
    root, _, snapshot = project
    out = tmp_path / "assembly.json"
    res = CliRunner().invoke(app, ["fit-assembly", _config(root, f"fit{len(extra)}.yaml", extra), "--checkpoint",
                                   str(snapshot), "--out", str(out), "--device", "cpu", "--max-images", "4"])
    _ok(res)
    model = json.loads(out.read_text())
    assert model["images"] == 4 and model["positives"] > 0 and model["negatives"] > 0


def test_fit_assembly_config_disagreeing_with_the_snapshot(project, tmp_path):
    root, _, snapshot = project
    res = CliRunner().invoke(app, ["fit-assembly", _config(root, "fit5.yaml", "num_joints: 5\n"), "--checkpoint",
                                   str(snapshot), "--out", str(tmp_path / "a.json"), "--device", "cpu"])
    _user_error(res, "num_joints = 5", str(snapshot), "trained with num_joints = 3")
    assert not (tmp_path / "a.json").exists()
