"""Snapshots: atomic writes, keep-N, latest by iteration, RNG restore, config round trip, unwrapped model keys."""

import dataclasses
import errno
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from fastpose import __version__, checkpoint, config
from fastpose.errors import UserError
from fastpose.model import build_model


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 2, 1)


def _save(out_dir, iteration, model=None, **kwargs):
    model = model or Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    cfg = kwargs.pop("cfg", None) or config.load(None, net_type="resnet_18")
    return checkpoint.save_snapshot(out_dir, iteration, model=model, optimizer=opt, cfg=cfg,
                                    data_position={"epoch": 1, "sample": iteration}, **kwargs)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.conv1.weight.sum().backward()
    opt.step()
    cfg = config.load(None, dataset_type="mpii", net_type="resnet_50", location_refinement=True, batch_size=3,
                      multi_step=[[0.005, 100], [0.001, 200]])
    path = checkpoint.save_snapshot(tmp_path / "run", 120, model=model, optimizer=opt, cfg=cfg,
                                    data_position={"epoch": 2, "sample": 17}, extra={"loss": 0.25})
    assert path == tmp_path / "run" / "snapshot-120.pt"
    ckpt = checkpoint.load_snapshot(path)
    assert ckpt["iteration"] == 120 and ckpt["data_position"] == {"epoch": 2, "sample": 17}
    assert ckpt["extra"] == {"loss": 0.25} and ckpt["fastpose_version"] == __version__
    assert torch.equal(ckpt["model"]["conv1.weight"], model.conv1.weight.detach())
    restored = torch.optim.SGD(Tiny().parameters(), lr=0.1, momentum=0.9)
    restored.load_state_dict(ckpt["optimizer"])
    assert torch.equal(restored.state_dict()["state"][0]["momentum_buffer"], opt.state_dict()["state"][0][
        "momentum_buffer"])
    again = checkpoint.config_from_snapshot(ckpt)
    assert again == cfg
    assert again.num_joints == 14 and again.multi_step == [[0.005, 100.0], [0.001, 200.0]]


def test_wrapper_prefixes_are_stripped(tmp_path):
    class Wrapper(torch.nn.Module):  # stands in for DDP ('module.') around torch.compile ('_orig_mod.')
        def __init__(self, inner, name):
            super().__init__()
            self.add_module(name, inner)

    model = Wrapper(Wrapper(Tiny(), "_orig_mod"), "module")
    assert "module._orig_mod.conv1.weight" in model.state_dict()
    ckpt = checkpoint.load_snapshot(_save(tmp_path, 5, model=model))
    assert sorted(ckpt["model"]) == ["conv1.bias", "conv1.weight"]
    Tiny().load_state_dict(ckpt["model"])  # loads into the bare model


def test_failed_save_leaves_no_snapshot(tmp_path, monkeypatch):
    _save(tmp_path, 10)

    def broken_save(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04half a file")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="No space"):
        _save(tmp_path, 20)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snapshot-10.pt"]
    assert checkpoint.latest_snapshot(tmp_path).name == "snapshot-10.pt"


def test_keep_n_and_latest_is_by_iteration_not_name(tmp_path):
    assert checkpoint.latest_snapshot(tmp_path) is None
    assert checkpoint.latest_snapshot(tmp_path / "missing") is None
    for it in (9, 80, 100, 1000, 200):
        _save(tmp_path, it, max_to_keep=3)
    (tmp_path / "snapshot-99999.pt.tmp").write_bytes(b"")  # not a snapshot name
    (tmp_path / "other-5000.pt").write_bytes(b"")  # another prefix
    names = sorted(p.name for p in tmp_path.glob("snapshot-*.pt"))
    assert names == ["snapshot-100.pt", "snapshot-1000.pt", "snapshot-200.pt"]
    assert checkpoint.latest_snapshot(tmp_path).name == "snapshot-1000.pt"  # lexically "snapshot-200.pt" is last
    assert checkpoint.latest_snapshot(tmp_path, prefix="other").name == "other-5000.pt"
    _save(tmp_path, 2000, prefix="other", max_to_keep=1)  # the snapshot just written stays, even below a stale 5000
    assert sorted(p.name for p in tmp_path.glob("other-*.pt")) == ["other-2000.pt"]


def test_restore_rng_reproduces_draws(tmp_path):
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    ckpt = checkpoint.load_snapshot(_save(tmp_path, 1))
    first = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist())
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    checkpoint.restore_rng(ckpt["rng"])
    assert (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()) == first


def test_bad_snapshots_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        checkpoint.load_snapshot(tmp_path / "snapshot-5.pt")
    path = _save(tmp_path, 5)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"could not be read \(\w+Error: .+\); it is corrupt or truncated"):
        checkpoint.load_snapshot(path)
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "weights.pt")
    with pytest.raises(UserError, match="not a fastpose training snapshot.*init_weights"):
        checkpoint.load_snapshot(tmp_path / "weights.pt")
    ckpt = checkpoint.load_snapshot(_save(tmp_path, 6))
    ckpt["config"]["no_such_key"] = 1
    with pytest.raises(UserError, match="no_such_key"):
        checkpoint.config_from_snapshot(ckpt)


# Each function's parts with their exact values and messages; the networks are resnet_18 at 1/16 width (57k weights).
def _cfg(**extra):
    return config.load(None, **{"net_type": "resnet_18", "backbone_width": 1 / 16, "num_joints": 3, **extra})


def test_snapshot_names_and_listing(tmp_path):
    assert checkpoint.snapshot_path("d", 7) == Path("d/snapshot-7.pt")
    assert checkpoint.snapshot_path(tmp_path, 7, "run") == tmp_path / "run-7.pt"
    for name in ("snapshot-3.pt", "snapshot-20.pt", "snapshot-x.pt", "snapshot-4.pt.bak", "my.snapshot-6.pt",
                 "snapshot-7.pt", "a.b-1.pt", "axb-2.pt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "snapshot-50.pt").mkdir()  # a folder is no snapshot
    assert checkpoint.list_snapshots(tmp_path) == [(3, tmp_path / "snapshot-3.pt"), (7, tmp_path / "snapshot-7.pt"),
                                                   (20, tmp_path / "snapshot-20.pt")]
    assert checkpoint.list_snapshots(tmp_path, "a.b") == [(1, tmp_path / "a.b-1.pt")]  # the dot is no wildcard
    assert checkpoint.list_snapshots(tmp_path / "missing") == [] and checkpoint.list_snapshots(tmp_path / "a.b-1.pt")\
        == []
    assert checkpoint.latest_snapshot(tmp_path) == tmp_path / "snapshot-20.pt"


def test_unwrapped_state_dict_strips_prefixes_in_any_order():
    class Wrapper(torch.nn.Module):
        def __init__(self, inner, name):
            super().__init__()
            self.add_module(name, inner)

    model = Wrapper(Wrapper(Wrapper(Tiny(), "module"), "module"), "_orig_mod")  # _orig_mod.module.module.conv1...
    state = checkpoint.unwrapped_state_dict(model)
    assert sorted(state) == ["conv1.bias", "conv1.weight"]
    assert state["conv1.weight"] is not None and torch.equal(state["conv1.bias"], model.state_dict()[
        "_orig_mod.module.module.conv1.bias"])


def test_rng_state_keys_and_a_cuda_state_without_cuda():
    state = checkpoint.rng_state()
    assert sorted(state) == (["cuda", "numpy", "python", "torch"] if torch.cuda.is_available()
                             else ["numpy", "python", "torch"])
    if not torch.cuda.is_available():  # a snapshot from a GPU machine resumes here: its CUDA state is left alone
        torch.manual_seed(5)
        checkpoint.restore_rng({**state, "cuda": [torch.zeros(8, dtype=torch.uint8)]})
        assert torch.get_rng_state().equal(state["torch"])


def test_write_snapshot_payload_and_full_disk(tmp_path, monkeypatch):
    cfg = _cfg()
    path = checkpoint.write_snapshot(tmp_path / "one.pt", np.int64(3), model=Tiny(), optimizer=None, cfg=cfg)
    ckpt = checkpoint.load_snapshot(path)
    assert type(ckpt["iteration"]) is int and ckpt["iteration"] == 3
    assert ckpt["optimizer"] is None and ckpt["data_position"] == {} and ckpt["extra"] == {}
    assert ckpt["config"] == cfg.to_dict() and sorted(ckpt["rng"]) == sorted(checkpoint.rng_state())
    assert os.listdir(tmp_path) == ["one.pt"]

    def full(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(UserError) as info:
        checkpoint.write_snapshot(tmp_path / "two.pt", 4, model=Tiny(), optimizer=None, cfg=cfg)
    assert str(info.value) == (f"Could not write snapshot {tmp_path / 'two.pt'} at iteration 4 (OSError: [Errno 28] "
                               f"No space left on device); nothing partial was left. Free space in {tmp_path}, then "
                               f"run the command again.")
    with pytest.raises(UserError, match=r"nothing partial was left\. Lower the batch\.$"):
        checkpoint.write_snapshot(tmp_path / "two.pt", 4, model=Tiny(), optimizer=None, cfg=cfg,
                                  advice="Lower the batch.")
    with pytest.raises(UserError, match=r"Free space in .* \(or lower max_to_keep\), then continue with `fastpose "
                                        r"train CONFIG --resume` from the newest snapshot there\.$"):
        _save(tmp_path / "run", 1, cfg=cfg)
    assert os.listdir(tmp_path) == ["one.pt", "run"] and os.listdir(tmp_path / "run") == []

    def interrupted(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.write_snapshot(tmp_path / "three.pt", 5, model=Tiny(), optimizer=None, cfg=cfg)
    assert sorted(os.listdir(tmp_path)) == ["one.pt", "run"]


def test_max_to_keep_zero_keeps_all(tmp_path):
    for it in (1, 2, 3):
        _save(tmp_path, it, max_to_keep=0)
    _save(tmp_path, 4, max_to_keep=2)
    assert [i for i, _ in checkpoint.list_snapshots(tmp_path)] == [3, 4]


def test_load_snapshot_messages(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError) as info:
        checkpoint.load_snapshot(tmp_path / "empty")
    assert str(info.value) == (f"Snapshot {tmp_path / 'empty'} is a folder. Pass a snapshot-<iteration>.pt file; "
                               f"{tmp_path / 'empty'} holds none (train first).")
    _save(tmp_path / "run", 2)
    _save(tmp_path / "run", 10)
    with pytest.raises(UserError) as info:
        checkpoint.load_snapshot(tmp_path / "run")
    assert str(info.value).endswith(f"file, e.g. its newest, {tmp_path / 'run' / 'snapshot-10.pt'}.")
    torch.save({"iteration": 1, "model": {}, "optimizer": None, "data_position": {}}, tmp_path / "partial.pt")
    with pytest.raises(UserError, match=r"partial\.pt is not a fastpose training snapshot \(it lacks rng, config\)\. "
                                        r"Pass a snapshot-<iteration>\.pt"):
        checkpoint.load_snapshot(tmp_path / "partial.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(UserError, match=r"\(it lacks iteration, model, optimizer, rng, data_position, config\)"):
        checkpoint.load_snapshot(tmp_path / "list.pt")


def test_config_from_snapshot_messages():
    values = _cfg().to_dict()
    assert checkpoint.config_from_snapshot({"config": values}) == _cfg()
    for saved, message in [
            ([1], r"^the snapshot: the saved config is list, not a mapping of keys"),
            ({1: 2}, r"^the snapshot: the saved config is dict, not a mapping of keys"),
            ({**values, "zz": 1, "yy": 2}, rf"^s\.pt: the saved config has keys this fastpose {__version__} does not "
                                           rf"know: zz, yy \(written by fastpose \?\)"),
            ({**values, "num_joints": 0}, r"^s\.pt: the saved config has num_joints = 0, but a trained network"),
            ({k: v for k, v in values.items() if k != "num_joints"}, r"num_joints = None, but"),
            ({**values, "net_type": "resnet_7"}, r"^s\.pt: the saved config does not load: .*resnet_7.* The snapshot "
                                                 r"is damaged or from another fastpose version \(\?\); use another"),
    ]:
        path = "the snapshot" if message.startswith("^the") else "s.pt"
        with pytest.raises(UserError, match=message):
            checkpoint.config_from_snapshot({"config": saved}, *([path] if path == "s.pt" else []))
    with pytest.raises(UserError, match=r"\(written by fastpose 0\.0\.1\)"):
        checkpoint.config_from_snapshot({"config": {**values, "zz": 1}, "fastpose_version": "0.0.1"}, "s.pt")
    with pytest.raises(UserError, match=r"from another fastpose version \(0\.0\.1\)"):
        checkpoint.config_from_snapshot({"config": {**values, "net_type": "x"}, "fastpose_version": "0.0.1"}, "s.pt")



def test_set_overrides_apply_on_the_snapshots_config():
    """`--set` where a snapshot brings the config (eval --checkpoint, analyze SNAPSHOT.pt): it beats the saved value,
    leaves the rest as saved, and a bad --set is named as the user's, not as a damaged snapshot (the commands:
    tests/test_analyze.py, tests/test_eval_predict.py)."""
    values = _cfg(global_scale=0.8, batch_size=4).to_dict()
    cfg = checkpoint.config_from_snapshot({"config": values}, "s.pt", ["global_scale=0.5", "precision=fp32"])
    assert (cfg.global_scale, cfg.precision, cfg.batch_size, cfg.num_joints) == (0.5, "fp32", 4, 3)
    assert checkpoint.config_from_snapshot({"config": values}, "s.pt", []) == _cfg(global_scale=0.8, batch_size=4)
    with pytest.raises(UserError, match=r"--set.*'global_scal'.*global_scale") as e:
        checkpoint.config_from_snapshot({"config": values}, "s.pt", ["global_scal=0.5"])
    assert "damaged" not in str(e.value)
    with pytest.raises(UserError, match=r"^s\.pt: the saved config does not load"):  # the saved config first
        checkpoint.config_from_snapshot({"config": {**values, "net_type": "resnet_7"}}, "s.pt", ["net_type=resnet_18"])

def test_bind_snapshot_joints_fills_and_checks():
    trained = _cfg(joint_names=["a", "b", "c"], all_joints=[[0], [1, 2]], all_joints_names=["a", "bc"],
                   skeleton=[[0, 1], [1, 2]]).to_dict()
    ckpt = {"config": trained}
    open_cfg = config.load(None, net_type="resnet_18")
    cfg = checkpoint.bind_snapshot_joints(open_cfg, ckpt, "s.pt")
    assert (cfg.num_joints, cfg.joint_names, cfg.all_joints, cfg.all_joints_names, cfg.skeleton) == (
        3, ["a", "b", "c"], [[0], [1, 2]], ["a", "bc"], [[0, 1], [1, 2]])
    assert open_cfg.num_joints == 0 and open_cfg.joint_names == []  # the caller's config is left as it was
    cfg.all_joints[1].append(9)
    assert trained["all_joints"] == [[0], [1, 2]]  # copies, not the snapshot's lists
    same = checkpoint.bind_snapshot_joints(_cfg(joint_names=["a", "b", "c"]), ckpt, "s.pt")
    assert same.all_joints == [[0], [1, 2]]
    for key, value in (("num_joints", 4), ("joint_names", ["x", "y", "z"]), ("all_joints", [[0, 1], [2]])):
        with pytest.raises(UserError) as info:
            checkpoint.bind_snapshot_joints(dataclasses.replace(open_cfg, **{key: value}), ckpt, "s.pt")
        assert str(info.value).startswith(f"The config sets {key} = {value}, but s.pt was trained with {key} = "
                                          f"{trained[key]}. Remove {key} from the config")
    with pytest.raises(UserError, match=r"^s\.pt: the snapshot holds no saved config \(found NoneType\)"):
        checkpoint.bind_snapshot_joints(open_cfg, {}, "s.pt")
    for k in (0, -1, True, "3", None):
        with pytest.raises(UserError, match=rf"^s\.pt: the snapshot's saved config has num_joints = {k!r}, not a "):
            checkpoint.bind_snapshot_joints(open_cfg, {"config": {**trained, "num_joints": k}}, "s.pt")
    assert checkpoint.bind_snapshot_joints(open_cfg, {"config": {**trained, "num_joints": 1, "joint_names": [],
                                                                 "all_joints": [], "all_joints_names": [],
                                                                 "skeleton": []}}, "s.pt").num_joints == 1


def test_bind_snapshot_network_takes_the_trained_backbone():
    plain = config.load(None, net_type="resnet_18", num_joints=3)  # backbone_layout auto, backbone_width 1
    cfg = checkpoint.bind_snapshot_network(plain, {"config": {**plain.to_dict(), "backbone_width": 0.5}}, "s.pt")
    assert (cfg.backbone_layout, cfg.backbone_width) == ("torchvision", 0.5) and plain.backbone_width == 1.0
    for saved in ({"num_joints": 3}, None):  # older than the keys, or no config: torchvision at width 1
        cfg = checkpoint.bind_snapshot_network(plain, {"config": saved}, "s.pt")
        assert (cfg.backbone_layout, cfg.backbone_width) == ("torchvision", 1.0) and plain.backbone_layout == "auto"
    assert checkpoint.bind_snapshot_network(_cfg(backbone_width=0.5), {"config": {"backbone_width": 0.5}},
                                            "s.pt").backbone_width == 0.5
    with pytest.raises(UserError) as info:
        checkpoint.bind_snapshot_network(_cfg(backbone_width=0.25), {"config": {"backbone_width": 0.5}}, "s.pt")
    assert str(info.value) == ("The config sets backbone_width = 0.25, but s.pt was trained with backbone_width = "
                               "0.5: the weights belong to that network. Remove backbone_width from the config (the "
                               "snapshot brings it), or pass a snapshot trained with backbone_width = 0.25.")
    slim = config.load(None, net_type="resnet_50", num_joints=3, backbone_layout="slim")
    with pytest.raises(UserError, match=r"^The config sets backbone_layout = slim, but s\.pt was trained with "
                                        r"backbone_layout = torchvision:"):
        checkpoint.bind_snapshot_network(slim, {"config": {}}, "s.pt")
    assert checkpoint.bind_snapshot_network(slim, {"config": {"backbone_layout": "slim"}}, "s.pt").backbone_layout \
        == "slim"


def test_load_model_binds_and_names_the_mismatch(tmp_path):
    cfg = _cfg(location_refinement=True)
    torch.manual_seed(0)
    model = build_model(cfg)
    path = _save(tmp_path, 7, model=model, cfg=cfg)
    loaded, got = checkpoint.load_model(path, torch.device("cpu"))
    assert not loaded.training and got.backbone_layout == "torchvision" and got.num_joints == 3
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    given = config.load(None, net_type="resnet_18", location_refinement=True)
    loaded, got = checkpoint.load_model(path, torch.device("cpu"), given)
    assert got.num_joints == 3 and got.backbone_width == 1 / 16  # both taken from the snapshot
    assert given.num_joints == 0 and not loaded.training
    with pytest.raises(UserError) as info:
        checkpoint.load_model(path, torch.device("cpu"), config.load(None, net_type="resnet_18",
                                                                     location_refinement=False))
    assert str(info.value) == (
        f"{path}: its weights do not fit the network of the config (net_type resnet_18, 3 joints, "
        f"location_refinement False): 2 snapshot keys the config's network lacks (e.g. locref.deconv.bias). Evaluate "
        f"with the config the snapshot was trained with (leave out the config argument to use the one stored in the "
        f"snapshot).")
    ckpt = checkpoint.load_snapshot(path)
    ckpt["model"]["part.deconv.weight"] = ckpt["model"]["part.deconv.weight"][:, :2]  # (32, 2, 3, 3)
    ckpt["model"].pop("part.deconv.bias")
    torch.save(ckpt, tmp_path / "cut.pt")
    with pytest.raises(UserError, match=r"location_refinement True\): part\.deconv\.weight is \(32, 2, 3, 3\) in the "
                                        r"snapshot, \(32, 3, 3, 3\) for the config; 1 keys of the config's network "
                                        r"the snapshot lacks \(e\.g\. part\.deconv\.bias\)\. Evaluate"):
        checkpoint.load_model(tmp_path / "cut.pt", torch.device("cpu"))
    ckpt["model"] = [1]
    torch.save(ckpt, tmp_path / "list.pt")
    with pytest.raises(UserError, match=r"list\.pt: its model weights are a list, not a state_dict: the snapshot is "
                                        r"damaged\."):
        checkpoint.load_model(tmp_path / "list.pt", torch.device("cpu"))


def test_failures_before_the_temp_file_exists(tmp_path, monkeypatch):
    def full(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")  # before writing anything

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(UserError, match="nothing partial was left"):
        checkpoint.write_snapshot(tmp_path / "a.pt", 1, model=Tiny(), optimizer=None, cfg=_cfg())

    def interrupted(obj, f, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.write_snapshot(tmp_path / "a.pt", 1, model=Tiny(), optimizer=None, cfg=_cfg())
    assert os.listdir(tmp_path) == []


def test_save_snapshot_folders_and_the_default_keep(tmp_path):
    kept = []
    for it in range(1, 8):
        _save(tmp_path / "new" / "run", it)  # parent folders made as needed
        kept.append([i for i, _ in checkpoint.list_snapshots(tmp_path / "new" / "run")])
    # (a negative slice end once deleted all but the newest others while fewer than 4 were there: [1, 2, 3] -> [3, 4])
    assert kept[:5] == [[1], [1, 2], [1, 2, 3], [1, 2, 3, 4], [1, 2, 3, 4, 5]]
    assert [i for i, _ in checkpoint.list_snapshots(tmp_path / "new" / "run")] == [3, 4, 5, 6, 7]  # keeps 5
    for it in (1, 2, 3):
        _save(tmp_path / "all", it, max_to_keep=0)
    assert [i for i, _ in checkpoint.list_snapshots(tmp_path / "all")] == [1, 2, 3]


def test_binding_messages_name_the_snapshot(tmp_path):
    with pytest.raises(UserError, match=r"^s\.pt: the snapshot holds no saved config \(found list\)"):
        checkpoint.bind_snapshot_joints(_cfg(), {"config": [1]}, "s.pt")
    trained = {"config": _cfg(skeleton=[[1, 2]], all_joints_names=["x", "y", "z"], all_joints=[[0], [1], [2]])
               .to_dict()}
    own = checkpoint.bind_snapshot_joints(config.load(None, skeleton=[[0, 1]]), trained, "s.pt")
    assert own.skeleton == [[0, 1]] and own.all_joints_names == ["x", "y", "z"]  # what the config sets stays
    with pytest.raises(UserError, match=r"^config \+ s\.pt: skeleton contains joint id 5 in \[0, 5\], but "
                                                               r"num_joints is 3"):
        checkpoint.bind_snapshot_joints(config.load(None, skeleton=[[0, 5]]), trained, "s.pt")
    with pytest.raises(UserError, match=r"^config \+ s\.pt: backbone_layout = 'slim' is not allowed"):
        checkpoint.bind_snapshot_network(_cfg(), {"config": {"backbone_layout": "slim", "backbone_width": 1 / 16}},
                                         "s.pt")
    path = _save(tmp_path, 3, cfg=_cfg())
    ckpt = checkpoint.load_snapshot(path)
    with pytest.raises(UserError, match=rf"^The config sets num_joints = 4, but {path} was trained with num_joints"):
        checkpoint.load_model(path, torch.device("cpu"), config.load(None, num_joints=4))
    with pytest.raises(UserError, match=rf"^The config sets backbone_width = 0.25, but {path} was trained with"):
        checkpoint.load_model(path, torch.device("cpu"), config.load(None, backbone_width=0.25))
    ckpt["config"]["zz"] = 1
    torch.save(ckpt, tmp_path / "unknown.pt")
    with pytest.raises(UserError, match=rf"^{tmp_path / 'unknown.pt'}: the saved config has keys"):
        checkpoint.load_model(tmp_path / "unknown.pt", torch.device("cpu"))


def test_load_model_layout_and_the_first_two_shape_mismatches(tmp_path):
    for last in (True, False):
        cfg = _cfg(channels_last=last, location_refinement=True)
        path = _save(tmp_path / str(last), 1, model=build_model(cfg), cfg=cfg)
        loaded, _ = checkpoint.load_model(path, torch.device("cpu"))
        weight = loaded.state_dict()["conv1.weight"]  # (64, 3, 7, 7)
        assert weight.is_contiguous(memory_format=torch.channels_last) == last and weight.is_contiguous() != last
    ckpt = checkpoint.load_snapshot(path)
    for key, cut in (("part.deconv.weight", (slice(None), slice(0, 2))), ("part.deconv.bias", slice(0, 2)),
                     ("locref.deconv.bias", slice(0, 4))):
        ckpt["model"][key] = ckpt["model"][key][cut]
    torch.save(ckpt, tmp_path / "three.pt")
    with pytest.raises(UserError, match=r"\): part\.deconv\.weight is \(32, 2, 3, 3\) in the snapshot, \(32, 3, 3, 3\) "
                                        r"for the config; part\.deconv\.bias is \(2,\) in the snapshot, \(3,\) for the "
                                        r"config\. Evaluate"):
        checkpoint.load_model(tmp_path / "three.pt", torch.device("cpu"))
