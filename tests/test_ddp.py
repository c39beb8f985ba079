"""Two CPU processes under torchrun (gloo): parameters identical across ranks, and equal to one process with the
doubled batch (each rank's i-th batch is half of that process's i-th batch, see fastpose/pipeline.py)."""

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fastpose import checkpoint, config
from fastpose.convert.synth import draw_sample
from fastpose.model import build_model
from fastpose.shards import Sample, ShardWriter

TORCHRUN = Path(sys.executable).with_name("torchrun")

CFG = """\
dataset: {data}
net_type: resnet_18
freeze_bn: true         # batch statistics would differ between 2 x 2 and 1 x 4 images
location_refinement: false
pos_dist_thresh: 10
optimizer: sgd
multi_step: [[0.01, 3]]
batch_size: {batch}
display_iters: 1
save_iters: 3
num_workers: 1
num_threads: 1
channels_last: false
deterministic: true
seed: 11
out_dir: {out}
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """8 images of one size (96 x 96), so batches of 2 and 4 are padded alike."""
    root = tmp_path_factory.mktemp("ddp") / "shards"
    rng = np.random.default_rng(0)
    with ShardWriter(root, 11) as w:
        for i in range(8):
            img, joints = draw_sample(rng, (96, 96))
            ok, buf = cv2.imencode(".png", img[:, :, ::-1])
            w.add(Sample(image=buf.tobytes(), image_format="png", size=(3, 96, 96), joints=joints[None].astype(
                np.float32), source_index=i))
        w.close()
    return root


def run(cmd, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed beside this python")
def test_two_ranks_equal_one_process_with_doubled_batch(data, tmp_path):
    (tmp_path / "ddp.yaml").write_text(CFG.format(data=data, batch=2, out=tmp_path / "ddp"))
    (tmp_path / "one.yaml").write_text(CFG.format(data=data, batch=4, out=tmp_path / "one"))
    run([str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "fastpose", "train", "ddp.yaml"], tmp_path)
    run([sys.executable, "-m", "fastpose", "train", "one.yaml"], tmp_path)
    ddp = checkpoint.load_snapshot(tmp_path / "ddp" / "snapshot-3.pt")
    one = checkpoint.load_snapshot(tmp_path / "one" / "snapshot-3.pt")
    assert ddp["extra"]["world_size"] == 2 and ddp["extra"]["rank_param_spread"] == 0.0
    # Every one of the 62 parameter tensors moved in the 3 steps, the least by 4.6e-5 at its largest element (measured:
    # layer1.0.bn1.weight); the two runs differ by at most 1.5e-8 (summation order). A tolerance of 1e-6 sits between
    # them: a rank that skipped its gradient all-reduce, or one step, would show in every tensor.
    torch.manual_seed(11)
    model = build_model(config.load(None, net_type="resnet_18", num_joints=11))
    init = model.state_dict()
    params = [name for name, _ in model.named_parameters()]
    assert len(params) == 62 and set(one["model"]) == set(ddp["model"]) == set(init)
    for name in params:
        moved = (one["model"][name] - init[name]).abs().max().item()
        assert moved > 1e-5, f"{name} moved only {moved:g}: the comparison below could not see a missed update"
        torch.testing.assert_close(ddp["model"][name], one["model"][name], rtol=0, atol=1e-6, msg=name)
    for name in set(init) - set(params):  # frozen batch-norm statistics: unchanged in both runs
        assert torch.equal(one["model"][name], init[name]) and torch.equal(ddp["model"][name], init[name]), name
