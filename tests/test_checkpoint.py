"""Snapshots: atomic writes, keep-N, latest by iteration, RNG restore, config round trip, unwrapped model keys."""

import random

import numpy as np
import pytest
import torch

from fastpose import __version__, checkpoint, config
from fastpose.errors import UserError


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
    with pytest.raises(UserError, match="corrupt or truncated"):
        checkpoint.load_snapshot(path)
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "weights.pt")
    with pytest.raises(UserError, match="not a fastpose training snapshot.*init_weights"):
        checkpoint.load_snapshot(tmp_path / "weights.pt")
    ckpt = checkpoint.load_snapshot(_save(tmp_path, 6))
    ckpt["config"]["no_such_key"] = 1
    with pytest.raises(UserError, match="no_such_key"):
        checkpoint.config_from_snapshot(ckpt)
