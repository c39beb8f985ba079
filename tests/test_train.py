"""Training: the loss goes down, loss parts equal plain-torch references, exact resume (also after SIGKILL), signals,
config errors. Small synthetic data, resnet_18, CPU."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from oracles import targets as oracle_targets

from fastpose import checkpoint, config
from fastpose.convert import mat, synth
from fastpose.errors import UserError
from fastpose.train import compute_losses, learning_rate, padding_ignore, train

REPO = Path(__file__).resolve().parents[1]

CFG = """\
dataset: {data}
num_joints: 11
all_joints: [[0], [1], [2], [3, 5], [4, 6], [7, 9], [8, 10]]
net_type: resnet_18
freeze_bn: false
location_refinement: true
locref_loss_weight: 0.05
pos_dist_thresh: 10
scale_jitter_lo: 0.9
scale_jitter_up: 1.1
optimizer: sgd
multi_step: [[0.01, 4], [0.005, 100]]
batch_size: 4
display_iters: 2
save_iters: 3
num_workers: 1
num_threads: 1
channels_last: false
deterministic: true
seed: 3
out_dir: {out}
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    synth.make_dataset(root / "synth", n=20, seed=4, sizes=(64, 80))
    mat.convert(root / "synth" / "dataset.mat", root / "shards", num_joints=11, split="train=0.8,test=0.2",
                quiet=True, workers=1)
    return root / "shards"


def write_cfg(tmp_path, data, name="run", **extra):
    text = CFG.format(data=data, out=tmp_path / name) + "".join(f"{k}: {v}\n" for k, v in extra.items())
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def weights(snapshot):
    return checkpoint.load_snapshot(snapshot)["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    """8 iterations in one go: the reference for every resume test."""
    tmp = tmp_path_factory.mktemp("ref")
    result = train(config.load(write_cfg(tmp, data)), max_iters=8, quiet=True)
    return result


def test_loss_decreases_and_logs(uninterrupted):
    out = Path(uninterrupted["out_dir"])
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in lines] == [2, 4, 6, 8]
    assert lines[-1]["loss"] < lines[0]["loss"]
    assert lines[0]["lr"] == 0.01 and lines[-1]["lr"] == 0.005  # multi_step: (0, 4] then (4, 100]
    assert {"loss_part", "loss_locref", "images_per_s", "data_time_s"} <= set(lines[0])
    assert sorted(p.name for p in out.glob("snapshot-*.pt")) == ["snapshot-3.pt", "snapshot-6.pt", "snapshot-8.pt"]
    saved = config.load(out / "config.yaml")
    assert saved.num_joints == 11 and saved.joint_names[0] == "joint0"  # the resolved config, filled from the data
    assert checkpoint.load_snapshot(out / "snapshot-8.pt")["config"]["batch_size"] == 4
    assert list((out / "log").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_resume_in_process_is_exact(data, tmp_path, uninterrupted):
    cfg_path = write_cfg(tmp_path, data)
    first = train(config.load(cfg_path), max_iters=5, quiet=True)  # snapshot at 3 and at the stop (5)
    assert first["iteration"] == 5
    second = train(config.load(cfg_path), resume=True, max_iters=8, quiet=True)
    assert second["iteration"] == 8
    assert_same_weights(weights(second["snapshot"]), weights(uninterrupted["snapshot"]))


@pytest.mark.slow
def test_sigkill_between_snapshots_then_resume(data, tmp_path, uninterrupted, paused_command):
    cfg_path = write_cfg(tmp_path, data)
    out = tmp_path / "run"
    args = ["train", str(cfg_path), "--max-iters", "8"]
    # The process stops itself as step 5 begins: snapshot 3 is written, step 4 is done and not saved.
    proc = paused_command("fastpose.train", "train_step", 5, args)
    assert checkpoint.latest_snapshot(out).name == "snapshot-3.pt"
    os.killpg(proc.pid, signal.SIGKILL)  # between snapshot 3 and 6: step 4 is lost
    proc.wait()
    assert checkpoint.latest_snapshot(out).name == "snapshot-3.pt"
    cmd = [sys.executable, "-m", "fastpose", *args]
    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_weights(weights(out / "snapshot-8.pt"), weights(uninterrupted["snapshot"]))


@pytest.mark.slow
def test_sigterm_writes_snapshot_and_exits_zero(data, tmp_path):
    cfg_path = write_cfg(tmp_path, data, save_iters=1000)
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "fastpose", "train", str(cfg_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    log = out / "metrics.jsonl"
    while time.time() < deadline and not (log.exists() and log.read_text()):  # the first log line: training runs
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output[-2000:]
    assert "--resume" in output
    snap = checkpoint.latest_snapshot(out)
    assert snap is not None and 2 <= checkpoint.load_snapshot(snap)["iteration"] < 100


@pytest.mark.slow
def test_cli_with_spawned_workers(data, tmp_path):
    """On a GPU the pipeline's workers are spawned (CUDA cannot be forked): `python -m fastpose` must survive that."""
    cfg_path = write_cfg(tmp_path, data, deterministic="false")
    env = dict(os.environ, FASTPOSE_WORKER_START="spawn")
    done = subprocess.run([sys.executable, "-m", "fastpose", "train", str(cfg_path), "--max-iters", "2"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "finished at iteration 2" in done.stdout


def test_loss_parts_equal_plain_torch(data):
    cfg = config.load(None, num_joints=11, location_refinement=True, intermediate_supervision=False,
                      pos_dist_thresh=10.0, locref_huber_loss=True, locref_loss_weight=0.05)
    g = torch.Generator().manual_seed(0)
    b, k, h, w = 3, 11, 9, 10
    joints = torch.rand(b, 1, k, 3, generator=g) * torch.tensor([w * 8.0, h * 8.0, 1.0])
    joints[..., 2] = (joints[..., 2] > 0.3).float()
    valid_hw = torch.tensor([[72, 80], [60, 80], [72, 50]], dtype=torch.int32)
    out = {"part": torch.randn(b, k, h, w, generator=g), "locref": torch.randn(b, 2 * k, h, w, generator=g) * 2,
           "intermediate": None}

    class Batch:
        pass

    batch = Batch()
    batch.joints, batch.scale, batch.valid_hw = joints, torch.tensor([1.0, 0.9, 1.1]), valid_hw
    losses = compute_losses(cfg, out, batch)
    # The targets from the loop-by-loop reference (tests/oracles/targets.py), not from make_targets / padding_ignore.
    scmap, wts, loc, loc_mask = (torch.from_numpy(a).float() for a in oracle_targets.part_targets(
        joints.numpy(), (h, w), 8, (10.0 * batch.scale).numpy(), cfg.locref_stdev, valid_hw.tolist()))
    assert 0 < (wts == 0).sum() < wts.numel()  # the padding of samples 2 and 3 is ignored
    assert 0 < scmap.sum() and 0 < (scmap * (1 - wts)).sum()  # some positive cells lie in the padding
    ce = F.binary_cross_entropy_with_logits(out["part"], scmap, reduction="none")
    part = (ce * wts).sum() / (wts != 0).sum()
    hub = F.huber_loss(out["locref"], loc, reduction="none", delta=1.0)
    locref = (hub * loc_mask).sum() / (loc_mask != 0).sum()
    torch.testing.assert_close(losses["part"], part, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses["locref"], locref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses["total"], part + 0.05 * locref, rtol=1e-5, atol=1e-6)


def test_padding_ignore_marks_cells_beyond_the_valid_size():
    mask = padding_ignore(torch.tensor([[16, 24], [8, 8]]), (3, 4), 8)
    # sample 0: rows with centre 4, 12 are inside 16; row centre 20 is not. cols 4, 12, 20 inside 24; 28 is not.
    np.testing.assert_array_equal(mask[0, 0].numpy(), [[0, 0, 0, 1], [0, 0, 0, 1], [1, 1, 1, 1]])
    np.testing.assert_array_equal(mask[1, 0].numpy(), [[0, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]])


def test_resume_without_snapshot_and_config_errors(data, tmp_path):
    with pytest.raises(UserError, match="--resume: no snapshot"):
        train(config.load(write_cfg(tmp_path, data)), resume=True, quiet=True)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "snapshot-7.pt").write_bytes(b"")
    with pytest.raises(UserError, match="already holds snapshots .*snapshot-7.pt.*--resume"):
        train(config.load(write_cfg(tmp_path, data)), quiet=True)
    with pytest.raises(UserError, match="resnet_50 has 6 blocks in layer3"):
        config.load(write_cfg(tmp_path, data, net_type="resnet_50", intermediate_supervision="true"))
    with pytest.raises(UserError, match="num_joints = 12 but the dataset .* has 11 joints"):
        train(config.load(write_cfg(tmp_path, data), ["num_joints=12", "all_joints=[]"]), quiet=True)


def test_non_finite_loss_stops_with_the_step(data, tmp_path):
    cfg = config.load(write_cfg(tmp_path, data), ["multi_step=[[1.0e+30, 6]]", "display_iters=3"])
    with pytest.raises(UserError, match=r"non-finite at iteration [1-3]\b"):
        train(cfg, quiet=True)
    assert not list((tmp_path / "run").glob("snapshot-*.pt"))


def test_adam_schedules_give_hand_computed_rates():
    def rates(**values):
        cfg = config.load(None, **{"optimizer": "adam", "adam_lr": 0.002, "multi_step": [[0.5, 2], [0.25, 4]],
                                   **values})
        return [learning_rate(cfg, it) for it in (1, 2, 3, 4)]

    assert rates() == [0.002] * 4  # the default, constant: the reference's Adam
    assert rates(adam_schedule="multi_step") == [0.5, 0.5, 0.25, 0.25]  # DeepLabCut 2.x: multi_step's rates
    # 0.001 * (1 + cos(pi * (it - 1) / 4)): cos(pi / 4) = 0.70710678..., cos(pi / 2) = 0, cos(3 pi / 4) = -0.7071...
    assert rates(adam_schedule="cosine") == pytest.approx([0.002, 0.0017071067811865, 0.001, 0.00029289321881345],
                                                          rel=1e-12)
    assert rates(optimizer="sgd", adam_schedule="cosine") == [0.5, 0.5, 0.25, 0.25]  # SGD: multi_step only
    with pytest.raises(UserError, match="adam_schedule = 'cosin' is not allowed: one of constant, multi_step, cosine"
                                        r"\. Did you mean 'cosine'"):
        config.load(None, adam_schedule="cosin")


@pytest.mark.slow
def test_resume_is_exact_under_a_cosine_adam_schedule(data, tmp_path):
    extra = dict(optimizer="adam", adam_lr=0.001, adam_schedule="cosine", multi_step="[[0.001, 8]]")
    whole = train(config.load(write_cfg(tmp_path, data, "whole", **extra)), quiet=True)
    path = write_cfg(tmp_path, data, "parts", **extra)
    assert train(config.load(path), max_iters=5, quiet=True)["iteration"] == 5
    resumed = train(config.load(path), resume=True, quiet=True)
    assert resumed["iteration"] == 8
    assert_same_weights(weights(resumed["snapshot"]), weights(whole["snapshot"]))
    lines = [json.loads(s) for s in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    # logged every 2 iterations: 0.0005 * (1 + cos(pi * (it - 1) / 8)) at it = 2, 4, 6, 8
    assert [r["lr"] for r in lines] == pytest.approx([9.6193976625e-4, 6.9134171618e-4, 3.0865828382e-4,
                                                      3.8060233744e-5], rel=1e-9)
