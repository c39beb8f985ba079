"""`fastpose config init`: values chosen from synthetic shards of known sizes and joint spacing (hand-computed), the
written YAML loading back unchanged, its errors, and the shared Reaching project (every joint gets a positive cell)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fastpose import config, recipe
from fastpose.cli import app
from fastpose.convert import dlc
from fastpose.errors import UserError
from fastpose.kernels.targets import make_targets
from fastpose.shards import Sample, ShardDataset, ShardWriter

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REACHING = SHARED / "deeplabcut" / "Reaching-Mackenzie-2018-08-30"
needs_shared = pytest.mark.skipif(not REACHING.exists(), reason="../shared/data is absent (a user's fresh clone)")


def write_shards(root: Path, frames: int, size: tuple[int, int], points, all_joints=None, visibility=2.0) -> Path:
    """`frames` samples of `size` (W, H), one person each with joints at `points` [(x, y), ...] (no image decoded)."""
    k = len(points)
    joints = np.array([[x, y, visibility] for x, y in points], np.float32)[None]  # (1, K, 3)
    with ShardWriter(root, k, all_joints=all_joints) as writer:
        for i in range(frames):
            shift = np.float32([i % 3, i % 3, 0])  # moves the person, not the distances
            writer.add(Sample(image=b"", image_format="png", size=(3, size[1], size[0]), joints=joints + shift,
                              source_index=i))
        writer.close()
    return root


def test_values_follow_the_hand_computed_statistics(tmp_path):
    # 10 frames of 640 x 480, joints 40 px (0-1) and 50 px (0-2) apart: nearest distances 40, 40, 50 per frame, their
    # 10th percentile 40 (reported). global_scale = 320 / 640 = 0.5. 10 frames: strong tier, jitter 0.75-1.25, lowest
    # radius 8 / sqrt(2) / (0.5 x 0.75) = 15.08 px, the reference's 1.7 cells = 13.6 / 0.5 = 27.2 px -> 28.
    # Batch min(8, 10) = 8, 200 epochs = ceil(200 x 10 / 8) = 250 iterations. Pair [0, 1]: mirror.
    data = write_shards(tmp_path / "d", 10, (640, 480), [(100, 100), (140, 100), (100, 150)], [[0, 1], [2]])
    path, rows = recipe.init(data, tmp_path / "my.yaml")
    values = {key: value for key, value, _ in rows}
    assert values["global_scale"] == 0.5 and values["pos_dist_thresh"] == 28.0
    assert (values["scale_jitter_lo"], values["scale_jitter_up"]) == (0.75, 1.25)
    assert values["batch_size"] == 8 and values["multi_step"] == [[1e-3, 250]] and values["adam_lr"] == 1e-3
    assert values["mirror"] is True and values["net_type"] == "resnet_18" and values["freeze_bn"] is False
    flat = " ".join(line.removeprefix("# ") for line in path.read_text().splitlines())  # comments unwrapped
    assert "the 10th percentile of the 30 nearest-other-joint distances is 40.0 px" in flat
    assert "(joint0/joint1) swap when mirrored" in flat

    # 320 x 240 frames: global_scale 320 / 320 = 1.0, the reference's 13.6 px -> 14 (the floor 8 / sqrt(2) / 0.75 =
    # 7.54 px is below it). 1920 x 1080 frames: 320 / 1920 = 0.1667 -> 0.17.
    data = write_shards(tmp_path / "close", 10, (320, 240), [(100, 100), (110, 100)])
    assert dict((k, v) for k, v, _ in recipe.init(data, tmp_path / "close.yaml")[1])["pos_dist_thresh"] == 14.0
    data = write_shards(tmp_path / "big", 3, (1920, 1080), [(100, 100), (900, 100)])
    values = dict((k, v) for k, v, _ in recipe.init(data, tmp_path / "big.yaml", iters=90)[1])
    # batch = the 3 frames; the cap 13.6 / 0.17 = 80.0 px beats half of 800 px; no pair: no mirror.
    assert values["global_scale"] == 0.17 and values["batch_size"] == 3 and values["multi_step"] == [[1e-3, 90]]
    assert values["pos_dist_thresh"] == 80.0 and values["mirror"] is False


def test_frames_choose_the_augmentation_tier_and_small_frames_are_not_enlarged():
    def stats(frames, width=200, height=100, nearest=math.nan):
        return recipe.Stats(frames=frames, width=width, height=height, sizes=1, joints=frames, nearest=nearest,
                            pairs=0, symmetric=[], joint_names=["a"])

    for frames, lo, rotation in ((99, 0.75, 30.0), (100, 0.8, 20.0), (999, 0.8, 20.0), (1000, 0.9, 10.0)):
        values = dict((k, v) for k, v, _ in recipe.choose(stats(frames), "d"))
        assert values["scale_jitter_lo"] == lo and values["rotation_range"] == [-rotation, rotation]
    values = dict((k, v) for k, v, _ in recipe.choose(stats(5000, nearest=4.0), "d", init_weights="w.pth"))
    assert values["global_scale"] == 1.0  # 320 / 200 would enlarge
    # 5000 frames, batch 8: ceil(200 x 5000 / 8) = 125000 iterations; weights: resnet_50, frozen BN, Adam 5e-4.
    assert values["multi_step"] == [[5e-4, 125000]] and values["net_type"] == "resnet_50"
    assert values["freeze_bn"] is True and values["init_weights"] == "w.pth"
    # the reference's 13.6 px at scale 1.0, above the floor 8 / sqrt(2) / (1.0 x 0.9) = 6.29: ceil -> 14
    assert values["pos_dist_thresh"] == 14.0


def test_few_epochs_choose_light_augmentation_and_adam_always_decays():
    def values(frames, iters):
        stats = recipe.Stats(frames=frames, width=832, height=747, sizes=1, joints=frames, nearest=math.nan, pairs=0,
                             symmetric=[], joint_names=["a"])
        return dict((k, v) for k, v, _ in recipe.choose(stats, "d", iters=iters))

    ranges = ("rotation_range", "brightness_range", "contrast_range", "saturation_range", "hue_range",
              "gaussian_blur_range", "motion_blur_range", "gaussian_noise_range")
    # 44 frames, batch 8: 300 iterations = 300 x 8 / 44 = 54.5 epochs < 100 -> light: jitter 0.9-1.1, nothing else;
    # 549 iterations = 99.8 epochs, still light; 550 = 100 epochs: the strong tier of < 100 frames.
    for iters in (300, 549):
        light = values(44, iters)
        assert (light["scale_jitter_lo"], light["scale_jitter_up"]) == (0.9, 1.1), iters
        assert all(light[key] == [] for key in ranges), iters
    strong = values(44, 550)
    assert (strong["scale_jitter_lo"], strong["scale_jitter_up"]) == (0.75, 1.25)
    assert strong["rotation_range"] == [-30.0, 30.0] and strong["hue_range"] == [-10.0, 10.0]
    # the light tier's jitter raises the radius floor's scale: 8 / sqrt(2) / (0.38 x 0.9) = 16.5 px < the 1.7 cells' 36
    assert light["pos_dist_thresh"] == strong["pos_dist_thresh"] == 36.0 and light["global_scale"] == 0.38
    # 1000 frames at their default 200 epochs: the mild tier, not light
    assert values(1000, None)["rotation_range"] == [-10.0, 10.0]
    assert light["adam_schedule"] == strong["adam_schedule"] == "cosine" and light["multi_step"] == [[1e-3, 549]]


def test_the_written_yaml_loads_and_round_trips(tmp_path, capsys):
    data = write_shards(tmp_path / "d", 12, (832, 747), [(300, 300), (320, 330), (500, 100)])
    (tmp_path / "cfg").mkdir()
    weights = tmp_path / "resnet50.pth"
    weights.write_bytes(b"not read by config init")
    path, rows = recipe.init(data, tmp_path / "cfg" / "my.yaml", iters=40, init_weights=weights)
    cfg = config.load(path)
    assert "below stride" not in capsys.readouterr().err  # the radius rule's own warning stays silent
    for key, value, _ in rows:
        if key in config.PATH_KEYS:  # relative to the config's folder: they resolve to the real files
            assert Path(getattr(cfg, key)).resolve() == (path.parent / value).resolve()
        else:
            assert getattr(cfg, key) == value, key
    assert Path(cfg.dataset).resolve() == data.resolve() and Path(cfg.init_weights).resolve() == weights.resolve()
    cfg.save(tmp_path / "again.yaml")
    assert config.load(tmp_path / "again.yaml").to_dict() == cfg.to_dict()
    assert all(len(line) <= 120 for line in path.read_text().splitlines())


def test_errors_say_what_and_how(tmp_path):
    with pytest.raises(UserError, match="not a fastpose dataset"):
        recipe.init(tmp_path, tmp_path / "my.yaml")
    data = write_shards(tmp_path / "d", 2, (64, 48), [(10, 10), (20, 20)])
    with pytest.raises(UserError, match="is a folder"):
        recipe.init(data, tmp_path)
    with pytest.raises(UserError, match="has no split 'val'"):
        recipe.init(data, tmp_path / "my.yaml", split="val")
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["splits"]["test"] = {"samples": 0, "persons": 0, "shards": []}
    (data / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="split 'test' has no samples"):
        recipe.init(data, tmp_path / "my.yaml", split="test")
    unlabelled = write_shards(tmp_path / "u", 2, (64, 48), [(10, 10)], visibility=0.0)
    with pytest.raises(UserError, match="no labelled joint"):
        recipe.init(unlabelled, tmp_path / "my.yaml")
    with pytest.raises(UserError, match="--init-weights .* is not a file"):
        recipe.init(data, tmp_path / "my.yaml", init_weights=tmp_path / "missing.pth")
    assert not (tmp_path / "my.yaml").exists()  # nothing half-written
    res = CliRunner().invoke(app, ["config", "init", str(tmp_path / "nothing"), "--out", str(tmp_path / "my.yaml")])
    assert isinstance(res.exception, UserError) and "not a fastpose dataset" in str(res.exception)  # main() exits 2


@needs_shared
@pytest.mark.slow  # converts the project: ~3 s alone, more on a shared machine
def test_reaching_config_loads_and_every_joint_has_a_positive_cell(tmp_path):
    shards = tmp_path / "shards"
    dlc.convert(REACHING, shards, split="train=0.8,test=0.2", seed=1, quiet=True)
    res = CliRunner().invoke(app, ["config", "init", str(shards), "--out", str(tmp_path / "dlc.yaml")])
    assert res.exit_code == 0, res.output
    cfg = config.load(tmp_path / "dlc.yaml")
    # 44 training frames, median 832 x 747: 320 / 832 = 0.385 -> 0.38; the reference's 13.6 px / 0.38 = 35.8 -> 36,
    # above the floor 8 / sqrt(2) / (0.38 x 0.75) = 19.85 px.
    assert (cfg.global_scale, cfg.pos_dist_thresh, cfg.batch_size, cfg.max_iter()) == (0.38, 36.0, 8, 1100)
    for split in ("train", "test"):
        ds = ShardDataset(shards, split)
        sizes, joints = ds.column("size").reshape(-1, 3), ds.column("joints").reshape(-1, ds.num_joints, 3)
        for jitter in (cfg.scale_jitter_lo, cfg.scale_jitter_up):
            s = cfg.global_scale * jitter
            w, h = math.ceil(sizes[:, 2].max() * s), math.ceil(sizes[:, 1].max() * s)
            xy = (torch.from_numpy(joints[..., :2]) + 0.5) * s - 0.5  # (P, K, 2) the pipeline's pixel convention
            batch = torch.cat([xy, torch.from_numpy(joints[..., 2:])], -1)[:, None]  # (B = P, 1, K, 3)
            grid = (math.ceil(h / cfg.stride), math.ceil(w / cfg.stride))
            scmap = make_targets(batch, grid, cfg.stride, cfg.pos_dist_thresh * s).scmap  # (B, K, H, W)
            labelled = joints[..., 2] > 0  # (B, K)
            assert (scmap.sum((2, 3))[torch.from_numpy(labelled)] >= 1).all(), (split, jitter)
        ds.close()
