"""Shard format: round trip of bytes and joints, manifest, checksums, atomic writes."""

import json

import cv2
import h5py
import numpy as np
import pytest

from fastpose import shards
from fastpose.errors import UserError
from fastpose.shards import Sample, ShardDataset, ShardWriter


def make_samples(n, k=5, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = int(rng.integers(20, 40)), int(rng.integers(20, 40))
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        ok, buf = cv2.imencode(".png", img)
        p = int(rng.integers(0, 4))  # 0..3 persons, including none
        joints = rng.uniform(0, 20, (p, k, 3)).astype(np.float32)
        joints[..., 2] = rng.integers(0, 3, (p, k))
        out.append(Sample(image=buf.tobytes(), image_format="png", size=(3, h, w), joints=joints,
                          head_box=rng.uniform(0, 9, (p, 4)).astype(np.float32), transform=(2, 0, 1, 0, 2, 3),
                          source_index=i, source_path=f"img{i}.png", meta={"i": i}))
    return out


def test_round_trip_bytes_and_joints_identical(tmp_path):
    samples = make_samples(23)
    with ShardWriter(tmp_path / "ds", 5, samples_per_shard=10) as w:
        for i, s in enumerate(samples):
            w.add(s, "train" if i % 4 else "test")
        w.close()
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["splits"]["train"]["samples"] == 17 and manifest["splits"]["test"]["samples"] == 6
    assert [s["samples"] for s in manifest["splits"]["train"]["shards"]] == [10, 7]
    train = ShardDataset(tmp_path / "ds", "train")
    originals = [s for i, s in enumerate(samples) if i % 4]
    assert len(train) == 17
    for i in (0, 9, 10, 16):  # across the shard boundary
        got, want = train[i], originals[i]
        assert got.image == want.image and got.size == want.size and got.meta == want.meta
        np.testing.assert_array_equal(got.joints, want.joints)
        np.testing.assert_array_equal(got.head_box, want.head_box)
        assert got.transform == (2, 0, 1, 0, 2, 3) and got.source_path == want.source_path
        assert np.isnan(got.person_box).all() and (got.person_id == -1).all()
    assert shards.verify(tmp_path / "ds") == []
    # readable with plain h5py
    with h5py.File(tmp_path / "ds" / "train" / "shard-00000.h5") as f:
        assert f["image"][0].tobytes() == originals[0].image
        assert f["joints"].shape[1:] == (5, 3)


def test_dataset_is_picklable_and_summary(tmp_path):
    import pickle

    with ShardWriter(tmp_path / "ds", 5) as w:
        for s in make_samples(6):
            w.add(s)
        w.close()
    ds = ShardDataset(tmp_path / "ds")
    ds.image_bytes(0)  # opens a handle
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.image_bytes(3) == ds.image_bytes(3)
    summary = shards.summary(tmp_path / "ds")
    joints = np.concatenate([s.joints for s in make_samples(6)])
    assert summary["samples"] == 6 and summary["persons"] == len(joints)
    assert summary["joints_present"] == int((joints[..., 2] > 0).sum())


def test_checksum_mismatch_is_reported(tmp_path):
    with ShardWriter(tmp_path / "ds", 5) as w:
        for s in make_samples(3):
            w.add(s)
        w.close()
    path = tmp_path / "ds" / "train" / "shard-00000.h5"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    assert "sha256 differs" in shards.verify(tmp_path / "ds")[0]


def test_exception_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path / "ds", 5) as w:
            w.add(make_samples(1)[0])
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_missing_manifest_is_explained(tmp_path):
    (tmp_path / "ds" / "train").mkdir(parents=True)
    (tmp_path / "ds" / "train" / "shard-00000.h5").write_bytes(b"")
    with pytest.raises(UserError, match="no manifest.json.*interrupted"):
        ShardDataset(tmp_path / "ds")


def test_existing_output_needs_overwrite(tmp_path):
    (tmp_path / "ds").mkdir()
    with pytest.raises(UserError, match="already exists.*--overwrite"):
        ShardWriter(tmp_path / "ds", 5)
