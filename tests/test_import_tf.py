"""TensorFlow models into fastpose: DeepLabCut 2.x pose_cfg.yaml keys, `fastpose import-tf` on a prefix and on a
DeepLabCut 2.x training folder (the TF-built fixtures of tests/data/tf), and its bad inputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
import torch
import yaml
from typer.testing import CliRunner

from fastpose import config
from fastpose.checkpoint import config_from_snapshot, load_model, load_snapshot
from fastpose.cli import app
from fastpose.decode import decode
from fastpose.errors import UserError
from fastpose.model import infer
from fastpose.pairwise import save_stats, stats_for
from fastpose.train import learning_rate

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SHUFFLE = "dlc-models/iteration-0/ReachingAug30-trainset95shuffle1/train"


def dlc_pose_cfg(**changes) -> dict:
    """A train/pose_cfg.yaml as DeepLabCut 2.3 writes it for a single-animal ResNet-50 shuffle: its pose_cfg.yaml
    template (minus pre_resize, crop_size, max_shift, crop_sampling, which create_training_dataset drops) with
    dataset, metadataset, num_joints, all_joints, all_joints_names, init_weights, project_path, net_type and
    dataset_type filled in (deeplabcut 2.3.10, generate_training_dataset/trainingsetmanipulation.py)."""
    values = {
        "dataset": "training-datasets/iteration-0/UnaugmentedDataSet_ReachingAug30/Reaching_Mackenzie95shuffle1.mat",
        "metadataset": "training-datasets/iteration-0/UnaugmentedDataSet_ReachingAug30/"
                       "Documentation_data-Reaching_95shuffle1.pickle",
        "num_joints": 5, "all_joints": [[0], [1], [2], [3], [4]],
        "all_joints_names": ["Hand", "Finger1", "Tongue", "Joystick1", "Joystick2"],
        "init_weights": "/home/lab/miniconda3/envs/DLC/lib/python3.8/site-packages/deeplabcut/"
                        "pose_estimation_tensorflow/models/pretrained/resnet_v1_50.ckpt",
        "project_path": "/home/lab/Reaching-Mackenzie-2018-08-30",
        "pos_dist_thresh": 17, "global_scale": 0.8, "dataset_type": "imgaug", "batch_size": 1, "apply_prob": 0.5,
        "cropratio": 0.4, "rotation": 25, "rotratio": 0.4, "scale_jitter_lo": 0.5, "scale_jitter_up": 1.25,
        "mirror": False,
        "contrast": {"clahe": True, "claheratio": 0.1, "histeq": True, "histeqratio": 0.1},
        "convolution": {"sharpen": False, "sharpenratio": 0.3, "edge": False,
                        "emboss": {"alpha": [0.0, 1.0], "strength": [0.5, 1.5]}, "embossratio": 0.1},
        "net_type": "resnet_50", "multi_stage": False, "location_refinement": True, "locref_huber_loss": True,
        "locref_loss_weight": 0.05, "locref_stdev": 7.2801, "intermediate_supervision": False,
        "intermediate_supervision_layer": 12, "pairwise_huber_loss": False, "partaffinityfield_predict": False,
        "pairwise_predict": False, "max_input_size": 1500, "min_input_size": 64,
        "multi_step": [[0.005, 10000], [0.02, 430000], [0.002, 730000], [0.001, 1030000]],
        "lr_init": 0.0005, "decay_steps": 30000, "alpha_r": 0.02, "display_iters": 1000, "save_iters": 50000,
    }
    values.update(changes)
    return values


def write_dlc(root: Path, values: dict, folder: str = SHUFFLE) -> Path:
    train = root / "Reaching-Mackenzie-2018-08-30" / folder
    train.mkdir(parents=True, exist_ok=True)
    (train / "pose_cfg.yaml").write_text(yaml.safe_dump(values))  # DeepLabCut's yaml.dump sorts keys the same way
    return train


def test_dlc_pose_cfg_loads_with_its_keys_reported(tmp_path, capsys):
    train = write_dlc(tmp_path, dlc_pose_cfg())
    cfg = config.load(train / "pose_cfg.yaml")
    assert cfg.joint_names == ["Hand", "Finger1", "Tongue", "Joystick1", "Joystick2"]
    assert cfg.dataset_type == "default" and cfg.num_joints == 5 and cfg.net_type == "resnet_50"
    # DeepLabCut's dataset is relative to the project folder (where the project is now, not its old project_path).
    project = (tmp_path / "Reaching-Mackenzie-2018-08-30").resolve()
    assert cfg.dataset == str(project / "training-datasets/iteration-0/UnaugmentedDataSet_ReachingAug30/"
                                        "Reaching_Mackenzie95shuffle1.mat")
    assert cfg.init_weights.endswith("pretrained/resnet_v1_50.ckpt") and cfg.global_scale == 0.8
    assert cfg.min_input_size == 0  # DeepLabCut's 64 skips small training images; fastpose's would scale them up
    note = capsys.readouterr().err
    assert note.count("DeepLabCut 2.x pose_cfg.yaml") == 1  # one paragraph
    assert "dataset_type imgaug" in note and "rotation" in note and "project_path" in note and "lr_init" in note
    assert "min_input_size (DeepLabCut skips smaller training images" in note
    used = note.split("fastpose uses ")[1].split(" (")[0].split(", ")
    assert "apply_prob" not in used and {"net_type", "all_joints_names", "global_scale", "rotation"} <= set(used)
    # DeepLabCut's imgaug loader rotates by U(-25, 25) degrees with probability rotateratio (absent: 0.4; the
    # template's rotratio is never read by it).
    assert cfg.rotation_range == [-25.0, 25.0] and cfg.rotation_p == 0.4
    # The resolved config is a plain fastpose config: saved and loaded back, it is the same.
    saved = tmp_path / "resolved.yaml"
    cfg.save(saved)
    assert config.load(saved) == cfg


def test_dlc_adam_follows_multi_step_as_deeplabcut_trains_it(tmp_path, capsys):
    # DeepLabCut 2.x's Adam recipe: multi_step [[1e-4, 7500], [5e-5, 12000], [1e-5, 200000]] is what Adam gets.
    steps = [[1e-4, 7500], [5e-5, 12000], [1e-5, 200000]]
    cfg = config.load(write_dlc(tmp_path, dlc_pose_cfg(optimizer="adam", multi_step=steps)) / "pose_cfg.yaml")
    assert cfg.adam_schedule == "multi_step"
    assert [learning_rate(cfg, it) for it in (1, 7500, 7501, 12001)] == [1e-4, 1e-4, 5e-5, 1e-5]
    assert "Adam at multi_step's rates, as DeepLabCut 2.x trains it" in capsys.readouterr().err
    # SGD (DeepLabCut's default) leaves the key at its default; a fastpose file with optimizer adam is not DeepLabCut's
    assert config.load(write_dlc(tmp_path / "sgd", dlc_pose_cfg()) / "pose_cfg.yaml").adam_schedule == "constant"
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({"optimizer": "adam", "multi_step": steps}))
    assert learning_rate(config.load(mine), 7501) == 1e-4


def test_dlc_keys_are_accepted_only_from_deeplabcut(tmp_path):
    # A fastpose config with a DeepLabCut key is still an error: the exception is for DeepLabCut's own files.
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"net_type": "resnet_50", "rotation": 25}))
    with pytest.raises(UserError, match="unknown key 'rotation'"):
        config.load(path)
    # Recognised by project_path alone (a copied file), and by lying in a dlc-models folder (no project_path).
    path.write_text(yaml.safe_dump(dlc_pose_cfg()))
    assert config.load(path).joint_names[0] == "Hand"
    values = dlc_pose_cfg()
    del values["project_path"]
    assert config.load(write_dlc(tmp_path, values) / "pose_cfg.yaml").joint_names[4] == "Joystick2"
    # A typo in a DeepLabCut file is still caught, with the nearest key of either program.
    train = write_dlc(tmp_path, dlc_pose_cfg(rotaton=25))
    with pytest.raises(UserError, match="unknown key 'rotaton'.*Did you mean 'rotation'"):
        config.load(train / "pose_cfg.yaml")


@pytest.mark.parametrize("net", ["mobilenet_v2_1.0", "efficientnet-b0", "dlcrnet_ms5"])
def test_dlc_networks_fastpose_cannot_build_are_one_paragraph(tmp_path, net):
    train = write_dlc(tmp_path, dlc_pose_cfg(net_type=net))
    with pytest.raises(UserError, match=f"net_type {net} is a DeepLabCut network fastpose does not support") as e:
        config.load(train / "pose_cfg.yaml")
    assert "\n" not in str(e.value)


# ----- fastpose import-tf on the TF-built fixtures (tools/tf_fixtures.py) -----

TF = Path(__file__).resolve().parent / "data" / "tf"
R50 = TF / "r50_all"  # ResNet-50 at 1/16 width, 3 joints, heads part, locref, pairwise, intermediate (block3 unit 2)
NAMES = ["snout", "left_ear", "right_ear"]


def dlc_folder(tmp_path: Path, **changes) -> Path:
    """A DeepLabCut 2.x training folder holding the r50_all weights as snapshot-40 (index + data + meta, as
    DeepLabCut's Saver writes them) and a broken snapshot-5 (truncated data) that is the newest by file date."""
    train = write_dlc(tmp_path, dlc_pose_cfg(**{
        "num_joints": 3, "all_joints": [[0], [1], [2]], "all_joints_names": NAMES, "global_scale": 1.0,
        "intermediate_supervision": True, "intermediate_supervision_layer": 2, **changes}))
    for n in (5, 40):
        (train / f"snapshot-{n}.index").write_bytes((R50 / "model.ckpt.index").read_bytes())
        (train / f"snapshot-{n}.meta").write_bytes(b"\x0a\x00")  # the graph: import-tf never reads it
    data = (R50 / "model.ckpt.data-00000-of-00001").read_bytes()
    (train / "snapshot-40.data-00000-of-00001").write_bytes(data)
    (train / "snapshot-5.data-00000-of-00001").write_bytes(data[: len(data) // 2])
    newer = (train / "snapshot-40.index").stat().st_mtime + 60
    for name in ("snapshot-5.index", "snapshot-5.data-00000-of-00001"):
        os.utime(train / name, (newer, newer))
    return train


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """The DeepLabCut-style folder imported with `fastpose import-tf`: (snapshot path, CLI result)."""
    root = tmp_path_factory.mktemp("dlc")
    train = dlc_folder(root)
    out = root / "imported.pt"
    res = cli("import-tf", str(train.parent), "--out", str(out), "--set", "backbone_width=0.0625")
    return out, res


def test_import_dlc_folder_takes_the_newest_snapshot_by_number(imported):
    out, res = imported
    assert res.exit_code == 0, res.output
    ckpt = load_snapshot(out)
    assert ckpt["iteration"] == 40 and ckpt["optimizer"] is None
    assert ckpt["extra"]["imported_from"].endswith("train/snapshot-40")
    assert ckpt["extra"]["tensorflow_format"] == "V2"
    cfg = config_from_snapshot(ckpt, out)
    assert cfg.backbone_layout == "slim" and cfg.backbone_width == 0.0625 and cfg.net_type == "resnet_50"
    assert cfg.joint_names == NAMES and cfg.num_joints == 3 and cfg.init_weights == ""
    assert cfg.intermediate_supervision and not cfg.pairwise_predict
    assert cfg.precision == "fp32"  # not auto: bf16 would give TF's outputs only to bf16 rounding
    assert "pairwise" in res.output and "iteration 40" in res.output  # the head the config leaves off is named


def test_imported_network_gives_tensorflows_outputs(imported):
    # load_model + the inference rule (unpadded per size in the slim layout) on TF's own inputs: TF's outputs.
    out, _ = imported
    model, cfg = load_model(out, torch.device("cpu"))
    golden = np.load(R50 / "golden.npz")
    for i in range(4):
        x = torch.from_numpy(golden[f"input_{i}"]).permute(0, 3, 1, 2)  # (1, 3, H, W)
        heads = infer(model, x.contiguous(), torch.tensor([x.shape[2:]]))
        for head in ("part", "locref", "intermediate"):
            tf_out = torch.from_numpy(golden[f"{head}_{i}"]).permute(0, 3, 1, 2)  # NHWC -> (1, C, h, w)
            assert heads[head].shape == tf_out.shape
            assert (heads[head] - tf_out).abs().max().item() < 1e-4, (head, i)


def test_predict_on_the_imported_snapshot_decodes_as_tensorflow(imported, tmp_path):
    # `fastpose predict` on the golden inputs as image files (they are 8-bit images minus mean_pixel) against
    # fastpose.decode of TF's own maps: the same cells, positions and scores.
    out, _ = imported
    golden = np.load(R50 / "golden.npz")
    images = tmp_path / "images"
    images.mkdir()
    expected, mean = {}, np.array(config.Config().mean_pixel)
    for i in range(4):
        pixels = golden[f"input_{i}"][0] + mean  # (H, W, 3) RGB
        assert np.abs(pixels - np.round(pixels)).max() < 1e-3, "inputs are not 8-bit images: run tools/tf_fixtures.py"
        pixels = np.round(pixels).astype(np.uint8)
        cv2.imwrite(str(images / f"im{i}.png"), cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
        part = torch.from_numpy(golden[f"part_{i}"]).permute(0, 3, 1, 2)  # (1, K, h, w) logits
        locref = torch.from_numpy(golden[f"locref_{i}"]).permute(0, 3, 1, 2)  # (1, 2K, h, w)
        expected[f"im{i}"] = decode(part, locref, 8, 7.2801, torch.tensor([pixels.shape[:2]]))[0].numpy()  # (K, 3)
    res = cli("predict", str(images), "--checkpoint", str(out), "--out", str(tmp_path / "preds"), "--device", "cpu")
    assert res.exit_code == 0, res.output
    for stem, want in expected.items():
        doc = json.loads((tmp_path / "preds" / f"{stem}.json").read_text())
        assert [j["name"] for j in doc["joints"]] == NAMES
        got = np.array([[j["x"], j["y"], j["score"]] for j in doc["joints"]])  # (K, 3)
        np.testing.assert_allclose(got[:, :2], want[:, :2], rtol=0, atol=1e-3)
        np.testing.assert_allclose(got[:, 2], want[:, 2], rtol=0, atol=1e-5)


def reference_config(tmp_path: Path, **changes) -> Path:
    """A pose-tensorflow style pose_cfg.yaml for the r50_all network (3 joints, one symmetric pair)."""
    values = {"net_type": "resnet_50", "backbone_width": 0.0625, "num_joints": 3, "all_joints": [[0, 1], [2]],
              "all_joints_names": ["ear", "snout"], "global_scale": 1.0, "location_refinement": True,
              "intermediate_supervision": True, "intermediate_supervision_layer": 2, "pairwise_predict": True,
              "pairwise_stats_fn": "pairwise_stats.mat", **changes}
    path = tmp_path / "pose_cfg.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_import_v1_file_and_v2_prefix_give_the_same_snapshot(tmp_path):
    cfg_file = reference_config(tmp_path)
    for name, source in (("v2.pt", R50 / "model.ckpt"), ("v2_index.pt", R50 / "model.ckpt.index"),
                         ("v1.pt", R50 / "model_v1.ckpt")):
        res = cli("import-tf", str(source), "--config", str(cfg_file), "--out", str(tmp_path / name))
        assert res.exit_code == 0, res.output
        assert "pairwise_stats_fn" in res.output  # the statistics the pairwise head needs are not there: a note
    res = cli("import-tf", str(R50 / "model.ckpt"), "--config", str(cfg_file), "--out", str(tmp_path / "auto.pt"),
              "--set", "precision=auto")
    assert res.exit_code == 0 and load_snapshot(tmp_path / "auto.pt")["config"]["precision"] == "auto"
    v2, v2_index, v1 = (load_snapshot(tmp_path / n) for n in ("v2.pt", "v2_index.pt", "v1.pt"))
    assert v1["config"]["precision"] == "fp32"
    assert v1["extra"]["tensorflow_format"] == "V1" and v2["extra"]["tensorflow_format"] == "V2"
    assert v2["model"].keys() == v1["model"].keys() and any(k.startswith("pairwise.") for k in v1["model"])
    for key, value in v2["model"].items():
        assert torch.equal(value, v1["model"][key]) and torch.equal(value, v2_index["model"][key]), key
    tensors = np.load(R50 / "tensors.npz")
    np.testing.assert_array_equal(v2["model"]["part.deconv.bias"].numpy(), tensors["pose/part_pred/block4/biases"])
    assert v2["iteration"] == int(tensors["global_step"])  # no -<N> in the name: TF's global_step


def test_import_bad_inputs_are_one_paragraph(tmp_path):
    def error(*args) -> str:
        res = cli("import-tf", *args, "--out", str(tmp_path / "out.pt"))
        assert isinstance(res.exception, UserError), res.output
        assert not (tmp_path / "out.pt").exists()
        return str(res.exception)

    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds no snapshot-<N>.index" in error(str(empty))
    meta_only = tmp_path / "meta" / "train"
    meta_only.mkdir(parents=True)
    (meta_only / "snapshot-40.meta").write_bytes(b"\x0a\x00")
    assert "a .meta file is TensorFlow's graph, not the weights" in error(str(meta_only.parent))
    assert "is a TensorFlow .meta file: the graph" in error(str(meta_only / "snapshot-40.meta"))
    lone = tmp_path / "lone" / "resnet_v1_50.ckpt"  # a checkpoint without a pose_cfg.yaml beside it
    lone.parent.mkdir()
    lone.write_bytes((R50 / "model_v1.ckpt").read_bytes())
    assert "No config for" in error(str(lone)) and "pass --config" in error(str(lone))
    # A config whose joint count disagrees with the checkpoint's part head.
    train = dlc_folder(tmp_path / "k4", num_joints=4, all_joints=[[0], [1], [2], [3]],
                       all_joints_names=[*NAMES, "tail"])
    assert "part head predicts 3 joints" in error(str(train), "--set", "backbone_width=0.0625")
    # A head the config needs that the checkpoint lacks (r101_plain: part and locref only).
    plain = reference_config(tmp_path, net_type="resnet_101", num_joints=2, all_joints=[[0, 1]],
                             all_joints_names=["ear"], intermediate_supervision=False)
    assert "has no pose/pairwise_pred/block4 head" in error(str(TF / "r101_plain" / "model.ckpt"), "--config",
                                                            str(plain))
    # Multi-animal DeepLabCut models and networks fastpose cannot build.
    train = dlc_folder(tmp_path / "ma", partaffinityfield_predict=True, num_idchannel=2)
    assert "multi-animal DeepLabCut model" in error(str(train))
    train = dlc_folder(tmp_path / "mobile", net_type="mobilenet_v2_1.0")
    assert "mobilenet_v2_1.0 is a DeepLabCut network fastpose does not support" in error(str(train))
    # A MobileNet checkpoint (tools/tf_fixtures.py's mobilenet_v2: DeepLabCut's variable scheme) under a ResNet config.
    train = dlc_folder(tmp_path / "mobile_ckpt")
    for suffix in (".index", ".data-00000-of-00001"):
        (train / f"snapshot-40{suffix}").write_bytes((TF / "mobilenet_v2" / f"model.ckpt{suffix}").read_bytes())
    assert "MobileNet" in error(str(train), "--set", "backbone_width=0.0625")


def test_multi_person_predict_reads_the_reference_pairwise_stats_mat(tmp_path):
    # The reference's pairwise_stats.mat (rows [s, e] for s, e = 0..K-1, s != e; means, std_devs; see
    # tests/test_assembly.py) and fastpose's own .npz holding the same numbers give the same people.
    rng = np.random.default_rng(3)
    pairs = [[s, e] for s in range(3) for e in range(3) if s != e]
    means, stds = rng.normal(0, 20, (6, 2)), rng.uniform(5, 15, (6, 2))
    scipy.io.savemat(tmp_path / "pairwise_stats.mat", {"graph": pairs, "means": means, "std_devs": stds})
    mean, std = np.zeros((3, 3, 2)), np.ones((3, 3, 2))
    for (s, e), m, sd in zip(pairs, means, stds):
        mean[s, e], std[s, e] = m, sd
    save_stats(tmp_path / "own.npz", mean, std, np.ones((3, 3), np.int64))
    golden = np.load(R50 / "golden.npz")
    pixels = np.round(golden["input_2"][0] + np.array(config.Config().mean_pixel)).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "im.png"), cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
    people = {}
    for stats in ("pairwise_stats.mat", "own.npz"):
        snapshot = tmp_path / f"{stats}.pt"
        res = cli("import-tf", str(R50 / "model.ckpt"), "--config", str(reference_config(tmp_path)), "--out",
                  str(snapshot), "--set", f"pairwise_stats_fn={tmp_path / stats}", "--set", "det_min_score=0.5")
        assert res.exit_code == 0 and "pairwise_stats_fn" not in res.output, res.output
        got_mean, got_std = stats_for(config_from_snapshot(load_snapshot(snapshot), snapshot))  # what predict reads
        np.testing.assert_array_equal(got_mean, mean)
        np.testing.assert_array_equal(got_std, std)
        res = cli("predict", str(tmp_path / "im.png"), "--checkpoint", str(snapshot), "--out",
                  str(tmp_path / f"{stats}.preds"), "--multi-person", "--device", "cpu")
        assert res.exit_code == 0, res.output
        people[stats] = json.loads((tmp_path / f"{stats}.preds" / "im.json").read_text())["persons"]
    assert len(people["own.npz"]) >= 1 and people["pairwise_stats.mat"] == people["own.npz"]
