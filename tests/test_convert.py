"""`convert mat` (v5 and v7.3), `convert dlc`, `synth`: counts on real data, every bad-input class, interruption."""

import os
import signal
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import scipy.io

from fastpose import config as config_mod
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
    assert msg.startswith(f"{path}: 6 bad entries (entry indices are 0-based).")
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


# The seed reader's parts, value by value, with the exact messages a user reads (per entry, or for the file).
def test_mat_kind_names_what_a_value_is():
    assert mat._kind(mat.Unreadable("a struct")) == "a struct" and repr(mat.Unreadable("x y")) == "x y"
    assert mat._kind("abc") == "text" and mat._kind([1]) == "a cell" and mat._kind(np.empty(2, object)) == "a cell"
    assert mat._kind(np.zeros((1, 2))) == "a 1 x 2 float64 array"
    assert mat._kind(np.array(True)) == "a scalar logical array"
    assert mat._kind(np.zeros(3, complex)) == "a 3 complex array"
    assert mat._kind(np.array(["ab"])) == "a 1 char array" and mat._kind(np.array([b"ab"])) == "a 1 char array"
    assert mat._kind(np.zeros(2, [("a", "f8")])) == "a 2 compound array"
    assert mat._kind(np.zeros((2, 1, 4), np.int32)) == "a 2 x 1 x 4 int32 array"


def test_mat_image_path_is_text_or_one_text():
    assert mat._image_path("a.png") == "a.png" and mat._image_path([["b.png"]]) == "b.png"
    assert mat._image_path(np.array(["c.png"])) == "c.png" and mat._image_path(np.array([], "U1")) == ""
    assert mat._image_path(np.array([np.array(["d.png"])], object)) == "d.png"
    for value, kind in [(["a", "b"], "a cell"), ([], "a cell"), (np.array(["a", "b"]), "a 2 char array"),
                        (mat.Unreadable("a struct"), "a struct"), (np.zeros(3), "a 3 float64 array"),
                        (np.empty(2, object), "a cell")]:
        with pytest.raises(ValueError) as info:
            mat._image_path(value)
        assert str(info.value) == f"image is {kind}, not the image's path as text"


def test_mat_size_is_three_positive_integers():
    size = mat._size(np.array([[3], [40], [50]], np.uint8))
    assert size.dtype == np.float64 and size.tolist() == [3, 40, 50]
    assert mat._size(np.array([1, 2**31 - 1, 7.0])).tolist() == [1, 2**31 - 1, 7]
    for value, kind in [("abc", "text"), ([3, 4, 5], "a cell"), (np.array([3, 4]), "a 2 int64 array"),
                        (np.array([True] * 3), "a 3 logical array"), (mat.Unreadable("a null reference"),
                                                                      "a null reference")]:
        with pytest.raises(ValueError) as info:
            mat._size(value)
        assert str(info.value) == f"size is {kind}, not [C, H, W] (3 numbers)"
    for bad in ([3, 4.5, 5], [3, 0, 5], [3, -4, 5], [3, np.nan, 5], [3, np.inf, 5], [3, 2**31, 5]):
        with pytest.raises(ValueError) as info:
            mat._size(np.array(bad, np.float64))
        assert str(info.value) == f"size is {np.array(bad, np.float64).tolist()}, not 3 positive integers [C, H, W]"


def test_mat_persons_are_n_by_3_matrices():
    persons = mat._persons([np.array([[0, 1, 2]], np.int32), np.zeros((0, 0)), np.array([[1, 2, 3], [2, 4, 5.5]])])
    assert [p.shape for p in persons] == [(1, 3), (0, 3), (2, 3)] and all(p.dtype == np.float64 for p in persons)
    assert persons[2].tolist() == [[1, 2, 3], [2, 4, 5.5]]
    (one,) = mat._persons(np.array([[0, 7, 8]], np.uint8))  # a matrix instead of a cell: one person
    assert one.tolist() == [[0, 7, 8]] and one.dtype == np.float64
    for value, message in [
            ("abc", "joints is text, not a cell of N x 3 [joint_id, x, y] matrices"),
            (np.array(["a"]), "joints is a 1 char array, not a cell of N x 3 [joint_id, x, y] matrices"),
            ([np.zeros((1, 3)), "s"], "joints cell 2 is text, not an N x 3 [joint_id, x, y] matrix"),
            ([np.array([True])], "joints cell 1 is a 1 logical array, not an N x 3 [joint_id, x, y] matrix"),
            ([mat.Unreadable("a struct")], "joints cell 1 is a struct, not an N x 3 [joint_id, x, y] matrix"),
            ([np.zeros((3, 2))], "joints cell 1 is a 3 x 2 float64 array, not N x 3 [joint_id, x, y] (transpose "
                                 "it: one row per joint)"),
            ([np.zeros((2, 4))], "joints cell 1 is a 2 x 4 float64 array, not N x 3 [joint_id, x, y]"),
            ([np.zeros(3)], "joints cell 1 is a 3 float64 array, not N x 3 [joint_id, x, y]")]:
        with pytest.raises(ValueError) as info:
            mat._persons(value)
        assert str(info.value) == message


def test_mat_joint_ids_and_their_maximum():
    rows = np.array([[0, 1, 1], [2.5, 1, 1], [-1, 1, 1], [np.nan, 1, 1], [np.inf, 1, 1], [3, 1, 1]])
    assert mat._valid_ids(rows).tolist() == [0, 3]
    assert mat.max_joint_id([{"joints": [rows, np.array([[1, 0, 0]])]}, {"joints": []}]) == 3
    assert mat.max_joint_id([{"joints": [np.array([[0.0, 5, 5]])]}]) == 0  # id 0 counts: one joint
    assert mat.max_joint_id([{"joints": [np.array([[-2.0, 5, 5]]), np.zeros((0, 3))]}]) == -1


def test_mat_to_entries_paths_joints_and_first_problem(tmp_path):
    (tmp_path / "root").mkdir()
    absolute = tmp_path / "here.png"
    absolute.write_bytes(b"x")

    def raw(image, joints=(), size=(3, 20, 30), problem=None):
        return {"image": image, "size": np.array(size, np.float64), "joints": [np.array(j, np.float64).reshape(-1, 3)
                                                                              for j in joints], "problem": problem}

    entries = mat.to_entries([
        raw("a/im.png", [[[0, 1.5, 2], [2, 3, 4]], [[1, 5, 6]]]),
        raw(str(absolute)),
        raw("/elsewhere/gone.png"),
        raw("", problem=None),
        raw("b.png", size=(20, 30)),
        raw("c.png", problem="size is text, not [C, H, W] (3 numbers)"),
        raw("d.png", [[[3, 1, 1], [0, np.nan, 1]]]),
        raw("e.png", [[[0, np.inf, 1], [9, 1, 1]]]),
    ], tmp_path / "labels" / "d.mat", 3)
    assert [e.index for e in entries] == list(range(8))
    assert entries[0].image_path == (tmp_path / "labels" / "a" / "im.png").resolve()  # beside the .mat
    assert entries[0].joints.dtype == np.float32
    np.testing.assert_array_equal(entries[0].joints, [[[1.5, 2, 2], [0, 0, 0], [3, 4, 2]], [[0, 0, 0], [5, 6, 2],
                                                                                             [0, 0, 0]]])
    assert entries[0].declared_size == (3, 20, 30) and entries[0].problems == []
    assert entries[1].image_path == absolute and entries[2].image_path == Path("/elsewhere/gone.png")
    assert entries[3].problems == [("malformed entry", "entry 3: image path empty or size not [C, H, W] "
                                                       "([3.0, 20.0, 30.0])")]
    assert entries[4].declared_size is None
    assert entries[4].problems == [("malformed entry", "entry 4: image path empty or size not [C, H, W] "
                                                       "([20.0, 30.0])")]
    assert entries[5].problems == [("malformed entry", "entry 5: size is text, not [C, H, W] (3 numbers)")]
    assert entries[6].problems == [("joint id out of range", "entry 6 person 0 has joint id 3, num_joints is 3")]
    assert entries[7].problems == [("non-finite coordinates", "entry 7 person 0 joint 0: (inf, 1.0)")]
    assert entries[7].joints.shape == (1, 3, 3) and not entries[7].joints.any()
    # --images-root: relative paths under it; a missing absolute path by its file name there, an existing one kept
    entries = mat.to_entries([raw("a/im.png"), raw("/elsewhere/gone.png"), raw(str(absolute))],
                             tmp_path / "labels" / "d.mat", 3, tmp_path / "root")
    assert [e.image_path for e in entries] == [tmp_path / "root" / "a" / "im.png", tmp_path / "root" / "gone.png",
                                               absolute]


def test_mat_v5_reading_order_and_file_errors(tmp_path):
    # A 2 x 2 struct array: MATLAB's linear order runs down the columns.
    ds = np.empty((2, 2), dtype=[("image", object), ("size", object), ("joints", object)])
    for (r, c), name in zip([(0, 0), (1, 0), (0, 1), (1, 1)], "abcd"):
        ds[r, c] = (name + ".png", np.array([3.0, 4, 5]), np.array([[0.0, 1, 2]]))  # joints: a matrix, no cell
    scipy.io.savemat(tmp_path / "grid.mat", {"dataset": ds})
    entries = mat.read_entries(tmp_path / "grid.mat")
    assert [e["image"] for e in entries] == ["a.png", "b.png", "c.png", "d.png"]
    assert [e["joints"][0].tolist() for e in entries] == [[[0, 1, 2]]] * 4 and entries[0]["problem"] is None
    # two persons in a 1 x 2 cell, in order
    save_v5(tmp_path / "two.mat", [("a.png", [3, 4, 5], [[[0, 1, 2]], [[1, 3, 4]]])])
    assert [p.tolist() for p in mat.read_entries(tmp_path / "two.mat")[0]["joints"]] == [[[0, 1, 2]], [[1, 3, 4]]]
    # a malformed entry: the problem is kept, the entry too
    save_v5(tmp_path / "bad.mat", [("a.png", [3, 4], [])])
    (entry,) = mat.read_entries(tmp_path / "bad.mat")
    assert entry["problem"] == "size is a 1 x 2 float64 array, not [C, H, W] (3 numbers)" and entry["joints"] == []
    scipy.io.savemat(tmp_path / "plain.mat", {"dataset": np.zeros(3), "other": np.ones(1)})
    with pytest.raises(UserError, match=r": 'dataset' is not a struct array\. Save it as a struct with fields image, "
                                        r"size, joints\.$"):
        mat.read_entries(tmp_path / "plain.mat")
    scipy.io.savemat(tmp_path / "two_names.mat", {"a": np.zeros(1), "b": np.zeros(1)})
    with pytest.raises(UserError, match=r"two_names\.mat: no variable 'dataset' \(found: a, b\)\. The seed format is"):
        mat.read_entries(tmp_path / "two_names.mat")
    with pytest.raises(UserError, match=rf"^{tmp_path} is a folder\. Pass the path of your dataset\.mat file itself"):
        mat.read_entries(tmp_path)
    with pytest.raises(UserError, match=r"nope\.mat does not exist\. Pass the path of your dataset\.mat\.$"):
        mat.read_entries(tmp_path / "nope.mat")


def _v73(path, build):
    """An HDF5 file as MATLAB -v7.3 writes it, its content made by build(f, refs group, put)."""
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")

        def put(value, cls, **attrs):
            d = refs.create_dataset(f"r{len(refs)}", data=value)
            d.attrs["MATLAB_class"] = np.bytes_(cls)
            for k, v in attrs.items():
                d.attrs[k] = v
            return d.ref

        build(f, refs, put)
    return path


def test_mat_v73_values(tmp_path):
    def build(f, refs, put):
        group = f.create_group("dataset")
        image = [put(np.array([[ord(c)] for c in "im.png"], np.uint16), "char"),
                 put(np.array([[-1.0]]), "char"),  # no character code
                 refs.create_group("nested").ref, h5py.Reference()]
        size = [put(np.array([[3.0], [4], [5]]), "double"), put(np.array([[3.0, 4, 5]]), "double"),
                put(np.zeros(2, np.uint64), "double", MATLAB_empty=1), put(np.array([[3.0], [4], [5]]), "double")]
        cell = put(np.array([[put(np.array([[0.0], [1], [2]]), "double")]], dtype=h5py.ref_dtype), "cell")
        joints = [cell, cell, cell, cell]
        for name, values in (("image", image), ("size", size), ("joints", joints)):
            group.create_dataset(name, data=np.array(values, dtype=h5py.ref_dtype).reshape(len(values), 1))

    entries = mat.read_entries(_v73(tmp_path / "v.mat", build))
    assert entries[0]["image"] == "im.png" and entries[0]["size"].tolist() == [3, 4, 5]
    assert [p.tolist() for p in entries[0]["joints"]] == [[[0, 1, 2]]] and entries[0]["problem"] is None
    assert entries[1]["problem"] == "image is a char array of non-characters, not the image's path as text"
    assert entries[2]["problem"] == "image is a struct, not the image's path as text"
    assert entries[3]["problem"] == "image is a null reference, not the image's path as text"
    with h5py.File(tmp_path / "v.mat", "r") as f:
        empty = f["dataset"]["size"][()].T.ravel()[2]
        assert mat._v73_value(f, empty).shape == (0, 0)  # MATLAB_empty: [] whatever the stored placeholder
        row = f["dataset"]["size"][()].T.ravel()[1]  # stored 1 x 3: read back transposed, as MATLAB means it
        assert mat._v73_value(f, row).tolist() == [[3], [4], [5]]
        assert mat._v73_value(f, np.float64(7)).tolist() == 7.0  # a number where a reference belongs


@pytest.mark.parametrize("kind, message", [
    ("damaged", r"v\.mat is a damaged MATLAB v7\.3 \(HDF5\) file \(.+\)\. Save it again from MATLAB \(save -v7\.3\) "
                r"or with scipy\.io\.savemat\.$"),
    ("no dataset", r"v\.mat: no variable 'dataset' \(found: labels\)\. The seed format is a struct array"),
    ("not a struct", r"v\.mat: 'dataset' is not a struct array\. Save it as a struct with fields image, size, "
                     r"joints\.$"),
    ("missing field", r"v\.mat: the struct 'dataset' lacks the field\(s\) joints \(it has: image, size\)\. Every "
                      r"entry needs image \(path\), size \(\[C, H, W\]\) and joints"),
    ("nested field", r"v\.mat: the field size of 'dataset' is a nested struct, not one value per entry\. Save "
                     r"dataset\(i\)\.size as a plain array"),
    ("counts", r"v\.mat: the fields of 'dataset' have different entry counts \(\{'image': 2, 'size': 1, 'joints': "
               r"1\}\); every entry needs"),
])
def test_mat_v73_file_errors(tmp_path, kind, message):
    def build(f, refs, put):
        if kind == "no dataset":
            f.create_dataset("labels", data=np.zeros(2))
            return
        if kind == "not a struct":
            f.create_dataset("dataset", data=np.zeros(2))
            return
        group = f.create_group("dataset")
        one = put(np.array([[3.0], [4], [5]]), "double")
        for name in ("image", "size", "joints")[:2 if kind == "missing field" else 3]:
            if name == "size" and kind == "nested field":
                group.create_group(name)
                continue
            n = 2 if name == "image" and kind == "counts" else 1
            group.create_dataset(name, data=np.array([one] * n, dtype=h5py.ref_dtype).reshape(n, 1))

    path = _v73(tmp_path / "v.mat", build)
    if kind == "damaged":
        data = path.read_bytes()
        path.write_bytes(data[:600])  # the HDF5 signature, then nothing
    with pytest.raises(UserError, match=message):
        mat.read_entries(path)


def test_mat_v73_class_attributes_and_top_level_names(tmp_path):
    def build(f, refs, put):
        group = f.create_group("dataset")
        image = put(np.array([[ord(c)] for c in "im.png"], np.uint16), "char")
        refs[f"r{len(refs) - 1}"].attrs["MATLAB_class"] = "char"  # a str attribute (not bytes) is read the same
        size = put(np.array([[3.0], [4], [5]]), "double")
        cell = refs.create_dataset("cell", data=np.array([[put(np.array([[1.0], [2], [3]]), "double")]],
                                                         dtype=h5py.ref_dtype))  # no MATLAB_class: references
        for name, ref in (("image", image), ("size", size), ("joints", cell.ref)):
            group.create_dataset(name, data=np.array([[ref]], dtype=h5py.ref_dtype))

    (entry,) = mat.read_entries(_v73(tmp_path / "v.mat", build))
    assert entry["image"] == "im.png" and [p.tolist() for p in entry["joints"]] == [[[1, 2, 3]]]
    _v73(tmp_path / "two.mat", lambda f, refs, put: [f.create_dataset(n, data=np.zeros(1)) for n in ("a", "b")])
    with pytest.raises(UserError, match=r"two\.mat: no variable 'dataset' \(found: a, b\)\."):
        mat.read_entries(tmp_path / "two.mat")
    _v73(tmp_path / "none.mat", lambda f, refs, put: None)
    with pytest.raises(UserError, match=r"none\.mat: no variable 'dataset' \(found: none\)\."):
        mat.read_entries(tmp_path / "none.mat")
    data = (tmp_path / "none.mat").read_bytes()
    (tmp_path / "none.mat").write_bytes(data[:600])
    with pytest.raises(UserError, match=r"none\.mat is a damaged MATLAB v7\.3 \(HDF5\) file \(Unable to .*truncated "
                                        r"file"):
        mat.read_entries(tmp_path / "none.mat")


def test_mat_v5_messages_and_a_cell_grid(tmp_path):
    (tmp_path / "garbage.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(UserError, match=r"garbage\.mat is not a readable MATLAB file \(ValueError: Unknown mat file"):
        mat.read_entries(tmp_path / "garbage.mat")
    scipy.io.savemat(tmp_path / "nothing.mat", {})
    with pytest.raises(UserError, match=r"nothing\.mat: no variable 'dataset' \(found: none\)\."):
        mat.read_entries(tmp_path / "nothing.mat")
    ds = np.empty((1, 1), dtype=[("image", object), ("size", object)])
    ds[0, 0] = ("a.png", np.array([3, 1, 1.0]))
    scipy.io.savemat(tmp_path / "nofield.mat", {"dataset": ds})
    with pytest.raises(UserError, match=rf"^{tmp_path / 'nofield.mat'}: the struct 'dataset' lacks the field\(s\) "
                                        r"joints \(it has: image, size\)"):
        mat.read_entries(tmp_path / "nofield.mat")
    # four persons in a 2 x 2 cell: MATLAB's linear order runs down the columns
    ds = np.empty((1, 1), dtype=[("image", object), ("size", object), ("joints", object)])
    cell = np.empty((2, 2), dtype=object)
    for (r, c), jid in zip([(0, 0), (1, 0), (0, 1), (1, 1)], range(4)):
        cell[r, c] = np.array([[jid, 1.0, 2.0]])
    ds[0, 0] = ("a.png", np.array([3, 4, 5.0]), cell)
    scipy.io.savemat(tmp_path / "grid.mat", {"dataset": ds})
    assert [p[0, 0] for p in mat.read_entries(tmp_path / "grid.mat")[0]["joints"]] == [0, 1, 2, 3]


def test_cached_shards_binds_the_config_and_rebuilds_a_damaged_cache(tmp_path, capsys):
    save_v5(tmp_path / "d.mat", records_for(tmp_path, 2))  # joint ids 0..2
    cfg = config_mod.load(None, num_joints=4, joint_names=["a", "b", "c", "d"], all_joints=[[0], [1, 2], [3]],
                          skeleton=[[0, 1], [2, 3]], seed=4)
    cache = mat.cached_shards(tmp_path / "d.mat", cfg, quiet=True)
    assert cache == tmp_path / "d.mat.shards" and capsys.readouterr() == ("", "")
    manifest = read_manifest(cache)
    assert (manifest["num_joints"], manifest["joint_names"], manifest["all_joints"], manifest["skeleton"]) == (
        4, ["a", "b", "c", "d"], [[0], [1, 2], [3]], [[0, 1], [2, 3]])
    assert manifest["source"]["seed"] == 4 and manifest["splits"]["train"]["samples"] == 2
    (cache / "manifest.json").write_text("not json")  # a damaged cache manifest: converted again
    assert mat.cached_shards(tmp_path / "d.mat", cfg) == cache and read_manifest(cache)["num_joints"] == 4
    assert capsys.readouterr().err != ""  # not quiet: the progress display
    (cache / "manifest.json").write_text("{}")  # no source recorded: converted again
    assert mat.cached_shards(tmp_path / "d.mat", cfg, quiet=True) == cache and read_manifest(cache)["source"]


def test_mat_convert_joint_count_defaults_and_options(tmp_path, capsys):
    imgs = write_images(tmp_path / "images", 2)
    save_v5(tmp_path / "d.mat", [(image, size, [[[0, 3, 4]]]) for image, size in imgs])  # only id 0: one joint
    result = mat.convert(tmp_path / "d.mat", tmp_path / "one", num_joints=0)  # 0 = inferred, as left out
    assert result["num_joints"] == 1 and capsys.readouterr().err != ""  # not quiet by default: the progress
    assert result["note"] == ("num_joints not given: using max joint id + 1 = 1. Pass --num-joints or --config to "
                              "set it (and the joint names).")
    manifest = read_manifest(tmp_path / "one")
    assert manifest["samples_per_shard"] == 512
    assert {k: v for k, v in manifest["source"].items() if k != "stamp"} == {
        "kind": "mat", "path": str((tmp_path / "d.mat").resolve()), "split": "", "seed": 0}
    with pytest.raises(UserError, match="exists"):  # no overwrite by default
        mat.convert(tmp_path / "d.mat", tmp_path / "one", num_joints=1, quiet=True)
    assert mat.convert(tmp_path / "d.mat", tmp_path / "one", num_joints=2, quiet=True, overwrite=True)["note"] == ""
    with pytest.raises(UserError, match=r"^--num-joints -1: must be positive \(or left out to use the largest joint "
                                        r"id \+ 1\)\.$"):
        mat.convert(tmp_path / "d.mat", tmp_path / "neg", num_joints=-1, quiet=True)
    mat.convert(tmp_path / "d.mat", tmp_path / "jpeg", num_joints=1, quiet=True, reencode_jpeg=90)
    assert ShardDataset(tmp_path / "jpeg")[0].image[:3] == b"\xff\xd8\xff"  # stored re-encoded as JPEG


def test_mat_convert_inferred_joint_count_limits(tmp_path):
    imgs = write_images(tmp_path / "images", 2)
    save_v5(tmp_path / "none.mat", [(imgs[0][0], imgs[0][1], []), (imgs[1][0], [3, 4], [])])
    with pytest.raises(UserError) as info:
        mat.convert(tmp_path / "none.mat", tmp_path / "out", quiet=True)
    assert str(info.value) == (f"{tmp_path / 'none.mat'}: no joints in any well-formed entry, and no --num-joints "
                               f"given. 1 of the 2 entries are malformed, e.g. entry 1: size is a 1 x 2 float64 array, "
                               f"not [C, H, W] (3 numbers); fix them in the source file.")
    save_v5(tmp_path / "empty.mat", [(imgs[0][0], imgs[0][1], [])])
    with pytest.raises(UserError, match=r"empty\.mat: no joints in any well-formed entry, and no --num-joints "
                                        r"given\.$"):
        mat.convert(tmp_path / "empty.mat", tmp_path / "out", quiet=True)
    save_v5(tmp_path / "big.mat", [(imgs[0][0], imgs[0][1], [[[999, 3, 4]]])])
    assert mat.convert(tmp_path / "big.mat", tmp_path / "big", quiet=True)["num_joints"] == mat.MAX_INFERRED_JOINTS
    save_v5(tmp_path / "huge.mat", [(imgs[0][0], imgs[0][1], [[[1000, 3, 4]]])])
    with pytest.raises(UserError, match=r"huge\.mat: the largest joint id is 1000, so num_joints would be 1001; that "
                                        r"id is probably wrong\. Pass --num-joints"):
        mat.convert(tmp_path / "huge.mat", tmp_path / "huge", quiet=True)


def test_mat_leftovers_of_a_malformed_entry_and_rows_after_a_bad_one(tmp_path):
    save_v5(tmp_path / "d.mat", [("a.png", [3, 4], []), (np.array([1.0, 2.0]), [3, 4, 5], [])])
    bad_size, bad_image = mat.read_entries(tmp_path / "d.mat")
    assert bad_size["image"] == "a.png" and bad_size["size"].shape == (0,) and bad_size["joints"] == []
    assert bad_image["image"] == "" and bad_image["size"].shape == (0,)
    assert bad_image["problem"] == "image is a 1 x 2 float64 array, not the image's path as text"
    with pytest.raises(ValueError, match=r"^joints cell 1 is a cell, not an N x 3"):
        mat._persons([[np.array([[0.0, 1, 2]])]])  # a nested cell, even of one good matrix
    ds = np.empty((1, 1), dtype=[("image", object)])
    ds[0, 0] = ("a.png",)
    scipy.io.savemat(tmp_path / "two_missing.mat", {"dataset": ds})
    with pytest.raises(UserError, match=r"lacks the field\(s\) size, joints \(it has: image\)"):
        mat.read_entries(tmp_path / "two_missing.mat")
    raw = {"image": "a.png", "size": np.array([3.0, 9, 9]), "problem": None,
           "joints": [np.array([[9, 1, 1], [1, 5, 6], [0, np.nan, 2], [2, 7, 8]], np.float64)]}
    (entry,) = mat.to_entries([raw], tmp_path / "d.mat", 3)
    np.testing.assert_array_equal(entry.joints, [[[0, 0, 0], [5, 6, 2], [7, 8, 2]]])  # the rows after a bad one
    assert entry.problems == [("joint id out of range", "entry 0 person 0 has joint id 9, num_joints is 3")]
    (tmp_path / "three").write_bytes(b"abc")
    assert mat.file_stamp(tmp_path / "three") == {"size": 3, "mtime_ns": os.stat(tmp_path / "three").st_mtime_ns}
