"""COCO keypoint AP (fastpose.metrics.coco_ap) on ../shared/data/mmpose/coco/test_coco.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fastpose.metrics import COCO_SIGMAS, coco_ap, oks_sigmas

COCO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mmpose" / "coco"
JSON = COCO / "test_coco.json"
pytestmark = pytest.mark.skipif(not COCO.is_dir(), reason=f"shared test data not found at {COCO}")


def _gt_results(shift=None) -> list[dict]:
    """Every annotated person (num_keypoints > 0) as a result, optionally with its keypoints moved by shift(ann)."""
    out = []
    for ann in json.loads(JSON.read_text())["annotations"]:
        kp = np.array(ann["keypoints"], np.float64).reshape(-1, 3)
        if not (kp[:, 2] > 0).any():
            continue
        if shift is not None:
            kp[:, :2] += shift(ann)
        kp[:, 2] = 1
        out.append({"image_id": ann["image_id"], "category_id": 1, "keypoints": kp.ravel().tolist(), "score": 1.0})
    return out


def test_ground_truth_as_results_gives_ap_1():
    r = coco_ap(_gt_results(), JSON)
    assert r["AP"] == pytest.approx(1.0) and r["AR"] == pytest.approx(1.0) and r["AP50"] == pytest.approx(1.0)
    assert r["sigmas"] == "coco" and r["images"] == 4 and r["detections"] == 12


def test_jittered_ground_truth_gives_a_lower_ap():
    rng = np.random.default_rng(0)
    r = coco_ap(_gt_results(lambda ann: rng.normal(0, 6, (17, 2))), JSON)
    assert 0.2 < r["AP"] < 0.95
    assert r["AP50"] >= r["AP"] >= r["AP75"] - 1e-9
    worse = coco_ap(_gt_results(lambda ann: rng.normal(0, 25, (17, 2))), JSON)
    assert worse["AP"] < r["AP"]


def test_one_shifted_person_matches_the_oks_formula():
    # Image 785 holds one person (annotation 442619, area 27789.11, 17 labelled keypoints). Moving every keypoint by
    # (3, 4) gives OKS = mean_i exp(-25 / (2 area (2 sigma_i)^2)); with one ground truth and one detection the AP is
    # the fraction of the thresholds 0.50:0.05:0.95 that OKS reaches.
    ann = next(a for a in json.loads(JSON.read_text())["annotations"] if a["id"] == 442619)
    oks = np.mean(np.exp(-25.0 / (2 * ann["area"] * (2 * COCO_SIGMAS) ** 2)))
    want = np.mean(np.linspace(0.5, 0.95, 10) <= oks)
    results = [r for r in _gt_results(lambda a: np.array([3.0, 4.0])) if r["image_id"] == 785]
    r = coco_ap(results, JSON, image_ids=[785])
    assert 0 < want < 1  # the shift is chosen so that some thresholds pass and some fail
    assert r["AP"] == pytest.approx(want)
    assert r["images"] == 1


def test_sigmas_and_empty_results():
    assert oks_sigmas(14)[1] == "crowdpose" and len(oks_sigmas(14)[0]) == 14
    assert oks_sigmas(5)[1] == "uniform 0.1" and np.all(oks_sigmas(5)[0] == 0.1)
    r = coco_ap([], JSON)
    assert r["AP"] == 0.0 and r["detections"] == 0
    wide = coco_ap(_gt_results(lambda ann: np.array([3.0, 4.0])), JSON, sigmas=np.full(17, 1.0))
    assert wide["sigmas"] == "given" and wide["AP"] == pytest.approx(1.0)  # huge sigmas forgive a 5 px error
    with pytest.raises(ValueError, match="3 OKS sigmas for 17 keypoints"):
        coco_ap(_gt_results(), JSON, sigmas=[0.1, 0.1, 0.1])


def test_draw_persons_gives_each_person_its_own_colour():
    from fastpose.draw import draw_persons, person_colour

    colours = [person_colour(i) for i in range(6)]
    assert len(set(colours)) == 6
    assert min(max(abs(a - b) for a, b in zip(colours[i], colours[i + 1])) for i in range(5)) > 60  # neighbours differ
    img = np.zeros((60, 60, 3), np.uint8)
    persons = np.array([[[10, 10, 0.9], [10, 40, 0.8]],  # person 0: joints 0, 1
                        [[45, 10, 0.9], [45, 40, 0.1]]])  # person 1: joint 1 below min_score
    drawn = draw_persons(img, persons, [[0, 1]], min_score=0.5)
    assert img.sum() == 0
    assert tuple(drawn[10, 10]) == colours[0] and tuple(drawn[40, 10]) == colours[0]
    edge = drawn[25, 10].astype(int) - np.array(colours[0])  # the edge of person 0 in its colour (antialiased)
    assert np.abs(edge).max() < 40
    assert tuple(drawn[10, 45]) == colours[1]
    assert drawn[40, 45].sum() == 0 and drawn[25, 45].sum() == 0  # hidden joint, hence no edge
    assert draw_persons(img, np.zeros((0, 2, 3))).sum() == 0


def test_shard_ground_truth_through_coco_results_gives_ap_1(tmp_path):
    # The eval path's last step: per-sample persons in sample pixels -> source pixels -> COCO results -> AP.
    from fastpose.convert import coco
    from fastpose.evaluate import coco_metrics, coco_results, ground_truth
    from fastpose.shards import ShardDataset

    coco.convert(COCO, JSON, tmp_path / "coco", workers=1, quiet=True, split="train=0.5,test=0.5", seed=1)
    ds = ShardDataset(tmp_path / "coco", "test")
    persons = []
    for i in range(len(ds)):
        j = ds.joints(i).astype(np.float64)  # (P, K, 3) x, y, visibility
        persons.append(np.where(j[..., 2:] > 0, np.concatenate([j[..., :2], np.ones_like(j[..., 2:])], -1), np.nan))
    ids = ds.column("source_index")
    results = coco_results(persons, ids, ground_truth(ds)["transform"])
    assert len(results) == sum(len(p) for p in persons) > 0
    r = coco_metrics(results, ds, ids)
    assert r["AP"] == pytest.approx(1.0) and r["images"] == len(ds) == 2
    assert sorted(int(i) for i in ids) == sorted({res["image_id"] for res in results})
    bad = ShardDataset(tmp_path / "coco", "test")
    bad.manifest = {**bad.manifest, "source": {"annotations": str(tmp_path / "moved.json")}}
    assert "not computed" in coco_metrics(results, bad, ids)["note"]


def _tiny_coco(path, categories):
    """Two 100 x 100 images with one 3-keypoint person each (area 2000: "medium"), written as a COCO json."""
    anns = [{"id": i, "image_id": i, "category_id": 1, "iscrowd": 0, "area": 2000.0, "bbox": [10, 10, 40, 25],
             "num_keypoints": 3, "keypoints": [20, 20, 2, 30, 25, 2, 40 + i, 30, 1]} for i in (1, 2)]
    images = [{"id": i, "width": 100, "height": 100, "file_name": f"{i}.png"} for i in (2, 1)]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    return path, [{"image_id": a["image_id"], "category_id": 1, "score": 0.9,
                   "keypoints": [float(v) for v in a["keypoints"]]} for a in anns]


def test_coco_ap_joint_count_from_the_keypoint_category(tmp_path):
    path, results = _tiny_coco(tmp_path / "a.json", [{"id": 2, "name": "ball"},
                                                     {"id": 1, "name": "person", "keypoints": ["a", "b", "c"]}])
    before = json.dumps(results)
    r = coco_ap(results, path)
    assert json.dumps(results) == before  # pycocotools' loadRes writes into its dicts: a copy is given
    assert r["sigmas"] == "uniform 0.1" and r["AP"] == pytest.approx(1.0) and r["AR"] == pytest.approx(1.0)
    assert (r["detections"], r["images"]) == (2, 2)
    assert r["AP_medium"] == pytest.approx(1.0) and r["AP_large"] == -1.0  # no ground truth that large: -1
    assert coco_ap(results[:1], path, image_ids=np.array([1]))["images"] == 1
    empty = coco_ap([], path, image_ids=[2, 1])
    assert {k: empty[k] for k in ("AP", "AP50", "AR_large", "images", "detections", "sigmas")} == {
        "AP": 0.0, "AP50": 0.0, "AR_large": 0.0, "images": 2, "detections": 0, "sigmas": "uniform 0.1"}
    with pytest.raises(ValueError, match=r"^17 OKS sigmas for 3 keypoints$"):
        coco_ap(results, path, sigmas=COCO_SIGMAS)
    path, results = _tiny_coco(tmp_path / "b.json", [{"id": 1, "name": "person", "keypoints": []}])
    with pytest.raises(ValueError, match=r"^3 OKS sigmas for 17 keypoints$"):  # no keypoint names: COCO's 17
        coco_ap(results, path, sigmas=[0.1] * 3)
    data = json.loads(path.read_text())
    del data["categories"]
    (tmp_path / "c.json").write_text(json.dumps(data))
    assert coco_ap([], tmp_path / "c.json")["sigmas"] == "coco"  # no categories at all: COCO's 17 keypoints
