"""Property-based fuzzing of the files fastpose reads besides the converters' sources: config YAML, shards (HDF5 +
manifest.json) and snapshots (.pt). Each generated file either loads or ends in a one-paragraph UserError naming the
file; never another exception. Found crashes are fixed `@example`s. Profiles: tests/conftest.py.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fastpose import config as config_mod
from fastpose.checkpoint import bind_snapshot_joints, config_from_snapshot, load_model, load_snapshot
from fastpose.config import FIELDS
from fastpose.errors import UserError
from fastpose.shards import Sample, ShardDataset, ShardWriter, summary, verify

K = 2


def _one_paragraph(e: UserError, *names: str) -> None:
    text = str(e)
    assert text and "\n" not in text.strip() and "Traceback" not in text, text
    assert any(n in text for n in names), text


# ------------------------------------------------------------------------------------------------------ config YAML
json_values = st.recursive(st.none() | st.booleans() | st.integers(-10, 10**6) | st.floats(allow_nan=True)
                           | st.text(max_size=6),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                       max_size=2), max_leaves=6)
documents = st.one_of(
    st.dictionaries(st.sampled_from(sorted(FIELDS)), json_values, max_size=4),  # random types for real keys
    st.dictionaries(st.sampled_from(sorted(FIELDS)) | st.text(max_size=8), json_values, max_size=3),  # unknown keys
    json_values,  # non-mapping documents
)


@given(doc=documents, raw=st.sampled_from(["", "yaml", "bytes"]))
@example(doc={"multi_step": [[0.1]]}, raw="yaml")  # an entry with one number: len check, then step[1]
@example(doc={"multi_step": [[0.1, 5, 7]]}, raw="yaml")
@example(doc={"crop_size": [1]}, raw="yaml")
@example(doc={"num_joints": 2, "all_joints": [[]]}, raw="yaml")
@example(doc={"mean_pixel": [float("nan")] * 3}, raw="yaml")
@example(doc={"stride": 0}, raw="yaml")
@example(doc={"num_joints": 2, "skeleton": [[0]]}, raw="yaml")
@example(doc={"dataset_type": "mpii", "all_joints": [[0, 1, 2]]}, raw="yaml")
def test_fuzz_config_yaml(tmp_path_factory, doc, raw):
    path = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp())) / "pose_cfg.yaml"
    if raw == "bytes":
        path.write_bytes(b"\xff\xfe" + json.dumps(doc, default=str).encode("utf-16-le"))
    else:
        path.write_text("" if raw == "" else yaml.safe_dump(doc))
    try:
        cfg = config_mod.load(path)
    except UserError as e:
        _one_paragraph(e, str(path))
        return
    # What loads is a valid config: saved and loaded back, it is the same.
    cfg.save(path)
    assert config_mod.load(path) == cfg


@given(key=st.sampled_from(sorted(FIELDS)), value=json_values)
def test_fuzz_config_set(key, value):
    """--set key=value with a random YAML value: a Config or a UserError naming the key."""
    try:
        config_mod.load(None, [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}"])
    except UserError as e:
        _one_paragraph(e, key, "--set")


# ---------------------------------------------------------------------------------------------------------- shards
@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    """3 samples in 2 shards of split train (2 + 1), K = 2, one sample with two persons."""
    root = tmp_path_factory.mktemp("fuzzshards") / "shards"
    with ShardWriter(root, K, ["a", "b"], samples_per_shard=2) as writer:
        for i in range(3):
            ok, png = cv2.imencode(".png", np.full((8, 10, 3), 40 * i, np.uint8))
            joints = np.full((2 if i == 1 else 1, K, 3), 2.0, np.float32)
            writer.add(Sample(image=png.tobytes(), image_format="png", size=(3, 8, 10), joints=joints,
                              meta={"i": i}), split="train")
        writer.close()
    return root


def _read_all(root: Path) -> None:
    """What `fastpose info --verify`, eval and the loaders read: checksums, the summary, every sample."""
    verify(root)
    summary(root)
    ds = ShardDataset(root, "train")
    for i in range(len(ds)):
        sample = ds[i]
        assert sample.joints.shape[1:] == (K, 3)
        ds.meta(i)
    ds.close()


damage = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, 1), st.floats(0, 1), st.just(0)),
    st.tuples(st.just("flip"), st.integers(0, 1), st.floats(0, 1), st.integers(0, 7)),
    st.tuples(st.just("zero"), st.integers(0, 1), st.floats(0, 1), st.integers(1, 512)),
)


@given(damages=st.lists(damage, min_size=1, max_size=4))
@example(damages=[("truncate", 0, 0.5, 0)])
@example(damages=[("zero", 1, 0.0, 512)])  # the superblock gone: not HDF5 any more
def test_fuzz_shard_bytes(dataset_dir, damages):
    root = Path(tempfile.mkdtemp(dir=dataset_dir.parent)) / "shards"
    shutil.copytree(dataset_dir, root)
    for kind, shard, where, arg in damages:
        path = root / "train" / f"shard-{shard:05d}.h5"
        data = bytearray(path.read_bytes())
        if not data:
            continue
        at = int(where * (len(data) - 1))
        if kind == "truncate":
            data = data[:at]
        elif kind == "flip":
            data[at] ^= 1 << arg
        else:
            data[at:at + arg] = bytes(len(data[at:at + arg]))
        path.write_bytes(bytes(data))
    try:
        _read_all(root)
    except UserError as e:
        _one_paragraph(e, str(root))


MANIFEST_KEYS = ("num_joints", "joint_names", "all_joints", "skeleton", "splits", "format", "version")


@given(key=st.sampled_from(MANIFEST_KEYS), value=json_values | st.just("<delete>"),
       shard_key=st.sampled_from(["file", "samples", "sha256", "<none>"]), shard_value=json_values)
@example(key="num_joints", value="<delete>", shard_key="<none>", shard_value=None)
@example(key="splits", value={"train": {}}, shard_key="<none>", shard_value=None)
@example(key="joint_names", value=["a"], shard_key="<none>", shard_value=None)
@example(key="all_joints", value=[[5]], shard_key="<none>", shard_value=None)
@example(key="num_joints", value=3, shard_key="<none>", shard_value=None)
@example(key="version", value=1, shard_key="samples", shard_value=5)
@example(key="version", value=1, shard_key="file", shard_value=None)
def test_fuzz_manifest(dataset_dir, key, value, shard_key, shard_value):
    root = Path(tempfile.mkdtemp(dir=dataset_dir.parent)) / "shards"
    shutil.copytree(dataset_dir, root)
    manifest = json.loads((root / "manifest.json").read_text())
    if value == "<delete>":
        del manifest[key]
    else:
        manifest[key] = value
    if shard_key != "<none>" and isinstance(manifest.get("splits"), dict) and "train" in manifest["splits"]:
        manifest["splits"]["train"]["shards"][0][shard_key] = shard_value
    (root / "manifest.json").write_text(json.dumps(manifest))
    try:
        _read_all(root)
    except UserError as e:
        _one_paragraph(e, str(root))


# -------------------------------------------------------------------------------------------------------- snapshots
class Blob(bytes):
    """The snapshot's bytes, shown as a short name in hypothesis' reports."""

    def __repr__(self) -> str:
        return f"<snapshot, {len(self)} bytes>"


@pytest.fixture(scope="module")
def snapshot_bytes(tmp_path_factory) -> bytes:
    """A snapshot as save_snapshot writes it, with a stand-in model state (the fuzzed part is the file and config)."""
    cfg = config_mod.load(None, num_joints=K, joint_names=["a", "b"], net_type="resnet_18")
    payload = {"iteration": 3, "model": {"w": torch.arange(6.0)}, "optimizer": None, "rng": {}, "data_position": {},
               "config": cfg.to_dict(), "fastpose_version": "0.1.0", "extra": {}}
    path = tmp_path_factory.mktemp("snap") / "snapshot-3.pt"
    torch.save(payload, path)
    return Blob(path.read_bytes())


def _load_and_bind(path: Path) -> None:
    ckpt = load_snapshot(path)
    cfg = config_from_snapshot(ckpt, path)
    assert cfg.num_joints == K
    bound = bind_snapshot_joints(config_mod.load(None), ckpt, path)
    assert bound.num_joints == K


@given(damages=st.lists(st.tuples(st.sampled_from(["truncate", "flip"]), st.floats(0, 1), st.integers(0, 7)),
                        min_size=1, max_size=3))
@example(damages=[("truncate", 0.5, 0)])
def test_fuzz_snapshot_bytes(snapshot_bytes, tmp_path_factory, damages):
    data = bytearray(snapshot_bytes)
    for kind, where, bit in damages:
        if not data:
            break
        at = int(where * (len(data) - 1))
        if kind == "truncate":
            data = data[:at]
        else:
            data[at] ^= 1 << bit
    path = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp())) / "snapshot-3.pt"
    path.write_bytes(bytes(data))
    try:
        _load_and_bind(path)
    except UserError as e:
        _one_paragraph(e, str(path))


@given(key=st.sampled_from(["config", "model", "iteration"] + [f"config.{k}" for k in
                                                              ("num_joints", "joint_names", "all_joints", "net_type",
                                                               "skeleton", "multi_step", "stride")]),
       value=json_values | st.just("<delete>"))
@example(key="config", value=[1, 2])
@example(key="config.num_joints", value="<delete>")
@example(key="config.num_joints", value=0)
@example(key="config.joint_names", value=["a"])
@example(key="config.num_joints", value=True)
def test_fuzz_snapshot_fields(snapshot_bytes, tmp_path_factory, key, value):
    folder = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    (folder / "orig.pt").write_bytes(snapshot_bytes)
    ckpt = torch.load(folder / "orig.pt", weights_only=False)
    where, _, sub = key.partition(".")
    target = ckpt[where] if sub else ckpt
    name = sub or where
    if value == "<delete>":
        target.pop(name, None)
    else:
        target[name] = value
    path = folder / "snapshot-3.pt"
    torch.save(ckpt, path)
    try:
        _load_and_bind(path)
    except UserError as e:
        _one_paragraph(e, str(path), "snapshot")


@pytest.mark.slow
@settings(settings.get_profile("fuzz-long"))
@given(doc=documents)
def test_fuzz_config_yaml_long(tmp_path_factory, doc):
    path = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp())) / "pose_cfg.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        config_mod.load(path)
    except UserError as e:
        _one_paragraph(e, str(path))


def test_snapshot_weights_that_are_no_state_dict(snapshot_bytes, tmp_path):
    """The model half of test_fuzz_snapshot_fields (which stops at the config, as building a network per example is
    slow): a list as the weights was a TypeError from load_state_dict."""
    (tmp_path / "orig.pt").write_bytes(snapshot_bytes)
    ckpt = torch.load(tmp_path / "orig.pt", weights_only=False)
    ckpt["model"] = [1, 2]
    torch.save(ckpt, tmp_path / "snapshot-3.pt")
    with pytest.raises(UserError, match=r"snapshot-3.pt: its model weights are a list, not a state_dict"):
        load_model(tmp_path / "snapshot-3.pt", torch.device("cpu"))
