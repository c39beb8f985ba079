"""Property-based fuzzing of the COCO json and DeepLabCut project readers (`fastpose convert coco | dlc`).

A valid tiny source (two 24 x 32 PNGs, three keypoints) is damaged by the strategies below: keys removed or given
values of other types, keypoint arrays of other lengths, non-finite numbers, duplicate or mismatched ids; CSVs with
other header depths, extra or missing columns, non-numeric cells, unknown body parts, mismatched individuals, absent
images, config.yaml variants. The outcome is shards whose samples hold finite labelled joints, or a one-paragraph
UserError naming the file with nothing that looks like a dataset left behind; never another exception.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fastpose.convert import coco, dlc, mpii
from fastpose.errors import UserError
from fastpose.shards import ShardDataset, read_manifest

H, W = 24, 32
NAMES = ["nose", "left_paw", "right_paw"]

values = st.recursive(st.none() | st.booleans() | st.integers(-3, 40) | st.floats(allow_nan=True, allow_infinity=True)
                      | st.text(max_size=4), lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=3), inner, max_size=2), max_leaves=8)


def _png() -> bytes:
    ok, data = cv2.imencode(".png", np.full((H, W, 3), 77, np.uint8))
    assert ok
    return data.tobytes()


def check_outcome(run, out: Path, *names: str, size: tuple | None = (3, H, W)) -> None:
    """run() writes shards at out or raises a one-paragraph UserError naming one of `names`; nothing else. Every
    written sample has the image's size (when given) and finite labelled joints."""
    try:
        run()
    except UserError as e:
        text = str(e)
        assert "\n" not in text.strip() and "Traceback" not in text, text
        assert any(n in text for n in names), text
        assert not (out / "manifest.json").exists()
        return
    manifest = read_manifest(out)
    for split in manifest["splits"]:
        ds = ShardDataset(out, split)
        for i in range(len(ds)):
            s = ds[i]
            assert size is None or s.size == size
            assert s.joints.shape[1:] == (len(manifest["joint_names"]), 3)
            assert np.isfinite(s.joints[..., :2][s.joints[..., 2] > 0]).all()
        ds.close()


# ------------------------------------------------------------------------------------------------------------ COCO
COCO_BASE = {
    "images": [{"id": 1, "file_name": "a.png", "height": H, "width": W},
               {"id": 2, "file_name": "b.png", "height": H, "width": W}],
    "annotations": [
        {"id": 10, "image_id": 1, "category_id": 1, "keypoints": [5, 6, 2, 10, 12, 2, 20, 8, 1], "num_keypoints": 3,
         "bbox": [2, 2, 20, 15], "area": 300.0, "iscrowd": 0, "segmentation": [[2, 2, 22, 2, 22, 17, 2, 17]]},
        {"id": 11, "image_id": 2, "category_id": 1, "keypoints": [0, 0, 0, 0, 0, 0, 0, 0, 0], "num_keypoints": 0,
         "bbox": [1, 1, 5, 5], "area": 25.0, "iscrowd": 0, "segmentation": [[1, 1, 6, 1, 6, 6]]},
        {"id": 12, "image_id": 2, "category_id": 1, "keypoints": [3, 4, 2, 0, 0, 0, 9, 9, 2], "num_keypoints": 2,
         "bbox": [1, 1, 10, 10], "area": 100.0, "iscrowd": 1,
         "segmentation": {"size": [H, W], "counts": [0, 10, H * W - 10]}},
        {"id": 13, "image_id": 2, "category_id": 1, "keypoints": [7, 7, 2, 8, 8, 2, 9, 9, 2], "num_keypoints": 3,
         "bbox": [6, 6, 4, 4], "area": 16.0, "iscrowd": 0, "segmentation": []},
    ],
    "categories": [{"id": 1, "name": "person", "keypoints": NAMES, "skeleton": [[1, 2], [1, 3]]}],
}

coco_paths = st.one_of(
    st.tuples(st.sampled_from(["images", "annotations", "categories", "info"])),
    st.tuples(st.just("images"), st.integers(0, 1), st.sampled_from(["id", "file_name", "height", "width"])),
    st.tuples(st.just("annotations"), st.integers(0, 3),
              st.sampled_from(["id", "image_id", "category_id", "keypoints", "num_keypoints", "bbox", "area",
                               "iscrowd", "segmentation"])),
    st.tuples(st.just("categories"), st.just(0), st.sampled_from(["id", "keypoints", "skeleton", "name"])),
    st.tuples(st.just("annotations"), st.integers(0, 3), st.just("keypoints"), st.integers(0, 8)),
)
coco_edits = st.lists(st.tuples(coco_paths, values | st.just("<delete>")), min_size=1, max_size=3)


def _edit(doc, path: tuple, value):
    target = doc
    for key in path[:-1]:
        if isinstance(target, dict) and key in target or isinstance(target, list) and isinstance(key, int) \
                and key < len(target):
            target = target[key]
        else:
            return
    last = path[-1]
    if isinstance(target, dict) or isinstance(target, list) and isinstance(last, int) and last < len(target):
        if value == "<delete>":
            if isinstance(target, dict):
                target.pop(last, None)
            else:
                del target[last]
        else:
            target[last] = value


@pytest.fixture(scope="module")
def coco_images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzzcoco")
    (root / "images").mkdir()
    for name in ("a.png", "b.png"):
        (root / "images" / name).write_bytes(_png())
    return root


@given(edits=coco_edits, skip_bad=st.booleans())
@example(edits=[(("annotations", 0, "keypoints"), [1, 2, 2])], skip_bad=False)  # wrong length
@example(edits=[(("annotations", 0, "keypoints", 0), float("nan"))], skip_bad=False)  # non-finite
@example(edits=[(("images", 1, "id"), 1)], skip_bad=False)  # duplicate image ids
@example(edits=[(("annotations", 1, "id"), 10)], skip_bad=False)  # duplicate annotation ids
@example(edits=[(("annotations", 0, "image_id"), 99)], skip_bad=True)  # an annotation of an unknown image
@example(edits=[(("annotations", 0, "num_keypoints"), 0)], skip_bad=False)  # disagrees with the array
@example(edits=[(("annotations", 0, "keypoints", 0), "5")], skip_bad=False)  # a string coordinate
@example(edits=[(("annotations", 0, "keypoints", 0), [5])], skip_bad=False)  # a nested list
@example(edits=[(("annotations", 0, "keypoints", 0), None)], skip_bad=False)  # a null coordinate
@example(edits=[(("images", 0, "height"), 0.5)], skip_bad=False)
@example(edits=[(("categories", 0, "keypoints"), "abc")], skip_bad=False)
@example(edits=[(("categories", 0, "keypoints"), [1, [2]])], skip_bad=False)
@example(edits=[(("annotations", 2, "segmentation"), {"size": [H, W], "counts": 5})], skip_bad=False)
@example(edits=[(("annotations", 2, "segmentation"), {"size": "x", "counts": [1]})], skip_bad=False)
@example(edits=[(("annotations", 1, "segmentation"), [[1, "a", 3, 4, 5, 6]])], skip_bad=False)
@example(edits=[(("annotations", 1, "bbox"), [1, 2, float("inf"), 4]), (("annotations", 1, "segmentation"), None)],
         skip_bad=False)
@example(edits=[(("annotations", 0, "iscrowd"), [1])], skip_bad=False)
@example(edits=[(("images", 0, "file_name"), 5)], skip_bad=False)
@example(edits=[(("images", 0, "file_name"), ["a.png"])], skip_bad=False)
def test_fuzz_coco(coco_images, edits, skip_bad):
    doc = copy.deepcopy(COCO_BASE)
    for path, value in edits:
        _edit(doc, path, value)
    folder = Path(tempfile.mkdtemp(dir=coco_images))
    ann = folder / "person_keypoints.json"
    ann.write_text(json.dumps(doc))
    out = folder / "shards"
    check_outcome(lambda: coco.convert(coco_images / "images", ann, out, workers=1, skip_bad=skip_bad, quiet=True),
                  out, str(ann), "--annotations")


# ----------------------------------------------------------------------------------------------------- DeepLabCut
DLC_CONFIG = "bodyparts:\n- nose\n- left_paw\n- right_paw\nskeleton:\n- [nose, left_paw]\n"
DLC_ROWS = [
    ["scorer", "me", "me", "me", "me", "me", "me"],
    ["bodyparts", "nose", "nose", "left_paw", "left_paw", "right_paw", "right_paw"],
    ["coords", "x", "y", "x", "y", "x", "y"],
    ["labeled-data/v1/img0.png", "5", "6", "10.5", "12", "", ""],
    ["labeled-data/v1/img1.png", "7", "8", "1", "2", "30", "20"],
]


@st.composite
def dlc_projects(draw) -> dict:
    rows = [list(r) for r in DLC_ROWS]
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["cell", "drop_row", "add_row", "drop_col", "add_col", "individuals", "short",
                                     "three_index"]))
        r = draw(st.integers(0, len(rows) - 1)) if rows else 0
        if kind == "cell" and rows:
            c = draw(st.integers(0, len(rows[r]))) if rows[r] else 0
            value = draw(st.sampled_from(["", "nan", "inf", "-inf", "abc", "1e400", "x", "y", "likelihood",
                                          "tail", "labeled-data/v1/none.png", "individuals", "scorer", "3", " 4 "]))
            rows[r][c:c + 1] = [value]
        elif kind == "drop_row" and rows:
            del rows[r]
        elif kind == "add_row":
            rows.insert(r, draw(st.lists(st.sampled_from(["", "1", "x", "nose", "scorer", "coords"]), max_size=8)))
        elif kind == "drop_col":
            c = draw(st.integers(0, 6))
            rows = [row[:c] + row[c + 1:] for row in rows]
        elif kind == "add_col":
            rows = [row + [draw(st.sampled_from(["", "5", "x", "tail"]))] for row in rows]
        elif kind == "individuals":  # a multi-animal table whose individuals row may not match the columns
            n = draw(st.integers(1, 8))
            rows.insert(1, ["individuals"] + draw(st.lists(st.sampled_from(["m1", "m2"]), min_size=n, max_size=n)))
        elif kind == "short" and rows:
            rows[r] = rows[r][:draw(st.integers(0, 3))]
        elif kind == "three_index":  # newer DeepLabCut: labeled-data / video / file in three index columns
            rows = [(["", ""] if row and row[0] in ("scorer", "bodyparts", "coords", "individuals")
                     else ["labeled-data", "v1"]) + ([row[0].rsplit("/", 1)[-1]] if row and row[0].startswith("lab")
                                                     else row[:1]) + row[1:] for row in rows]
    config = draw(st.sampled_from([DLC_CONFIG, "", "- a\n- b\n", "bodyparts: nose\n", "bodyparts: [nose, 3]\n",
                                   "bodyparts: [nose]\n", "{unclosed", "multianimalbodyparts: [nose, left_paw, "
                                   "right_paw]\nuniquebodyparts: [tail]\n", DLC_CONFIG + "skeleton: 5\n",
                                   DLC_CONFIG + "skeleton: [[nose]]\n"]))
    return {"rows": rows, "config": config, "image1": draw(st.booleans())}


@pytest.fixture(scope="module")
def dlc_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzzdlc")


def _csv(rows) -> str:
    return "".join(",".join(row) + "\n" for row in rows)


@given(spec=dlc_projects(), skip_bad=st.booleans())
@example(spec={"rows": [r[:1] for r in DLC_ROWS], "config": DLC_CONFIG, "image1": True}, skip_bad=False)  # no x/y
@example(spec={"rows": DLC_ROWS, "config": "- a\n- b\n", "image1": True}, skip_bad=False)  # not a mapping
@example(spec={"rows": DLC_ROWS, "config": "{unclosed", "image1": True}, skip_bad=False)  # not YAML
@example(spec={"rows": DLC_ROWS, "config": "bodyparts: nose\n", "image1": True}, skip_bad=False)  # not a list
@example(spec={"rows": DLC_ROWS, "config": DLC_CONFIG + "skeleton: [[nose]]\n", "image1": True}, skip_bad=False)
@example(spec={"rows": [DLC_ROWS[0], ["individuals", "m1"], *DLC_ROWS[1:]], "config": DLC_CONFIG, "image1": True},
         skip_bad=False)  # an individuals row shorter than the table
@example(spec={"rows": [DLC_ROWS[0], DLC_ROWS[1][:3], *DLC_ROWS[2:]], "config": DLC_CONFIG, "image1": True},
         skip_bad=False)  # a bodyparts row shorter than the coords row
@example(spec={"rows": DLC_ROWS, "config": DLC_CONFIG, "image1": False}, skip_bad=True)  # an absent image
def test_fuzz_dlc(dlc_root, spec, skip_bad):
    project = Path(tempfile.mkdtemp(dir=dlc_root)) / "Proj-me-2024-01-01"
    (project / "labeled-data" / "v1").mkdir(parents=True)
    (project / "config.yaml").write_text(spec["config"])
    (project / "labeled-data" / "v1" / "img0.png").write_bytes(_png())
    if spec["image1"]:
        (project / "labeled-data" / "v1" / "img1.png").write_bytes(_png())
    table = project / "labeled-data" / "v1" / "CollectedData_me.csv"
    table.write_text(_csv(spec["rows"]))
    out = project.parent / "shards"
    check_outcome(lambda: dlc.convert(project, out, workers=1, skip_bad=skip_bad, quiet=True), out, str(project))


@pytest.mark.slow
@settings(settings.get_profile("fuzz-long"))
@given(edits=coco_edits, skip_bad=st.booleans())
def test_fuzz_coco_long(coco_images, edits, skip_bad):
    test_fuzz_coco.hypothesis.inner_test(coco_images, edits, skip_bad)


@pytest.mark.slow
@settings(settings.get_profile("fuzz-long"))
@given(spec=dlc_projects(), skip_bad=st.booleans())
def test_fuzz_dlc_long(dlc_root, spec, skip_bad):
    test_fuzz_dlc.hypothesis.inner_test(dlc_root, spec, skip_bad)


def test_dlc_regressions_are_one_paragraph(dlc_root):
    """Two of the found crashes, by name: a config.yaml that is a YAML list, and a table with no x/y column."""
    project = dlc_root / "Reg-me-2024-01-01"
    (project / "labeled-data" / "v1").mkdir(parents=True)
    (project / "config.yaml").write_text("- a\n- b\n")
    (project / "labeled-data" / "v1" / "CollectedData_me.csv").write_text(_csv(DLC_ROWS))
    with pytest.raises(UserError, match=r"config.yaml: the top level must be a mapping"):
        dlc.read_project(project)
    (project / "config.yaml").write_text(DLC_CONFIG)
    (project / "labeled-data" / "v1" / "CollectedData_me.csv").write_text(_csv([r[:1] for r in DLC_ROWS]))
    with pytest.raises(UserError, match=r"CollectedData_me.csv: the coords row has no x / y column"):
        dlc.read_project(project)
    shutil.rmtree(project)


# ------------------------------------------------------------------------------------------------------------ MPII
def _structs(items: list[dict]) -> np.ndarray:
    """A 1 x N MATLAB struct array (scipy.io.savemat writes a structured object array as one)."""
    names = sorted({k for d in items for k in d})
    arr = np.zeros((1, len(items)), dtype=[(n, object) for n in names] or [("empty", object)])
    for i, d in enumerate(items):
        for n in names:
            arr[0, i][n] = d.get(n, np.zeros((0, 0)))
    return arr


MPII_IDS = [0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13, 14, 15]


def _point(pid: int) -> dict:
    return {"x": 30.0 + pid, "y": 20.0 + 2 * pid, "id": float(pid), "is_visible": 1.0}


def _rect(**change) -> dict:
    rect = {"x1": 28.0, "y1": 5.0, "x2": 36.0, "y2": 15.0, "annopoints": {"point": [_point(p) for p in MPII_IDS]}}
    rect.update(change)
    return rect


mpii_edits = st.lists(st.tuples(
    st.integers(0, 1),  # which rectangle of image 1
    st.sampled_from(["drop_annopoints", "empty_annorect", "is_visible", "x", "id", "x1", "drop_point", "points_empty",
                     "img_train", "single_person", "name", "drop_release_field"]),
    st.sampled_from(["1", "0", "abc", "", 3.5, -1.0, 16.0, float("nan"), float("inf"), 1e300, [1.0, 2.0], None])),
    min_size=1, max_size=3)


def _mpii_release(edits) -> dict:
    rects = [_rect(), _rect(x1=60.0, x2=68.0)]
    points = [[_point(p) for p in MPII_IDS] for _ in rects]
    release = {"img_train": np.array([[1.0]]), "single_person": np.array([[1.0]], dtype=object),
               "name": "a.jpg", "annorect": True}
    for r, kind, value in edits:
        v = np.zeros((0, 0)) if value is None else value
        if kind == "drop_annopoints":
            rects[r].pop("annopoints", None)
        elif kind == "empty_annorect":
            release["annorect"] = False
        elif kind in ("is_visible", "x", "id") and points[r]:
            points[r][0][kind] = v
        elif kind == "x1":
            rects[r]["x1"] = v
        elif kind == "drop_point" and points[r]:
            points[r][0].pop("x", None)
        elif kind == "points_empty":
            points[r] = []
        elif kind in ("img_train", "single_person", "name"):
            release[kind] = v
        else:
            release["drop"] = True
    for r, rect in enumerate(rects):
        if "annopoints" in rect:
            rect["annopoints"] = {"point": _structs(points[r])} if points[r] else {"point": np.zeros((0, 0))}
    anno = {"image": {"name": release["name"]},
            "annorect": _structs(rects) if release["annorect"] else np.zeros((0, 0))}
    out = {"annolist": _structs([anno]), "img_train": release["img_train"],
           "single_person": np.array([[release["single_person"]]], dtype=object)}
    if release.get("drop"):
        del out["single_person"]
    return {"RELEASE": out}


@pytest.fixture(scope="module")
def mpii_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzzmpii")
    (root / "images").mkdir()
    ok, jpg = cv2.imencode(".jpg", np.full((60, 100, 3), 120, np.uint8))
    (root / "images" / "a.jpg").write_bytes(jpg.tobytes())
    return root


@given(edits=mpii_edits, skip_bad=st.booleans())
@example(edits=[(0, "is_visible", "abc")], skip_bad=False)  # is_visible as a string that is no number
@example(edits=[(0, "img_train", "abc")], skip_bad=False)
@example(edits=[(0, "single_person", "abc")], skip_bad=False)
@example(edits=[(0, "drop_annopoints", None), (1, "drop_annopoints", None)], skip_bad=False)  # nobody annotated
@example(edits=[(0, "empty_annorect", None)], skip_bad=False)
@example(edits=[(0, "x1", 1e300)], skip_bad=False)  # a head box that gives an absurd scale
@example(edits=[(0, "x", [1.0, 2.0])], skip_bad=True)
@example(edits=[(0, "name", [1.0, 2.0])], skip_bad=False)  # image.name a numeric array
def test_fuzz_mpii_release(mpii_root, edits, skip_bad):
    folder = Path(tempfile.mkdtemp(dir=mpii_root))
    mat_path = folder / "release.mat"
    scipy.io.savemat(mat_path, _mpii_release(edits))
    out = folder / "shards"
    check_outcome(lambda: mpii.convert(mpii_root, out, mat=mat_path, workers=1, skip_bad=skip_bad, quiet=True),
                  out, str(mat_path), size=None)  # crops: their size depends on the head box
