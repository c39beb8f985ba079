"""Config loading: every reference config loads; each error class names the key and what is allowed."""

from pathlib import Path

import pytest
import yaml

from fastpose import config
from fastpose.errors import UserError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REF_CONFIGS = sorted((SHARED / "pose-tensorflow" / "configs").glob("*.yaml"))
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not REF_CONFIGS, reason="../shared/data/pose-tensorflow/configs is absent (not on CI)")
@pytest.mark.parametrize("path", REF_CONFIGS, ids=lambda p: p.name)
def test_reference_configs_load_unchanged(path):
    cfg = config.load(path)
    assert cfg.num_joints in (14, 17)
    assert cfg.locref_stdev == pytest.approx(7.2801)


def test_reference_mpii_train_values():
    path = SHARED / "pose-tensorflow" / "configs" / "models_mpii_train_pose_cfg.yaml"
    if not path.exists():
        pytest.skip("shared data absent")
    cfg = config.load(path)
    assert cfg.global_scale == pytest.approx(0.8452830189)
    assert cfg.multi_step[-1] == [0.001, 1030000]
    assert cfg.max_iter() == 1030000
    assert cfg.all_joints == config.MPII_ALL_JOINTS and cfg.joint_names[13] == "head_top"
    assert cfg.intermediate_supervision_layer == 12 and cfg.mirror
    # relative paths resolve against the config's folder
    assert Path(cfg.init_weights).is_absolute()


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    # Every key the file sets arrives unchanged; relative paths are joined to the config's folder.
    cfg = config.load(path)
    raw = yaml.safe_load(path.read_text())
    assert raw
    for key, value in raw.items():
        if key in ("dataset", "init_weights", "out_dir") and value:
            value = str(path.parent / value)
        assert getattr(cfg, key) == value, key


def test_defaults_are_the_references():
    cfg = config.load(None)
    assert cfg.stride == 8 and cfg.mean_pixel == [123.68, 116.779, 103.939] and cfg.optimizer == "sgd"
    assert cfg.snapshot_prefix == "snapshot" and cfg.locref_huber_loss and not cfg.mirror


def write(tmp_path, text):
    p = tmp_path / "pose_cfg.yaml"
    p.write_text(text)
    return p


def test_unknown_key_names_file_key_and_closest(tmp_path):
    p = write(tmp_path, "locref_los_weight: 0.05\n")
    with pytest.raises(UserError, match=r"pose_cfg.yaml: unknown key 'locref_los_weight'. Did you mean "
                                        r"'locref_loss_weight'"):
        config.load(p)


def test_wrong_type(tmp_path):
    with pytest.raises(UserError, match=r"key 'stride' has value 'eight'.*must be int"):
        config.load(write(tmp_path, "stride: eight\n"))
    with pytest.raises(UserError, match=r"key 'mirror' has value 1 .*must be bool"):
        config.load(write(tmp_path, "mirror: 1\n"))


@pytest.mark.parametrize("text, pattern", [
    ("stride: -8\n", r"stride = -8 is not allowed: it must be a positive integer"),
    ("scale_jitter_lo: 1.2\nscale_jitter_up: 0.8\n", r"scale_jitter_lo = 1.2 is larger than scale_jitter_up = 0.8"),
    ("num_joints: 4\nall_joints: [[0, 4]]\n", r"all_joints contains joint id 4 in \[0, 4\], but num_joints is 4"),
    ("net_type: resnet_5O\n", r"net_type = 'resnet_5O' is not allowed: one of .*Did you mean 'resnet_50'"),
    ("net_type: resnet_50\nintermediate_supervision: true\nintermediate_supervision_layer: 12\n",
     r"resnet_50 has 6 blocks in layer3.*valid range is 1..6"),
    ("multi_step: [[0.01, 100], [0.001, 50]]\n", r"multi_step entry 1"),
    ("dataset_type: mpii\nnum_joints: 16\n", r"dataset_type 'mpii' defines num_joints = 14"),
    ("dataset_type: posetrack\n", r"dataset_type = 'posetrack' is not allowed: one of default, mpii, coco"),
])
def test_impossible_values(tmp_path, text, pattern):
    with pytest.raises(UserError, match=pattern):
        config.load(write(tmp_path, text))


def test_overrides_go_through_the_same_checks(tmp_path):
    p = write(tmp_path, "batch_size: 4\n")
    cfg = config.load(p, ["batch_size=16", "multi_step=[[0.005, 100]]", "mirror=true"])
    assert cfg.batch_size == 16 and cfg.multi_step == [[0.005, 100]] and cfg.mirror and cfg.max_iter() == 100
    with pytest.raises(UserError, match="unknown key 'batch'. Did you mean 'batch_size'"):
        config.load(p, ["batch=3"])
    with pytest.raises(UserError, match="stride = 0 is not allowed"):
        config.load(p, ["stride=0"])
    with pytest.raises(UserError, match="expected key=value"):
        config.load(p, ["stride"])


def test_seed_readme_syntax_is_explained(tmp_path):
    with pytest.raises(UserError, match="not valid YAML"):
        config.load(write(tmp_path, "all_joints: [[0, 5]\nnum_joints: [\n"))


def test_schedule_semantics():
    cfg = config.load(None, multi_step=[[0.1, 10], [0.01, 20]])
    assert [cfg.lr_at(i) for i in (1, 10, 11, 20)] == [0.1, 0.1, 0.01, 0.01]


def test_symmetric_permutation_and_save_roundtrip(tmp_path):
    cfg = config.load(write(tmp_path, "dataset_type: mpii\ndataset: data/shards\n"))
    assert cfg.symmetric_permutation() == [5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 12, 13]
    assert cfg.dataset == str(tmp_path / "data" / "shards")
    cfg.save(tmp_path / "resolved.yaml")
    again = config.load(tmp_path / "resolved.yaml")
    assert again.to_dict() == cfg.to_dict()


def test_reference_keys_without_effect_are_announced(tmp_path, capsys):
    config.load(write(tmp_path, "crop: true\nscoremap_dir: test\n"))
    err = capsys.readouterr().err
    assert "crop = True has no effect in fastpose (use crop_size" in err
    assert "scoremap_dir" not in err  # the default value: nothing to announce


def test_a_target_radius_below_the_cell_spacing_is_announced(tmp_path, capsys):
    # 8 x 0.35 = 2.8 px < 8 / sqrt(2) = 5.66 px: a joint between four cell centres would have no positive cell.
    config.load(write(tmp_path, "pos_dist_thresh: 8\nglobal_scale: 0.35\n"))
    err = capsys.readouterr().err
    assert "2.80 px is below stride / sqrt(2) = 5.66 px" in err and "at least 17" in err
    config.load(write(tmp_path, "pos_dist_thresh: 17\nglobal_scale: 0.8452830189\nscale_jitter_lo: 0.85\n"))
    assert "below stride" not in capsys.readouterr().err  # the reference's MPII settings: 12.2 px
