"""`fastpose convert coco`: COCO-style keypoint annotations (COCO, OCHuman, CrowdPose, ...) into multi-person shards.

Reads a `person_keypoints_*.json` (keys images, annotations, categories) and the image folder. One sample per image
that has at least one person with >= --min-keypoints labelled keypoints; the image is stored as it is (no crop).

- Joint set: the keypoint category's `keypoints` names are the dataset's joint_names (CrowdPose has its own 14), its
  `skeleton` (1-based in the json) becomes 0-based; symmetric pairs (all_joints) pair `left_X` with `right_X`, every
  other name is its own group. A skeleton that names keypoints beyond the category's count (CrowdPose's json copies
  COCO's 17-keypoint skeleton) is dropped, with a note.
- Persons: non-crowd annotations with enough labelled keypoints; joints (P, K, 3) hold x, y and COCO's visibility
  flag (1 = labelled, occluded; 2 = visible) for v > 0, and 0, 0, 0 where unlabelled. Per person the shards keep
  person_box (COCO bbox x, y, w, h), person_area (segmentation area) and person_id (annotation id), as OKS evaluation
  and a COCO results json need them.
- Ignore regions: crowd annotations and persons with fewer labelled keypoints (0 keypoints in COCO's own sense) are
  not training targets but are people; their masks (polygons or RLE decoded with pycocotools; the bbox where the
  json has no segmentation, as CrowdPose) are stored per sample as compressed RLE with str counts in
  meta["ignore_rle"] (a list of {"size": [h, w], "counts": str}, one per region; meta["ignore_ids"] their
  annotation ids), so losses can skip those pixels; meta["image_id"] is the COCO image id.

Coordinates: COCO keypoint x, y are taken as they are, i.e. as already in the project's convention (pixel centres at
integer coordinates), the same convention COCO's own evaluation and the reference's COCO path used.

Entry indices in problem reports are COCO image ids.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from fastpose.convert import common
from fastpose.convert.common import Entry, EntryProblem
from fastpose.errors import UserError
from fastpose.shards import Sample, ShardWriter


def read_annotations(path: str | Path) -> dict:
    """Load and check the json's overall shape (a COCO annotation file, not e.g. MPII's json list)."""
    path = Path(path)
    if path.is_dir():
        found = sorted(p.name for p in path.glob("person_keypoints_*.json"))
        hint = f" It holds {', '.join(found)}: pass one of those." if found else ""
        raise UserError(f"--annotations {path} is a folder, but a COCO keypoints json file is expected.{hint}")
    if not path.is_file():
        raise UserError(f"--annotations {path} not found. Pass a COCO keypoints file, e.g. "
                        f"annotations/person_keypoints_val2017.json.")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e}). Pass a COCO keypoints file "
                        f"(person_keypoints_*.json).") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                             for k in ("images", "annotations", "categories")):
        what = f"keys {', '.join(sorted(data))}" if isinstance(data, dict) else f"a JSON {type(data).__name__}"
        raise UserError(f"{path} is not a COCO annotation file: it is {what}, but `convert coco` needs the lists "
                        f"images, annotations and categories (person_keypoints_*.json).")
    return data


def keypoint_category(data: dict, path: Path) -> dict:
    """The one category with keypoint names."""
    cats = [c for c in data["categories"] if isinstance(c, dict) and c.get("keypoints")]
    if not cats:
        names = ", ".join(str(c.get("name")) for c in data["categories"] if isinstance(c, dict)) or "none"
        raise UserError(f"{path}: no category has keypoint names (categories: {names}). This is an annotation file "
                        f"of another kind (instances_*/captions_*?); pass person_keypoints_*.json.")
    if len(cats) > 1:
        listed = ", ".join(str(c.get("name")) for c in cats)
        raise UserError(f"{path}: {len(cats)} categories have keypoints ({listed}); `convert coco` converts one: split "
                        f"the file per category.")
    return cats[0]


def joint_groups(names: list[str]) -> list[list[int]]:
    """Symmetric groups: [i, j] for left_X / right_X, [i] for any other name (in order of first index)."""
    index = {n.lower(): i for i, n in enumerate(names)}
    groups, seen = [], set()
    for i, name in enumerate(names):
        if i in seen:
            continue
        low = name.lower()
        partner = None
        for a, b in (("left_", "right_"), ("right_", "left_")):
            if low.startswith(a):
                partner = index.get(b + low[len(a):])
        group = sorted({i, partner}) if partner is not None else [i]
        seen.update(group)
        groups.append(group)
    return groups


def skeleton_of(cat: dict, num_joints: int) -> tuple[list[list[int]], str]:
    """0-based skeleton edges, and a note when the json's skeleton is unusable (then empty)."""
    edges = cat.get("skeleton") or []
    try:
        pairs = [[int(a), int(b)] for a, b in edges]
    except (TypeError, ValueError):
        return [], "the category's skeleton is not a list of [a, b] pairs and was dropped"
    bad = [p for p in pairs if not (1 <= p[0] <= num_joints and 1 <= p[1] <= num_joints)]
    if bad:
        return [], (f"the category's skeleton names keypoints outside 1..{num_joints} (e.g. {bad[0]}: it was "
                    f"written for another keypoint set) and was dropped")
    return [[a - 1, b - 1] for a, b in pairs], ""


def _labelled(ann: dict, num_joints: int) -> np.ndarray:
    """(K, 3) x, y, v of an annotation's keypoints; ValueError with a reason if malformed."""
    kp = ann.get("keypoints")
    if kp is None:
        return np.zeros((num_joints, 3))
    arr = np.asarray(kp, dtype=np.float64).ravel() if isinstance(kp, list) else None
    if arr is None or arr.size != 3 * num_joints:
        n = len(kp) if isinstance(kp, list) else type(kp).__name__
        raise ValueError(f"annotation id {ann.get('id')} has {n} keypoint values, expected {3 * num_joints} "
                         f"(x, y, v for {num_joints} keypoints)")
    arr = arr.reshape(num_joints, 3)
    if not np.isin(arr[:, 2], (0, 1, 2)).all():
        raise ValueError(f"annotation id {ann.get('id')} has visibility flags other than 0, 1, 2")
    return arr


def image_entries(data: dict, cat_id, num_joints: int, images: Path, min_keypoints: int,
                  path: Path) -> tuple[list[Entry], list, int]:
    """Entries (index = image id) of images with a person; the ids of annotations whose image is unknown; the count
    of images without a person with keypoints (not converted)."""
    by_image: dict = {}
    ids = []
    for k, img in enumerate(data["images"]):
        name = img.get("file_name") if isinstance(img, dict) else None
        if not isinstance(img, dict) or not isinstance(img.get("id"), int) or not (isinstance(name, str) and name):
            raise UserError(f"{path}: images[{k}] lacks an integer id or a file_name ({str(img)[:100]}). Fix the "
                            f"annotation file.")
        ids.append(img["id"])
        by_image[img["id"]] = []
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1}) if len(ids) < 100000 else []
        raise UserError(f"{path}: duplicate image ids {dup[:10]}; each image must be listed once.")
    orphans = []
    for ann in data["annotations"]:
        if not isinstance(ann, dict) or ann.get("category_id") != cat_id:
            continue
        if isinstance(ann.get("image_id"), int) and ann["image_id"] in by_image:  # (a list is unhashable)
            by_image[ann["image_id"]].append(ann)
        else:
            orphans.append(ann.get("id"))
    entries, no_person = [], 0
    for img in data["images"]:
        anns = by_image[img["id"]]
        persons, ignore, problems = [], [], []
        for ann in anns:
            try:
                kp = _labelled(ann, num_joints)
            except (ValueError, TypeError) as e:
                problems.append(("malformed entry", f"image id {img['id']}: {e}"))
                continue
            count = int((kp[:, 2] > 0).sum())
            if ann.get("iscrowd") or count < max(min_keypoints, 1):
                ignore.append(ann)
            else:
                persons.append((ann, kp))
        if not persons and not problems:
            no_person += 1
            continue
        joints = np.zeros((len(persons), num_joints, 3), np.float32)  # (P, K, 3)
        for p, (_, kp) in enumerate(persons):
            on = kp[:, 2] > 0
            joints[p, on] = kp[on]
        box = np.array([ann.get("bbox") if _is_box(ann.get("bbox")) else [np.nan] * 4 for ann, _ in persons],
                       np.float32).reshape(-1, 4)
        area = np.array([float(ann["area"]) if isinstance(ann.get("area"), (int, float)) else np.nan
                         for ann, _ in persons], np.float32)
        pid = np.array([int(ann["id"]) if isinstance(ann.get("id"), int) else -1 for ann, _ in persons], np.int64)
        h, w = img.get("height"), img.get("width")
        declared = (3, int(h), int(w)) if isinstance(h, int) and isinstance(w, int) else None
        entries.append(Entry(index=img["id"], image_path=images / img["file_name"], joints=joints,
                             declared_size=declared, person_box=box, person_area=area, person_id=pid,
                             meta={"image_id": img["id"]}, problems=problems,
                             payload=[(a.get("id"), a.get("segmentation"), a.get("bbox")) for a in ignore]))
    return entries, orphans, no_person


def _is_box(box) -> bool:
    return isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)


def _near_image(coords: list, height: int, width: int, what: str) -> list:
    """Polygon / box numbers, checked: finite and within the image's size of the image. pycocotools rasterises a
    polygon by walking its edges, so one vertex at 1e300 would allocate without bound."""
    a = np.asarray(coords, dtype=np.float64)  # ValueError / TypeError for non-numbers
    reach = max(height, width)
    if not (np.isfinite(a).all() and (np.abs(a) <= 2 * reach).all()):
        raise ValueError(f"{what} has coordinates that are not finite or lie far outside the {width}x{height} image")
    return coords


def ignore_rle(segmentation, bbox, height: int, width: int) -> dict | None:
    """One ignore region as compressed RLE {"size": [h, w], "counts": str}; None if it has neither mask nor box."""
    rle = None
    if isinstance(segmentation, dict) and "counts" in segmentation:
        if list(segmentation.get("size", [])) != [height, width]:
            raise ValueError(f"RLE size {segmentation.get('size')} is not the image's [{height}, {width}]")
        counts = segmentation["counts"]
        if isinstance(counts, list):  # uncompressed RLE (crowd annotations): run lengths covering the image
            if not (all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts)
                    and sum(counts) == height * width):
                raise ValueError(f"the uncompressed RLE's counts are not run lengths adding up to {height}x{width}")
            rle = mask_utils.frPyObjects(segmentation, height, width)
        elif isinstance(counts, str | bytes):
            rle = {"size": [height, width], "counts": counts.encode() if isinstance(counts, str) else counts}
            mask_utils.area(rle)  # decodes: a damaged string raises here, not in training
        else:
            raise ValueError(f"RLE counts is {type(counts).__name__}, not a string or a list of run lengths")
    elif isinstance(segmentation, list):
        polys = [_near_image(p, height, width, "a polygon") for p in segmentation
                 if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0]
        if polys:
            rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    if rle is None and _is_box(bbox):
        _near_image(bbox, height, width, "the bbox")
        rle = mask_utils.frPyObjects(np.array([bbox], np.float64), height, width)[0]
    if rle is None:
        return None
    counts = rle["counts"]
    return {"size": [int(v) for v in rle["size"]], "counts": counts.decode() if isinstance(counts, bytes) else counts}


def load_coco_image(entry: Entry, load=common.load_image_entry) -> Sample:
    """Worker: the default image load and checks, plus the ignore regions as RLE in meta."""
    sample = load(entry)
    _, h, w = sample.size
    rles, ids = [], []
    for ann_id, segmentation, bbox in entry.payload:
        try:
            rle = ignore_rle(segmentation, bbox, h, w)
        except (ValueError, TypeError, IndexError, OverflowError) as e:
            raise EntryProblem("malformed entry", f"image id {entry.index}, annotation id {ann_id}: "
                                                  f"segmentation: {e}") from None
        if rle is not None:
            rles.append(rle)
            ids.append(ann_id)
    sample.meta = {**sample.meta, "ignore_rle": rles, "ignore_ids": ids}
    return sample


class _LoadCoco:
    """Picklable load function for the worker pool (optionally re-encoding the image)."""

    def __init__(self, reencode_jpeg: int | None):
        self.inner = common.Reencode(common.load_image_entry, reencode_jpeg) if reencode_jpeg else \
            common.load_image_entry

    def __call__(self, entry: Entry) -> Sample:
        return load_coco_image(entry, self.inner)


def convert(images: str | Path, annotations: str | Path, out: str | Path, *, min_keypoints: int = 1,
                 split: str | None = None, seed: int = 0, workers: int | None = None, skip_bad: bool = False,
                 overwrite: bool = False, samples_per_shard: int = 512, reencode_jpeg: int | None = None,
                 quiet: bool = False) -> dict:
    """Convert a COCO keypoints json + image folder into shards at `out`; returns {"samples": per split, "note"}."""
    images, path = Path(images), Path(annotations)
    if min_keypoints < 1:
        raise UserError(f"--min-keypoints {min_keypoints}: must be >= 1 (a person needs a labelled keypoint).")
    if not images.is_dir():
        raise UserError(f"--images {images} is not a folder; pass the folder holding the json's file_name images "
                        f"(e.g. coco/val2017).")
    data = read_annotations(path)
    cat = keypoint_category(data, path)
    if not (isinstance(cat["keypoints"], list) and all(isinstance(n, str) and n for n in cat["keypoints"])):
        raise UserError(f"{path}: the keypoint category's keypoints is {str(cat['keypoints'])[:80]}, not a list of "
                        f"keypoint names. Fix the annotation file.")
    names = list(cat["keypoints"])
    num_joints = len(names)
    skeleton, skeleton_note = skeleton_of(cat, num_joints)
    entries, orphans, no_person = image_entries(data, cat.get("id"), num_joints, images, min_keypoints, path)
    if orphans and not skip_bad:
        raise UserError(f"{path}: {len(orphans)} annotation(s) refer to image ids not in `images` (annotation ids "
                        f"{orphans[:10]}{' ...' if len(orphans) > 10 else ''}). Fix the file, or pass --skip-bad "
                        f"to skip them (they are listed in the manifest).")
    splits = common.assign_splits(len(entries), common.parse_split(split), seed)
    source = {"format": "coco", "annotations": str(path), "images": str(images), "category": cat.get("name"),
              "min_keypoints": min_keypoints, "split": split or "", "seed": seed, "images_without_person": no_person}
    if skeleton_note:
        source["skeleton_note"] = skeleton_note
    writer = ShardWriter(out, num_joints, names, joint_groups(names), skeleton, samples_per_shard=samples_per_shard,
                         source=source, overwrite=overwrite)
    writer.skipped += [{"index": a, "problem": "annotation of an unknown image", "detail": f"annotation id {a}"}
                       for a in orphans]
    written = common.convert_entries(entries, writer, source=str(path), splits=splits, load=_LoadCoco(reencode_jpeg),
                                     workers=workers, skip_bad=skip_bad, quiet=quiet,
                                     index_name="numbers are COCO image ids")
    notes = [f"{no_person} images without a person with >= {min_keypoints} keypoints were not converted"
             if no_person else "", skeleton_note]
    return {"samples": written, "note": "; ".join(n for n in notes if n)}
