"""`fastpose convert coco` on the shared COCO, OCHuman and CrowdPose excerpts (../shared/data/mmpose/)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from fastpose.config import COCO_ALL_JOINTS, COCO_JOINT_NAMES, COCO_SKELETON
from fastpose.convert import coco
from fastpose.convert.coco import joint_groups
from fastpose.errors import UserError
from fastpose.shards import ShardDataset, read_manifest, summary

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mmpose"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared test data not found at {DATA}")
COCO = DATA / "coco"
COCO_JSON = COCO / "test_coco.json"


def _samples(root: Path, split: str = "train") -> dict:
    ds = ShardDataset(root, split)
    return {ds[i].meta["image_id"]: ds[i] for i in range(len(ds))}


def _labelled(ann: dict) -> int:
    return sum(1 for v in ann["keypoints"][2::3] if v > 0)


def test_coco_persons_boxes_and_ignore_regions(tmp_path):
    gt = json.loads(COCO_JSON.read_text())
    result = coco.convert(COCO, COCO_JSON, tmp_path / "out", workers=1, quiet=True)
    assert result["samples"] == {"train": 4}
    manifest = read_manifest(tmp_path / "out")
    assert manifest["joint_names"] == COCO_JOINT_NAMES
    assert manifest["all_joints"] == COCO_ALL_JOINTS  # derived from left_/right_ names
    assert manifest["skeleton"] == COCO_SKELETON  # the json's 1-based skeleton, made 0-based
    assert manifest["source"]["annotations"] == str(COCO_JSON) and manifest["source"]["format"] == "coco"
    samples = _samples(tmp_path / "out")
    assert sorted(samples) == sorted(img["id"] for img in gt["images"])
    persons = [a for a in gt["annotations"] if _labelled(a) > 0]
    empty = [a for a in gt["annotations"] if _labelled(a) == 0]
    assert len(persons) == 12 and len(empty) == 2
    for ann in persons:
        s = samples[ann["image_id"]]
        p = s.person_id.tolist().index(ann["id"])
        kp = np.array(ann["keypoints"], np.float32).reshape(17, 3)
        want = np.where(kp[:, 2:] > 0, kp, 0)  # unlabelled: 0, 0, 0
        np.testing.assert_array_equal(s.joints[p], want)
        np.testing.assert_allclose(s.person_box[p], ann["bbox"], rtol=1e-6)
        assert s.person_area[p] == pytest.approx(ann["area"], rel=1e-6)
    for ann in empty:  # kept as ignore regions: the RLE covers the annotated segmentation
        s = samples[ann["image_id"]]
        assert ann["id"] not in s.person_id.tolist()
        rle = s.meta["ignore_rle"][s.meta["ignore_ids"].index(ann["id"])]
        assert isinstance(rle["counts"], str) and rle["size"] == [s.size[1], s.size[2]]
        coded = {"size": rle["size"], "counts": rle["counts"].encode()}
        assert float(mask_utils.area(coded)) == pytest.approx(ann["area"], rel=0.05)
        np.testing.assert_allclose(mask_utils.toBbox(coded), ann["bbox"], atol=1.5)
    counts = {img_id: s.num_persons for img_id, s in samples.items()}
    assert counts == {785: 1, 40083: 2, 196141: 4, 197388: 5}
    info = summary(tmp_path / "out")
    assert info["splits"]["train"]["persons_with_keypoints"] == 12 and info["persons"] == 12


def test_min_keypoints_moves_sparse_persons_to_ignore(tmp_path):
    gt = json.loads(COCO_JSON.read_text())
    coco.convert(COCO, COCO_JSON, tmp_path / "out", min_keypoints=15, workers=1, quiet=True)
    samples = _samples(tmp_path / "out")
    want: dict = {}
    for ann in gt["annotations"]:
        if _labelled(ann) >= 15:
            want.setdefault(ann["image_id"], []).append(ann["id"])
    assert {k: sorted(s.person_id.tolist()) for k, s in samples.items()} == {k: sorted(v) for k, v in want.items()}
    for img_id, s in samples.items():
        others = sorted(a["id"] for a in gt["annotations"] if a["image_id"] == img_id and _labelled(a) < 15)
        assert sorted(s.meta["ignore_ids"]) == others


def test_ochuman_rle_and_fractional_keypoints(tmp_path):
    path = DATA / "ochuman" / "test_ochuman.json"
    gt = json.loads(path.read_text())
    coco.convert(DATA / "ochuman", path, tmp_path / "out", workers=1, quiet=True)
    samples = _samples(tmp_path / "out")
    assert sum(s.num_persons for s in samples.values()) == len(gt["annotations"]) == 5
    ann = gt["annotations"][0]
    s = samples[ann["image_id"]]
    np.testing.assert_allclose(s.joints[0].ravel(), np.array(ann["keypoints"], np.float32))
    assert s.joints[0, 0, 0] == pytest.approx(371.5701271305881)  # sub-pixel COCO x kept as is


def test_crowdpose_names_groups_and_bbox_ignore(tmp_path):
    path = DATA / "crowdpose" / "test_crowdpose.json"
    result = coco.convert(DATA / "crowdpose", path, tmp_path / "out", workers=1, quiet=True)
    assert "skeleton" in result["note"]
    manifest = read_manifest(tmp_path / "out")
    assert manifest["num_joints"] == 14 and manifest["joint_names"][12:] == ["head", "neck"]
    assert manifest["all_joints"] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11], [12], [13]]
    assert manifest["skeleton"] == []  # the json copies COCO's 17-keypoint skeleton: unusable, dropped
    s = _samples(tmp_path / "out")[106848]
    assert s.joints.shape == (2, 14, 3) and s.meta["ignore_ids"] == [131039]
    rle = s.meta["ignore_rle"][0]  # no segmentation in CrowdPose: the bbox is the region
    box = mask_utils.toBbox({"size": rle["size"], "counts": rle["counts"].encode()})
    np.testing.assert_allclose(box, [108.5, 96.78, 35.46, 30.23], atol=1.0)


def test_joint_groups_pairs_left_right():
    assert joint_groups(["nose", "left_eye", "right_eye", "Right_ear", "left_ear", "tail"]) == [[0], [1, 2], [3, 4],
                                                                                                 [5]]


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


def test_bad_inputs(tmp_path):
    gt = json.loads(COCO_JSON.read_text())
    with pytest.raises(UserError, match="not a COCO annotation file.*list"):
        coco.convert(COCO, DATA / "mpii" / "test_mpii.json", tmp_path / "o", quiet=True)
    instances = copy.deepcopy(gt)
    del instances["categories"][0]["keypoints"]
    with pytest.raises(UserError, match="no category has keypoint names"):
        coco.convert(COCO, _write(tmp_path, instances), tmp_path / "o", quiet=True)
    # 12 images without files: the report names the first 10 ids and the count
    missing = copy.deepcopy(gt)
    for k in range(12):
        missing["images"].append({"id": 9000 + k, "file_name": f"nope{k}.jpg", "height": 10, "width": 10})
        missing["annotations"].append({**gt["annotations"][0], "id": 7000 + k, "image_id": 9000 + k})
    with pytest.raises(UserError) as err:
        coco.convert(COCO, _write(tmp_path, missing), tmp_path / "o", workers=1, quiet=True)
    msg = str(err.value)
    assert "missing image: 12 entries [9000, 9001" in msg and "9009 (and 2 more)" in msg and "nope0.jpg" in msg
    assert not (tmp_path / "o").exists()
    result = coco.convert(COCO, _write(tmp_path, missing), tmp_path / "o", workers=1, skip_bad=True, quiet=True)
    assert result["samples"] == {"train": 4}
    assert sorted(s["index"] for s in read_manifest(tmp_path / "o")["skipped"]) == list(range(9000, 9012))
    # a keypoint array of the wrong length
    short = copy.deepcopy(gt)
    short["annotations"][1]["keypoints"] = short["annotations"][1]["keypoints"][:48]
    img_id, ann_id = short["annotations"][1]["image_id"], short["annotations"][1]["id"]
    with pytest.raises(UserError, match=rf"malformed entry: 1 entry \[{img_id}\].*annotation id {ann_id} has 48 "):
        coco.convert(COCO, _write(tmp_path, short), tmp_path / "o2", workers=1, quiet=True)
    # an annotation whose image is not listed
    orphan = copy.deepcopy(gt)
    orphan["annotations"].append({**gt["annotations"][0], "id": 5555, "image_id": 123})
    with pytest.raises(UserError, match=r"1 annotation\(s\) refer to image ids not in `images`.*\[5555\]"):
        coco.convert(COCO, _write(tmp_path, orphan), tmp_path / "o2", workers=1, quiet=True)
    coco.convert(COCO, _write(tmp_path, orphan), tmp_path / "o2", workers=1, skip_bad=True, quiet=True)
    assert read_manifest(tmp_path / "o2")["skipped"][0]["index"] == 5555
    with pytest.raises(UserError, match="min-keypoints"):
        coco.convert(COCO, COCO_JSON, tmp_path / "o3", min_keypoints=0, quiet=True)


def test_cli_parallel_split(tmp_path):
    from typer.testing import CliRunner

    from fastpose.cli import app

    gt = json.loads(COCO_JSON.read_text())
    many = copy.deepcopy(gt)  # 12 images (each shared image 3 times) so the worker pool is used
    for rep in (1, 2):
        many["images"] += [{**img, "id": img["id"] + rep * 10**6} for img in gt["images"]]
        many["annotations"] += [{**a, "id": a["id"] + rep * 10**7, "image_id": a["image_id"] + rep * 10**6}
                                for a in gt["annotations"]]
    path = _write(tmp_path, many)
    args = ["convert", "coco", "--images", str(COCO), "--annotations", str(path), "--out", str(tmp_path / "out"),
            "--split", "train=0.75,test=0.25", "--workers", "2", "--samples-per-shard", "4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    info = json.loads(CliRunner().invoke(app, ["info", str(tmp_path / "out"), "--json"]).output)
    assert info["splits"]["train"]["samples"] == 9 and info["splits"]["test"]["samples"] == 3
    assert info["persons"] == 36
    a, b = _samples(tmp_path / "out", "train"), _samples(tmp_path / "out", "test")
    by_id = {**a, **b}
    for img_id, s in by_id.items():  # copies are identical to the originals (order and content)
        orig = by_id[img_id % 10**6]
        np.testing.assert_array_equal(s.joints, orig.joints)
        assert s.meta["ignore_rle"] == orig.meta["ignore_rle"]
