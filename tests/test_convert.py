"""`convert mat` (v5 and v7.3), `convert dlc`, `synth`: counts on real data, every bad-input class, interruption."""

import os
import signal
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import scipy.io

from fastpose.convert import dlc, mat, synth
from fastpose.errors import UserError
from fastpose.shards import ShardDataset, read_manifest, summary

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DLC = SHARED / "deeplabcut" / "Reaching-Mackenzie-2018-08-30"
EXAMPLE = SHARED / "pose-tensorflow" / "dataset_example.mat"
needs_shared = pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is absent (a user's fresh clone)")


def save_v5(path, records):
    """records: (image, [C, H, W], [persons N x 3]) -> a seed dataset.mat (MATLAB v5)."""
    ds = np.empty((1, len(records)), dtype=[("image", object), ("size", object), ("joints", object)])
    for i, (image, size, persons) in enumerate(records):
        cell = np.empty((len(persons), 1), dtype=object)
        for p, rows in enumerate(persons):
            cell[p, 0] = np.asarray(rows, np.float64).reshape(-1, 3)
        ds[0, i] = (image, np.asarray(size, np.float64), cell)
    scipy.io.savemat(path, {"dataset": ds})


def save_v73(path, records):
    """The same as MATLAB -v7.3 writes it: HDF5, column-major arrays, strings as uint16, cells as references."""
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        group = f.create_group("dataset")
        group.attrs["MATLAB_class"] = np.bytes_("struct")
        counter = [0]

        def put(value, cls):
            counter[0] += 1
            d = refs.create_dataset(f"r{counter[0]}", data=value)
            d.attrs["MATLAB_class"] = np.bytes_(cls)
            return d.ref

        fields = {"image": [], "size": [], "joints": []}
        for image, size, persons in records:
            fields["image"].append(put(np.array([[ord(c)] for c in image], np.uint16), "char"))
            fields["size"].append(put(np.asarray(size, np.float64).reshape(3, 1), "double"))
            cells = [put(np.asarray(rows, np.float64).reshape(-1, 3).T, "double") for rows in persons]
            fields["joints"].append(put(np.array(cells, dtype=h5py.ref_dtype).reshape(len(cells), 1), "cell"))
        for name, values in fields.items():
            group.create_dataset(name, data=np.array(values, dtype=h5py.ref_dtype).reshape(len(values), 1))
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: fastpose test HDF5 schema 1.00 .")


def write_images(folder, n, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        h, w = 40 + 3 * i, 50 + 2 * i
        cv2.imwrite(str(folder / f"im{i}.png"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        out.append((f"images/im{i}.png", [3, h, w]))
    return out


def records_for(tmp_path, n=4):
    imgs = write_images(tmp_path / "images", n)
    # entry i: two persons (the reference used only the first); person 1 lacks joint 2
    return [(image, size, [[[0, 1, 2], [1, 10.5, 20], [2, 30, 5]], [[0, 3, 4], [1, 5, 6]]])
            for image, size in imgs]


@pytest.mark.parametrize("save", [save_v5, save_v73], ids=["v5", "v7.3"])
def test_convert_mat_round_trip(tmp_path, save):
    save(tmp_path / "dataset.mat", records_for(tmp_path))
    result = mat.convert(tmp_path / "dataset.mat", tmp_path / "out", num_joints=3, quiet=True)
    assert result["samples"] == {"train": 4}
    ds = ShardDataset(tmp_path / "out")
    s = ds[2]
    assert s.size == (3, 46, 54) and s.image == (tmp_path / "images" / "im2.png").read_bytes()
    np.testing.assert_array_equal(s.joints, [[[1, 2, 2], [10.5, 20, 2], [30, 5, 2]], [[3, 4, 2], [5, 6, 2], [0, 0, 0]]])


@pytest.mark.parametrize("save", [save_v5, save_v73], ids=["v5", "v7.3"])
def test_joint_id_equal_to_num_joints_is_a_user_error_naming_the_entry(tmp_path, save):
    imgs = write_images(tmp_path / "images", 2)
    # Entry 0 uses the largest valid id (2 of 3 joints, 0-based); entry 1 the first id past the end (3).
    save(tmp_path / "d.mat", [(imgs[0][0], imgs[0][1], [[[2, 5, 6]]]),
                              (imgs[1][0], imgs[1][1], [[[0, 1, 1], [3, 5, 6]]])])
    with pytest.raises(UserError, match=r"joint id out of range: 1 entry \[1\], e\.g\. entry 1 person 0 has joint "
                                        r"id 3, num_joints is 3"):
        mat.convert(tmp_path / "d.mat", tmp_path / "out", num_joints=3, quiet=True, workers=1)
    assert not (tmp_path / "out").exists()
    mat.convert(tmp_path / "d.mat", tmp_path / "out", num_joints=3, quiet=True, workers=1, skip_bad=True)
    ds = ShardDataset(tmp_path / "out")
    assert len(ds) == 1 and ds[0].source_index == 0
    np.testing.assert_array_equal(ds[0].joints, [[[0, 0, 0], [0, 0, 0], [5, 6, 2]]])  # id 2 -> the last joint
    # Without --num-joints the largest id + 1 = 4 joints: the same file converts whole.
    assert mat.convert(tmp_path / "d.mat", tmp_path / "all", quiet=True, workers=1)["num_joints"] == 4


def test_relative_image_paths_resolve_under_images_root(tmp_path):
    # The .mat lives apart from the images; its paths "images/im<i>.png" are relative to --images-root (default: the
    # .mat's folder, where they are missing).
    imgs = write_images(tmp_path / "data" / "images", 2)
    (tmp_path / "labels").mkdir()
    save_v5(tmp_path / "labels" / "d.mat", [(image, size, [[[0, 3, 4]]]) for image, size in imgs])
    with pytest.raises(UserError, match=r"missing image: 2 entries \[0, 1\].*labels/images/im0\.png not found"):
        mat.convert(tmp_path / "labels" / "d.mat", tmp_path / "out", num_joints=1, quiet=True, workers=1)
    mat.convert(tmp_path / "labels" / "d.mat", tmp_path / "out", num_joints=1, quiet=True, workers=1,
                images_root=tmp_path / "data")
    ds = ShardDataset(tmp_path / "out")
    assert [ds[i].image for i in range(2)] == [(tmp_path / "data" / "images" / f"im{i}.png").read_bytes()
                                               for i in range(2)]
    assert [ds[i].size for i in range(2)] == [(3, 40, 50), (3, 43, 52)]
    # An absolute path that does not exist (a placeholder from another machine) falls back to its file name there.
    save_v5(tmp_path / "labels" / "abs.mat", [("/elsewhere/im1.png", imgs[1][1], [[[0, 3, 4]]])])
    mat.convert(tmp_path / "labels" / "abs.mat", tmp_path / "abs", num_joints=1, quiet=True, workers=1,
                images_root=tmp_path / "data" / "images")
    assert ShardDataset(tmp_path / "abs")[0].image == (tmp_path / "data" / "images" / "im1.png").read_bytes()


@needs_shared
def test_seed_example_reports_missing_images(tmp_path):
    raw = mat.read_entries(EXAMPLE)
    assert len(raw) == 2 and [len(p) for e in raw for p in e["joints"]] == [14, 9]
    assert mat.max_joint_id(raw) == 13
    with pytest.raises(UserError, match=r"missing image: 2 entries \[0, 1\].*im00005_1.png not found"):
        mat.convert(EXAMPLE, tmp_path / "out", quiet=True)
    assert not (tmp_path / "out").exists()


@needs_shared
def test_seed_example_with_images_provided(tmp_path):
    # Give the example's placeholder paths real images of the declared sizes via --images-root.
    for e in mat.read_entries(EXAMPLE):
        c, h, w = (int(v) for v in e["size"])
        cv2.imwrite(str(tmp_path / Path(e["image"]).name), np.zeros((h, w, 3), np.uint8))
    result = mat.convert(EXAMPLE, tmp_path / "out", images_root=tmp_path, num_joints=14, quiet=True)
    assert result["samples"] == {"train": 2}
    ds = ShardDataset(tmp_path / "out")
    assert (ds[0].joints[0, :, 2] > 0).sum() == 14 and (ds[1].joints[0, :, 2] > 0).sum() == 9
    np.testing.assert_array_equal(ds[1].joints[0, 2], [80, 187, 2])  # the file's first row of entry 2: [2, 80, 187]


@needs_shared
def test_convert_dlc_counts():
    names, skeleton, entries = dlc.read_project(DLC)
    assert names == ["Hand", "Finger1", "Tongue", "Joystick1", "Joystick2"] and skeleton == [[0, 1], [3, 4]]
    assert len(entries) == 55


@needs_shared
def test_convert_dlc_shards(tmp_path):
    dlc.convert(DLC, tmp_path / "out", split="train=0.8,test=0.2", seed=3, quiet=True)
    info = summary(tmp_path / "out")
    assert info["samples"] == 55 and info["splits"]["train"]["samples"] == 44
    per_joint = {k: info["splits"]["train"]["joints_present_per_joint"][k] +
                 info["splits"]["test"]["joints_present_per_joint"][k] for k in names_of(tmp_path / "out")}
    assert per_joint["Tongue"] == 15  # absent in 40 of 55 frames
    heights = sorted({h for s in info["splits"].values() for h in s["image_height"]})
    assert heights == [470, 747]  # two image sizes
    samples = [ds[i] for split in ("train", "test") for ds in [ShardDataset(tmp_path / "out", split)]
               for i in range(len(ds))]
    first = next(s for s in samples if s.source_path.endswith("img005.png"))
    # the CSV's first frame: Hand at (185.2517..., 610.3622...), Tongue empty
    assert first.joints[0, 0].tolist() == pytest.approx([185.25173502386923, 610.3622760638572, 2])
    assert first.joints[0, 2].tolist() == [0, 0, 0]


def names_of(path):
    return read_manifest(path)["joint_names"]


def test_split_is_deterministic(tmp_path):
    save_v5(tmp_path / "d.mat", records_for(tmp_path, 10))
    a = mat.convert(tmp_path / "d.mat", tmp_path / "a", num_joints=3, split="train=0.7,test=0.3", seed=5, quiet=True)
    b = mat.convert(tmp_path / "d.mat", tmp_path / "b", num_joints=3, split="train=0.7,test=0.3", seed=5, quiet=True)
    assert a["samples"] == b["samples"] == {"train": 7, "test": 3}
    pa = [ShardDataset(tmp_path / "a", "test")[i].source_index for i in range(3)]
    pb = [ShardDataset(tmp_path / "b", "test")[i].source_index for i in range(3)]
    assert pa == pb


def bad_dataset(tmp_path):
    """One entry per problem class, plus two good ones."""
    imgs = write_images(tmp_path / "images", 8)
    (tmp_path / "images" / "im3.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    records = [
        (imgs[0][0], imgs[0][1], [[[0, 5, 5]]]),  # good
        ("images/nothere.png", [3, 10, 10], [[[0, 5, 5]]]),  # missing image
        (imgs[2][0], [3, 99, 99], [[[0, 5, 5]]]),  # size mismatch
        (imgs[3][0], imgs[3][1], [[[0, 5, 5]]]),  # unreadable image
        (imgs[4][0], imgs[4][1], [[[7, 5, 5]]]),  # joint id out of range
        (imgs[5][0], imgs[5][1], [[[0, np.nan, 5]]]),  # non-finite
        (imgs[6][0], imgs[6][1], [[[0, 5, 5000]]]),  # far outside
        (imgs[7][0], imgs[7][1], [[[1, 6, 6]]]),  # good
    ]
    save_v5(tmp_path / "bad.mat", records)
    return tmp_path / "bad.mat"


def test_each_bad_input_class_is_reported(tmp_path):
    path = bad_dataset(tmp_path)
    with pytest.raises(UserError) as err:
        mat.convert(path, tmp_path / "out", num_joints=3, quiet=True, workers=1)
    msg = str(err.value)
    for kind, idx in [("missing image", 1), ("size mismatch", 2), ("unreadable image", 3),
                      ("joint id out of range", 4), ("non-finite coordinates", 5), ("joint far outside image", 6)]:
        assert f"{kind}: 1 entry [{idx}]" in msg, kind
    assert "--skip-bad" in msg and not (tmp_path / "out").exists()


def test_skip_bad_records_reasons(tmp_path):
    path = bad_dataset(tmp_path)
    mat.convert(path, tmp_path / "out", num_joints=3, quiet=True, skip_bad=True)
    manifest = read_manifest(tmp_path / "out")
    assert manifest["splits"]["train"]["samples"] == 2
    assert sorted(s["index"] for s in manifest["skipped"]) == [1, 2, 3, 4, 5, 6]
    assert [ShardDataset(tmp_path / "out")[i].source_index for i in range(2)] == [0, 7]


def test_malformed_mat_files(tmp_path):
    scipy.io.savemat(tmp_path / "wrongname.mat", {"data": np.zeros(3)})
    with pytest.raises(UserError, match="no variable 'dataset' \\(found: data\\)"):
        mat.read_entries(tmp_path / "wrongname.mat")
    ds = np.empty((1, 1), dtype=[("image", object), ("size", object)])
    ds[0, 0] = ("a.png", np.array([3, 1, 1.0]))
    scipy.io.savemat(tmp_path / "nofield.mat", {"dataset": ds})
    with pytest.raises(UserError, match="lacks the field\\(s\\) joints"):
        mat.read_entries(tmp_path / "nofield.mat")
    (tmp_path / "garbage.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(UserError, match="not a readable MATLAB file"):
        mat.read_entries(tmp_path / "garbage.mat")
    save_v5(tmp_path / "empty.mat", [])
    with pytest.raises(UserError, match="empty"):
        mat.convert(tmp_path / "empty.mat", tmp_path / "out", num_joints=2, quiet=True)


@pytest.mark.slow
def test_interrupted_convert_leaves_no_complete_dataset(tmp_path, paused_command):
    synth.make_dataset(tmp_path / "s", n=400, seed=1)
    args = ["convert", "mat", tmp_path / "s" / "dataset.mat", "--out", tmp_path / "out", "--samples-per-shard", "20",
            "--workers", "1", "--reencode-jpeg", "90"]
    # The process stops itself as it starts its third shard: shards 0 and 1 are in the temp folder; then the whole
    # process group is killed.
    proc = paused_command("fastpose.shards", "write_shard", 3, args)
    assert [p.name for p in sorted(tmp_path.glob(".out.tmp-*/train/shard-*.h5"))] == ["shard-00000.h5",
                                                                                       "shard-00001.h5"]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "out").exists()
    with pytest.raises(UserError):
        ShardDataset(tmp_path / "out")
    # a new convert cleans up the dead temp folder and succeeds
    mat.convert(tmp_path / "s" / "dataset.mat", tmp_path / "out", num_joints=11, quiet=True, workers=1)
    assert not list(tmp_path.glob(".out.tmp-*")) and len(ShardDataset(tmp_path / "out")) == 400


def test_synth_is_deterministic_and_labelled(tmp_path):
    a = synth.make_dataset(tmp_path / "a", n=5, seed=7)
    b = synth.make_dataset(tmp_path / "b", n=5, seed=7)
    assert (tmp_path / "a/images/img00004.png").read_bytes() == (tmp_path / "b/images/img00004.png").read_bytes()
    ra, rb = mat.read_entries(a), mat.read_entries(b)
    np.testing.assert_array_equal(ra[3]["joints"][0], rb[3]["joints"][0])
    for e in ra:
        rows = e["joints"][0]
        c, h, w = e["size"]
        assert len(rows) >= 8 and (rows[:, 1] <= w - 1).all() and (rows[:, 2] <= h - 1).all()


def test_synth_joint_set_matches_demo_config():
    from fastpose import config

    cfg = config.load(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
    assert cfg.joint_names == synth.JOINT_NAMES and cfg.all_joints == synth.ALL_JOINTS
    assert cfg.skeleton == synth.SKELETON and cfg.num_joints == len(synth.JOINT_NAMES)


def test_config_dataset_mat_is_cached(tmp_path):
    from fastpose import config

    synth.make_dataset(tmp_path / "s", n=6, seed=2)
    cfg = config.load(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
    first = mat.cached_shards(tmp_path / "s" / "dataset.mat", cfg, quiet=True)
    stamp = (first / "manifest.json").stat().st_mtime_ns
    again = mat.cached_shards(tmp_path / "s" / "dataset.mat", cfg, quiet=True)
    assert again == first and (first / "manifest.json").stat().st_mtime_ns == stamp  # reused
    assert read_manifest(first)["joint_names"] == synth.JOINT_NAMES
    os.utime(tmp_path / "s" / "dataset.mat", ns=(1, 1))  # the .mat changed: rebuilt
    mat.cached_shards(tmp_path / "s" / "dataset.mat", cfg, quiet=True)
    assert (first / "manifest.json").stat().st_mtime_ns != stamp
