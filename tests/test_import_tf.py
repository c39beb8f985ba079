"""TensorFlow models into fastpose: DeepLabCut 2.x pose_cfg.yaml keys, `fastpose import-tf` on a prefix and on a
DeepLabCut 2.x training folder (the TF-built fixtures of tests/data/tf), and its bad inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fastpose import config
from fastpose.errors import UserError

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
    note = capsys.readouterr().err
    assert note.count("DeepLabCut 2.x pose_cfg.yaml") == 1  # one paragraph
    assert "dataset_type imgaug" in note and "rotation" in note and "project_path" in note and "lr_init" in note
    used = note.split("fastpose uses ")[1].split(" (")[0].split(", ")
    assert "rotation" not in used and {"net_type", "all_joints_names", "global_scale", "multi_step"} <= set(used)
    # The resolved config is a plain fastpose config: saved and loaded back, it is the same.
    saved = tmp_path / "resolved.yaml"
    cfg.save(saved)
    assert config.load(saved) == cfg


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
