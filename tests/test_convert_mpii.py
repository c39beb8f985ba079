"""`fastpose convert mpii` on a small RELEASE-shaped .mat built from the shared MPII excerpt.

The five images in ../shared/data/mmpose/mpii are RELEASE images 7, 18, 28, 30, 31 (person 1 each); their official
annotations come from ../shared/data/mpii-release/detections.mat (same annorect layout as RELEASE) and are checked
against test_mpii.json. Expected crops are computed by hand from the rules (head 50 px, padding 130/65, isolation 20).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
from PIL import Image

from fastpose.convert import mpii
from fastpose.convert.mpii import read_release, rect_points
from fastpose.errors import UserError
from fastpose.shards import ShardDataset, read_manifest, summary

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MPII_DIR = DATA / "mmpose" / "mpii"
DETECTIONS = DATA / "mpii-release" / "detections.mat"
pytestmark = pytest.mark.skipif(not (MPII_DIR.is_dir() and DETECTIONS.is_file()),
                                reason=f"shared MPII test data not found under {DATA}")
IMAGE_IDS = [7, 18, 28, 30, 31]  # RELEASE indices of validation persons 0..4
SHIFT = 300.0  # px: the extra person added to image 7 stands this far left of person 1


def _struct_array(items: list[dict]) -> np.ndarray:
    """A MATLAB struct array (1 x n) for savemat: a record array with object fields (absent fields stay [])."""
    names: list[str] = []
    for item in items:
        names += [k for k in item if k not in names]
    arr = np.zeros((len(items),), dtype=[(n, object) for n in names])
    for i, item in enumerate(items):
        for n in names:
            arr[i][n] = item.get(n, np.zeros((0, 0)))
    return arr


def _official():
    """Annotations of validation persons 0..4 from detections.mat, as plain python: (head box, [(id, x, y, vis)])."""
    annolist = scipy.io.loadmat(DETECTIONS, struct_as_record=False, squeeze_me=True)["annolist"]
    out = []
    for k in range(5):
        r = annolist[k].annorect
        pts = [(int(p.id), float(p.x), float(p.y), p.is_visible) for p in r.annopoints.point]
        out.append(([float(r.x1), float(r.y1), float(r.x2), float(r.y2)], pts, float(r.scale), r.objpos))
    return out


def _rect(head, pts, scale=1.0, objpos=(0.0, 0.0)) -> dict:
    points = [{"x": x, "y": y, "id": i, "is_visible": v if not isinstance(v, np.ndarray) else np.zeros((0, 0))}
              for i, x, y, v in pts]
    return {"x1": head[0], "y1": head[1], "x2": head[2], "y2": head[3], "scale": scale,
            "objpos": {"x": objpos[0], "y": objpos[1]}, "annopoints": {"point": _struct_array(points)}}


def _release(tmp: Path, *, extra_person: bool = True, edit=None) -> Path:
    """A RELEASE .mat of 31 images: the five shared ones are training images, the rest test images without labels."""
    names = {i: p for i, p in zip(IMAGE_IDS, json.loads((MPII_DIR / "test_mpii.json").read_text()))}
    official = dict(zip(IMAGE_IDS, _official()))
    annolist, img_train, single = [], [], []
    for i in range(1, 32):
        if i in official:
            head, pts, scale, objpos = official[i]
            rects = [_rect(head, pts, scale, (objpos.x, objpos.y))]
            if i == 7 and extra_person:  # a second person to the left, to test isolation and the 65 px padding
                rects.append(_rect([head[0] - SHIFT, head[1], head[2] - SHIFT, head[3]],
                                   [(j, x - SHIFT, y, v) for j, x, y, v in pts]))
            annolist.append({"image": {"name": names[i]["image"]}, "annorect": _struct_array(rects)})
            img_train.append(1)
            single.append(np.array([1.0]))
        else:  # a test image: annorect has only scale/objpos, as in the real RELEASE
            annolist.append({"image": {"name": f"test{i:03d}.jpg"},
                             "annorect": _struct_array([{"scale": 2.0, "objpos": {"x": 100.0, "y": 100.0}}])})
            img_train.append(0)
            single.append(np.zeros((0, 0)))
    release = {"annolist": _struct_array(annolist), "img_train": np.array(img_train, np.uint8),
               "single_person": np.array(single + [None], dtype=object)[:-1],
               "act": _struct_array([{"act_id": -1}] * 31), "video_list": np.array(["abc"], dtype=object)}
    if edit:
        edit(release)
    root = tmp / "mpii"
    (root / "images").mkdir(parents=True, exist_ok=True)
    for p in MPII_DIR.glob("*.jpg"):
        if not (root / "images" / p.name).exists():
            (root / "images" / p.name).symlink_to(p)
    scipy.io.savemat(root / "mpii_human_pose_v1_u12_1.mat", {"RELEASE": release})
    return root


def _hand_crop(head, points_xy, other_x, W, H, pad):
    """Independent hand computation of one crop: scaled size, inclusive crop bounds (0-based pixel convention)."""
    diag = math.sqrt((head[2] - head[0]) ** 2 + (head[3] - head[1]) ** 2)
    sc = 0.6 * diag / 50.0
    W2, H2 = math.ceil(W / sc), math.ceil(H / sc)
    xs = [(x - 1 + 0.5) * W2 / W - 0.5 for x, _ in points_xy]
    ys = [(y - 1 + 0.5) * H2 / H - 0.5 for _, y in points_xy]
    bx1, bx2 = math.floor(min(xs) + 0.5), math.floor(max(xs) + 0.5)
    by1, by2 = math.floor(min(ys) + 0.5), math.floor(max(ys) + 0.5)
    x1, x2, y1, y2 = max(0, bx1 - pad), min(W2 - 1, bx2 + pad), max(0, by1 - pad), min(H2 - 1, by2 + pad)
    ox = [(x - 1 + 0.5) * W2 / W - 0.5 for x in other_x]
    left = [x for x in ox if x < bx1]
    if left:
        x1 = max(x1, math.floor(max(left) + 20 + 0.5))
    return W2, H2, x1, y1, x2, y2


def test_convert_mpii_matches_hand_computation(tmp_path):
    root = _release(tmp_path)
    written = mpii.convert(root, tmp_path / "out", workers=1, quiet=True)["samples"]
    assert written == {"train": 6}  # five single persons + the extra person of image 7
    ds = ShardDataset(tmp_path / "out", "train")
    assert ds.num_joints == 14 and ds.joint_names[12:] == ["upper_neck", "head_top"]
    gt = json.loads((MPII_DIR / "test_mpii.json").read_text())
    official = _official()
    by_key = {(ds[i].meta["image_index"], ds[i].meta["person_index"]): ds[i] for i in range(len(ds))}
    assert sorted(by_key) == [(7, 1), (7, 2), (18, 1), (28, 1), (30, 1), (31, 1)]
    for k, image_index in enumerate(IMAGE_IDS):
        s = by_key[(image_index, 1)]
        head, pts, _, _ = official[k]
        img = cv2.imread(str(MPII_DIR / gt[k]["image"]))
        H, W = img.shape[:2]
        others = [x - SHIFT for _, x, _, _ in pts] if image_index == 7 else []
        W2, H2, x1, y1, x2, y2 = _hand_crop(head, [(x, y) for _, x, y, _ in pts], others, W, H, 130)
        assert s.size == (3, y2 - y1 + 1, x2 - x1 + 1)
        a, b, c, d, e, f = s.transform
        assert (b, d) == (0.0, 0.0)
        assert a == pytest.approx(W / W2, rel=1e-6) and e == pytest.approx(H / H2, rel=1e-6)
        assert c == pytest.approx((x1 + 0.5) * W / W2 - 0.5, abs=1e-3)
        assert f == pytest.approx((y1 + 0.5) * H / H2 - 0.5, abs=1e-3)
        # head ~50 px after scaling (exactly 50 up to the ceil of the scaled size)
        hb = s.head_box[0]
        assert 0.6 * math.hypot(hb[2] - hb[0], hb[3] - hb[1]) == pytest.approx(50.0, abs=0.2)
        # joints mapped back through the stored transform land on the json's (1-based) pixels minus 1
        mpii_ids = [0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15, 8, 9]
        labelled = s.joints[0, :, 2] > 0
        for j, mid in enumerate(mpii_ids):
            if gt[k]["joints_vis"][mid]:
                assert labelled[j]
                x, y = s.joints[0, j, :2]
                back = (a * x + b * y + c, d * x + e * y + f)
                assert back == pytest.approx((gt[k]["joints"][mid][0] - 1, gt[k]["joints"][mid][1] - 1), abs=2e-3)
            else:
                assert not labelled[j]
        # visibility: is_visible 1 -> 2, 0 -> 1, empty -> 2
        vis = {i: v for i, _, _, v in pts}
        for j, mid in enumerate(mpii_ids):
            if mid in vis:
                v = vis[mid]
                want = 2 if isinstance(v, np.ndarray) or int(v) == 1 else 1
                assert s.joints[0, j, 2] == want
        # the stored pixels are the antialiased-bicubic-resized image's crop (JPEG q95 tolerance)
        crop = cv2.imdecode(np.frombuffer(s.image, np.uint8), cv2.IMREAD_COLOR)
        ref = np.asarray(Image.fromarray(img).resize((W2, H2), Image.Resampling.BICUBIC))[y1:y2 + 1, x1:x2 + 1]
        aliased = cv2.resize(img, (W2, H2), interpolation=cv2.INTER_CUBIC)[y1:y2 + 1, x1:x2 + 1]
        err = np.abs(crop.astype(int) - ref.astype(int)).mean()
        assert err < 3.0 and err < np.abs(crop.astype(int) - aliased.astype(int)).mean()  # antialiased, as MATLAB
        assert s.source_index == image_index and s.meta["single_person"] is True
    # image 7: isolation moved the crop's left edge right of the 130 px padding; the extra person has 65 px padding
    head, pts, _, _ = official[0]
    W2, H2, x1_pad, _, _, _ = _hand_crop(head, [(x, y) for _, x, y, _ in pts], [], 1280, 720, 130)
    W2, H2, x1_iso, _, _, _ = _hand_crop(head, [(x, y) for _, x, y, _ in pts], [x - SHIFT for _, x, _, _ in pts],
                                         1280, 720, 130)
    assert (W2, H2) == (543, 306)  # head box 117x158: 0.6 * 196.60 / 50 = 2.3592 -> ceil(1280/2.3592), ceil(720/..)
    assert x1_iso > x1_pad
    extra = by_key[(7, 2)]
    assert extra.meta["single_person"] is False
    _, _, x1, y1, x2, y2 = _hand_crop([head[0] - SHIFT, head[1], head[2] - SHIFT, head[3]],
                                      [(x - SHIFT, y) for _, x, y, _ in pts], [], 1280, 720, 65)
    assert extra.size == (3, y2 - y1 + 1, x2 - x1 + 1)
    info = summary(tmp_path / "out")
    assert info["splits"]["train"]["persons_with_keypoints"] == 6
    assert read_manifest(tmp_path / "out")["source"]["format"] == "mpii"


def test_val_list_holds_out_persons(tmp_path):
    root = _release(tmp_path)
    (tmp_path / "val.txt").write_text("# image person\n7 1\n18 1\n999 1\n")
    written = mpii.convert(root, tmp_path / "out", val_list=tmp_path / "val.txt", workers=1, quiet=True)["samples"]
    assert written == {"train": 4, "test": 2}
    test = ShardDataset(tmp_path / "out", "test")
    assert sorted((test[i].meta["image_index"], test[i].meta["person_index"]) for i in range(2)) == [(7, 1), (18, 1)]
    # the same pairs in detections.mat's layout (RELEASE_img_index / RELEASE_person_index)
    scipy.io.savemat(tmp_path / "val.mat", {"RELEASE_img_index": np.array([28, 30]),
                                            "RELEASE_person_index": np.array([1, 1])})
    written = mpii.convert(root, tmp_path / "out2", val_list=tmp_path / "val.mat", workers=1, quiet=True)["samples"]
    assert written == {"train": 4, "test": 2}
    (tmp_path / "bad.txt").write_text("7 one\n")
    with pytest.raises(UserError, match="line 1"):
        mpii.convert(root, tmp_path / "out3", val_list=tmp_path / "bad.txt", quiet=True)
    (tmp_path / "none.txt").write_text("2 1\n")  # image 2 is a test image: nothing matches (0-based by mistake?)
    with pytest.raises(UserError, match="1-based"):
        mpii.convert(root, tmp_path / "out4", val_list=tmp_path / "none.txt", quiet=True)
    assert not (tmp_path / "out3").exists() and not (tmp_path / "out4").exists()


def test_loadmat_quirks_single_point_and_missing_fields(tmp_path):
    # one rect with one point: squeeze_me makes annorect and point plain structs, not arrays; is_visible as a string
    rect = {"x1": 10.0, "y1": 10.0, "x2": 30.0, "y2": 40.0,
            "annopoints": {"point": _struct_array([{"x": 5.0, "y": 6.0, "id": 9, "is_visible": "0"}])}}
    no_points = {"x1": 1.0, "y1": 1.0, "x2": 2.0, "y2": 2.0}  # in the same struct array: annopoints = []
    scipy.io.savemat(tmp_path / "r.mat", {"RELEASE": {
        "annolist": _struct_array([{"image": {"name": "a.jpg"}, "annorect": _struct_array([rect])},
                                   {"image": {"name": "b.jpg"}, "annorect": _struct_array([rect, no_points])}]),
        "img_train": np.array([1, 1]), "single_person": np.array([np.array([1.0]), np.array([1.0, 2.0])],
                                                                 dtype=object)}})
    annolist, img_train, single = read_release(tmp_path / "r.mat")
    assert len(annolist) == 2 and img_train.tolist() == [1, 1] and single == [{1}, {1, 2}]
    assert not isinstance(annolist[0].annorect, np.ndarray)  # the quirk is really exercised
    assert rect_points(annolist[0].annorect).tolist() == [[9.0, 5.0, 6.0, 1.0]]
    assert rect_points(annolist[1].annorect[1]) is None


def test_bad_inputs_give_clear_errors(tmp_path):
    scipy.io.savemat(tmp_path / "wrong.mat", {"dataset": np.zeros(3)})
    with pytest.raises(UserError, match="no variable RELEASE.*dataset.*convert mat"):
        read_release(tmp_path / "wrong.mat")
    scipy.io.savemat(tmp_path / "partial.mat", {"RELEASE": {"annolist": np.zeros(2)}})
    with pytest.raises(UserError, match="lacks the field.*img_train"):
        read_release(tmp_path / "partial.mat")
    (tmp_path / "junk.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(UserError, match="could not be read"):
        read_release(tmp_path / "junk.mat")

    def breakage(release):
        release["annolist"][1]["image"] = {"name": "missing.jpg"}  # image 2 is a test image: ignored
        release["annolist"][17]["image"] = {"name": "gone.jpg"}  # image 18: missing file
        pts = release["annolist"][27]["annorect"][0]["annopoints"]["point"]
        pts[0]["id"] = 16  # image 28: joint id out of range
        release["annolist"][29]["annorect"][0]["x1"] = np.zeros((0, 0))  # image 30: no head box

    root = _release(tmp_path / "bad", edit=breakage)
    with pytest.raises(UserError) as err:
        mpii.convert(root, tmp_path / "out", workers=1, quiet=True)["samples"]
    msg = str(err.value)
    assert "3 bad entries" in msg
    assert "missing image: 1 entry [2]" in msg and "gone.jpg" in msg  # entries: 7/1, 7/2, 18/1, ...
    assert "joint id out of range: 1 entry [3]" in msg and "annolist(28).annorect(1)" in msg
    assert "malformed entry: 1 entry [4]" in msg and "head box" in msg
    assert not (tmp_path / "out").exists()
    written = mpii.convert(root, tmp_path / "out", workers=1, skip_bad=True, quiet=True)["samples"]
    assert written == {"train": 3}
    skipped = read_manifest(tmp_path / "out")["skipped"]
    assert sorted(s["index"] for s in skipped) == [2, 3, 4]


def test_cli_convert_mpii_and_info(tmp_path):
    from typer.testing import CliRunner

    from fastpose.cli import app

    root = _release(tmp_path, extra_person=False)
    shutil.copy(root / "mpii_human_pose_v1_u12_1.mat", tmp_path / "copy.mat")
    (tmp_path / "val.txt").write_text("31 1\n")
    result = CliRunner().invoke(app, ["convert", "mpii", str(root), "--out", str(tmp_path / "out"), "--mat",
                                      str(tmp_path / "copy.mat"), "--val-list", str(tmp_path / "val.txt"),
                                      "--workers", "1", "--samples-per-shard", "2"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["info", str(tmp_path / "out"), "--json"])
    info = json.loads(result.output)
    assert info["splits"]["train"]["persons_with_keypoints"] == 4 and info["splits"]["train"]["shards"] == 2
    assert info["splits"]["test"]["samples"] == 1
    result = CliRunner().invoke(app, ["convert", "mpii", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o2")])
    assert result.exit_code != 0 and isinstance(result.exception, UserError)
