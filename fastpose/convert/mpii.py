"""`fastpose convert mpii`: the MPII Human Pose RELEASE into cropped, rescaled single-person shards.

Reads `MPII_ROOT/mpii_human_pose_v1_u12_1.mat` (MATLAB struct `RELEASE`; ../shared/data/mpii-release/
MPII_RELEASE_FORMAT.txt summarises it) and `MPII_ROOT/images/*.jpg`, and reproduces the semantics of the reference's
MATLAB preprocessing (pose-tensorflow matlab/mpii/preprocess_single.m, util_crop_data_train.m):

- only images with `img_train == 1`; one sample per annotated person (`annorect` with `annopoints`);
- head size = 0.6 x the diagonal of the head box (x1,y1)-(x2,y2); sc = head size / 50, so the head becomes ~50 px and
  the person ~400 px; the whole image is resized by 1/sc with antialiased bicubic interpolation (PIL's BICUBIC,
  whose kernel widens by the shrink factor as MATLAB's imresize does; cv2.INTER_CUBIC would alias on the 1.4-6x
  shrinks of MPII); output size ceil(W / sc) x ceil(H / sc) as MATLAB's imresize;
- crop = bounding box of all the person's annotated points (all 16 MPII ids) in the resized image, rounded to pixels,
  padded by 130 px for the image's `single_person` rectangles and 65 px for its other annotated people, clamped to the
  image; for a `single_person` rectangle with other annotated people, the crop's x range is also clamped to the
  nearest other person's joint left of (right of) the person's box, +20 px (-20 px): isolation; a joint that
  isolation cuts off keeps its (outside-the-crop) coordinates and label, as in the reference;
- MPII ids [0,1,2,3,4,5,10,11,12,13,14,15,8,9] become DeeperCut's joints 0..13 (pelvis and thorax are dropped).

Coordinates: MPII's are 1-based MATLAB pixels; they become the project's convention (pixel centres at integer
coordinates, 0-based) once, on reading, by x - 1, y - 1 (head box too). Resizing by a factor s then maps
x -> (x + 0.5) * s - 0.5, with s = W' / W per axis (exactly what PIL's resize does for that output size).

Visibility: MPII's is_visible 1 -> 2 (visible), 0 -> 1 (occluded); an empty is_visible (common for the head joints)
-> 2, since the point is labelled and MPII leaves it empty only where it did not ask.

Per sample the shards keep: the crop (JPEG, quality 95 by default), joints and the head box in crop pixels, the
affine `transform` mapping crop pixels back to original image pixels (0-based), source_index = the RELEASE image
index (1-based, as in MATLAB's annolist(i)), and meta {image_index, person_index (1-based annorect r), single_person,
scale (sc)}.

Held-out persons: `--val-list FILE` holds (image index, person index) pairs, 1-based as in RELEASE (the common MPII
validation split has 2958 persons): a text file with two integers per line, or a .mat with the variables
RELEASE_img_index and RELEASE_person_index (as ../shared/data/mpii-release/detections.mat). They become split `test`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import scipy.io
from PIL import Image

from fastpose.config import MPII_ALL_JOINTS, MPII_JOINT_NAMES, MPII_SKELETON
from fastpose.convert import common
from fastpose.convert.common import Entry, EntryProblem, check_joints
from fastpose.errors import UserError
from fastpose.shards import Sample, ShardWriter

MAT_NAME = "mpii_human_pose_v1_u12_1.mat"
MPII_NUM_IDS = 16
# DeeperCut joint k is MPII id MPII_TO_DEEPERCUT[k].
MPII_TO_DEEPERCUT = [0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15, 8, 9]
HEAD_SIZE_RATIO = 0.6  # head size = 0.6 x head-box diagonal (MPII's PCKh protocol)
TARGET_HEAD_SIZE = 50.0  # px after scaling: reference height 400 px = 8 heads of 50 px
PAD_SINGLE = 130  # crop padding of single_person rectangles (px, in the scaled image)
PAD_OTHER = 65  # crop padding of the other annotated people
ISOLATION_MARGIN = 20  # px kept between the crop and the nearest other person's joint (400 / 200 * 10)


@dataclass
class Person:
    """One annotated MPII person, parsed; coordinates 0-based (project convention), original image pixels."""

    image_index: int  # 1-based RELEASE annolist index
    rect_index: int  # 1-based annorect index
    points: np.ndarray  # (n, 4) float64: MPII id, x, y, visibility (1 | 2)
    head: np.ndarray  # (4,) x1, y1, x2, y2
    others: np.ndarray  # (m, 2) the other annotated people's points (for isolation; empty if not isolated)
    pad: int
    single: bool


# ---------------------------------------------------------------------------------------------------------- parsing
def _items(value) -> list:
    """A MATLAB struct array / cell as a list, whatever squeeze_me made of it (one struct, an array, or empty)."""
    if value is None:
        return []
    if isinstance(value, np.ndarray):
        return list(value.ravel())
    return [value]


def _get(struct, name: str):
    """A field of a mat_struct; None where the field is absent or empty ([] in MATLAB)."""
    value = getattr(struct, name, None)
    if isinstance(value, np.ndarray) and value.size == 0:
        return None
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _num(value) -> float:
    """A MATLAB scalar (number, 1-element array, or numeric string) as float; ValueError otherwise."""
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise ValueError(f"expected a scalar, got an array of shape {value.shape}")
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode()
    return float(value)


def _index_set(value) -> set[int]:
    """single_person{i}: a scalar, an array of rect indices, or empty -> set of 1-based ints."""
    if value is None:
        return set()
    arr = np.atleast_1d(np.asarray(value, dtype=object)).ravel()
    out = set()
    for v in arr:
        if isinstance(v, np.ndarray):
            out |= _index_set(v)
        else:
            out.add(int(_num(v)))
    return out


def read_release(path: str | Path) -> tuple[list, np.ndarray, list[set[int]]]:
    """Load RELEASE from the .mat: (annolist as a list of mat_structs, img_train (N,), single_person as sets)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found. `fastpose convert mpii MPII_ROOT` expects {MAT_NAME} in MPII_ROOT (the "
                        f"MPII Human Pose annotations, mpii_human_pose_v1_u12_2.zip), or pass --mat FILE.")
    try:
        mat = scipy.io.loadmat(path, struct_as_record=False, squeeze_me=True)
    except NotImplementedError:
        raise UserError(f"{path} is a MATLAB v7.3 (HDF5) file; re-save RELEASE in MATLAB with save(..., '-v7') or use "
                        f"the official {MAT_NAME}.") from None
    except Exception as e:  # scipy raises ValueError / TypeError / OSError for files that are not .mat
        raise UserError(f"{path} could not be read as a MATLAB .mat file ({e}). Pass the official "
                        f"{MAT_NAME}.") from None
    names = sorted(k for k in mat if not k.startswith("__"))
    if "RELEASE" not in mat:
        raise UserError(f"{path} has no variable RELEASE (it holds: {', '.join(names) or 'nothing'}). `convert mpii` "
                        f"reads the official MPII annotation file {MAT_NAME}; for a pose-tensorflow dataset.mat use "
                        f"`fastpose convert mat`.")
    release = mat["RELEASE"]
    if isinstance(release, np.ndarray) and release.size == 1:
        release = release.item()
    missing = [f for f in ("annolist", "img_train", "single_person") if getattr(release, f, None) is None]
    if missing:
        have = ", ".join(getattr(release, "_fieldnames", []) or []) or "no fields"
        raise UserError(f"{path}: RELEASE lacks the field(s) {', '.join(missing)} (it has: {have}). Pass the "
                        f"official, unmodified {MAT_NAME}.")
    annolist = _items(release.annolist)
    img_train = np.atleast_1d(np.asarray(release.img_train, dtype=object)).ravel()
    single = []
    for i, v in enumerate(_items(release.single_person), start=1):
        try:
            single.append(_index_set(v))
        except (ValueError, TypeError, OverflowError):
            raise UserError(f"{path}: RELEASE.single_person{{{i}}} is {str(v)[:60]}, not a list of rectangle "
                            f"indices. Pass the official, unmodified {MAT_NAME}.") from None
    for i, v in enumerate(img_train, start=1):
        try:
            img_train[i - 1] = _num(v)
        except (ValueError, TypeError):
            raise UserError(f"{path}: RELEASE.img_train({i}) is {str(v)[:60]}, not 0 or 1. Pass the official, "
                            f"unmodified {MAT_NAME}.") from None
    if not (len(annolist) == len(img_train) == len(single)):
        raise UserError(f"{path}: RELEASE.annolist has {len(annolist)} images but img_train has {len(img_train)} "
                        f"and single_person {len(single)}; they must have one entry per image. Pass the official "
                        f"{MAT_NAME}.")
    return annolist, img_train, single


def rect_points(rect) -> np.ndarray | None:
    """(n, 4) MPII id, x, y, visibility of a rectangle (1-based coordinates as stored); None if unannotated.

    ValueError with a reason for a malformed point.
    """
    annopoints = _get(rect, "annopoints")
    if annopoints is None:
        return None
    points = _items(_get(annopoints, "point"))
    if not points:
        return None
    rows = []
    for k, p in enumerate(points):
        x, y, pid = _get(p, "x"), _get(p, "y"), _get(p, "id")
        if x is None or y is None or pid is None:
            raise ValueError(f"point {k + 1} lacks x, y or id")
        vis = _get(p, "is_visible")
        v = 2.0 if vis is None else (1.0 if _num(vis) == 0 else 2.0)
        rows.append((_num(pid), _num(x), _num(y), v))
    return np.array(rows, dtype=np.float64)


def _head_box(rect) -> np.ndarray:
    values = [_get(rect, f) for f in ("x1", "y1", "x2", "y2")]
    if any(v is None for v in values):
        raise ValueError("the head box (x1, y1, x2, y2) is missing")
    return np.array([_num(v) for v in values], dtype=np.float64)


def parse_persons(annolist: list, img_train: np.ndarray, single: list[set[int]], images: Path,
                  mat_path: Path) -> tuple[list[Entry], int]:
    """One Entry per annotated person of the training images (index = running number); and the count skipped as
    unannotated (rectangles without annopoints, which the reference skips too)."""
    entries: list[Entry] = []
    unannotated = 0
    for i, anno in enumerate(annolist, start=1):
        if _num(img_train[i - 1]) != 1:
            continue
        image = _get(anno, "image")
        name = _get(image, "name") if image is not None else None
        name = name if isinstance(name, str) else None  # a number or an array is no file name: reported below
        rects = _items(_get(anno, "annorect"))
        parsed: list[tuple[np.ndarray | None, str | None]] = []
        for rect in rects:
            try:
                parsed.append((rect_points(rect), None))
            except (ValueError, TypeError) as e:
                parsed.append((None, str(e)))
        for r, rect in enumerate(rects, start=1):
            pts, error = parsed[r - 1]
            where = f"{mat_path.name} annolist({i}).annorect({r})"
            if pts is None and error is None:
                unannotated += 1
                continue
            is_single = r in single[i - 1]
            entry = Entry(index=len(entries), image_path=images / str(name) if name else None,
                          joints=np.zeros((1, len(MPII_TO_DEEPERCUT), 3), np.float32),
                          meta={"image_index": i, "person_index": r, "single_person": is_single})
            try:
                if name is None:
                    raise ValueError("image.name is missing or not text")
                if error is not None:
                    raise ValueError(error)
                head = _head_box(rect) - 1.0
            except (ValueError, TypeError) as e:
                entry.problems.append(("malformed entry", f"{where}: {e}"))
                entries.append(entry)
                continue
            ids = pts[:, 0]
            if ((ids < 0) | (ids >= MPII_NUM_IDS) | (ids != np.round(ids))).any():
                entry.problems.append(("joint id out of range", f"{where}: MPII point ids must be 0..15, got "
                                       f"{sorted(set(ids.tolist()))}"))
            elif not (np.isfinite(pts).all() and np.isfinite(head).all()):
                entry.problems.append(("non-finite coordinates", f"{where} has NaN/inf coordinates"))
            pts = pts.copy()
            pts[:, 1:3] -= 1.0  # 1-based MATLAB pixels -> pixel centres at 0-based integers
            others = np.zeros((0, 2))
            if is_single and len(rects) > 1:
                others = [p[:, 1:3] - 1.0 for k, (p, _) in enumerate(parsed) if k != r - 1 and p is not None]
                others = np.concatenate(others) if others else np.zeros((0, 2))
            entry.payload = Person(image_index=i, rect_index=r, points=pts, head=head, others=others,
                                   pad=PAD_SINGLE if is_single else PAD_OTHER, single=is_single)
            entries.append(entry)
    return entries, unannotated


def read_val_list(path: str | Path) -> set[tuple[int, int]]:
    """(image index, person index) pairs, 1-based: a text file of two integers per line, or a .mat with
    RELEASE_img_index and RELEASE_person_index."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--val-list {path} not found.")
    if path.suffix.lower() == ".mat":
        try:
            mat = scipy.io.loadmat(path, squeeze_me=True)
        except Exception as e:
            raise UserError(f"--val-list {path} could not be read as a .mat file ({e}).") from None
        if "RELEASE_img_index" not in mat or "RELEASE_person_index" not in mat:
            names = ", ".join(sorted(k for k in mat if not k.startswith("__")))
            raise UserError(f"--val-list {path} lacks RELEASE_img_index / RELEASE_person_index (it holds: {names}). "
                            f"Pass a .mat with those two variables or a text file of 'image_index person_index' "
                            f"lines.")
        imgs = np.atleast_1d(mat["RELEASE_img_index"]).ravel()
        rects = np.atleast_1d(mat["RELEASE_person_index"]).ravel()
        if len(imgs) != len(rects):
            raise UserError(f"--val-list {path}: RELEASE_img_index has {len(imgs)} values but RELEASE_person_index "
                            f"{len(rects)}; they must be pairs.")
        return {(int(a), int(b)) for a, b in zip(imgs, rects)}
    pairs = set()
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = re.split(r"[\s,;]+", text)
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise UserError(f"--val-list {path}, line {n}: '{line.strip()}' is not two integers. Each line must "
                            f"hold 'image_index person_index', 1-based as in MPII's RELEASE (annolist(i), "
                            f"annorect(r)).")
        pairs.add((int(parts[0]), int(parts[1])))
    if not pairs:
        raise UserError(f"--val-list {path} holds no pairs.")
    return pairs


# --------------------------------------------------------------------------------------------------------- geometry
def _round(x: float) -> int:
    """Round half away from zero (MATLAB's round) for the positive crop coordinates."""
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


@dataclass
class Crop:
    """Where a person's crop lies: scaled = the original resized to width x height; crop = scaled[y1:y2+1, x1:x2+1]."""

    sc: float  # nominal scale: head size / 50
    width: int  # scaled image size
    height: int
    sx: float  # exact per-axis factors width / W, height / H
    sy: float
    x1: int  # inclusive crop bounds in the scaled image
    y1: int
    x2: int
    y2: int

    def to_crop(self, xy: np.ndarray) -> np.ndarray:
        """(..., 2) original pixels -> crop pixels."""
        s = np.array([self.sx, self.sy])
        return (xy + 0.5) * s - 0.5 - np.array([self.x1, self.y1])

    @property
    def transform(self) -> tuple[float, ...]:
        """Affine [a, b, c, d, e, f] mapping crop pixels back to original pixels (the inverse of to_crop)."""
        return (1.0 / self.sx, 0.0, (self.x1 + 0.5) / self.sx - 0.5,
                0.0, 1.0 / self.sy, (self.y1 + 0.5) / self.sy - 0.5)


def head_size(head: np.ndarray) -> float:
    """0.6 x the diagonal of the head box (x1, y1, x2, y2)."""
    return HEAD_SIZE_RATIO * float(np.hypot(head[2] - head[0], head[3] - head[1]))


def crop_for(points: np.ndarray, others: np.ndarray, head: np.ndarray, image_width: int, image_height: int,
             pad: int) -> Crop:
    """The crop of one person: points (n, 2) and others (m, 2) in original pixels (others empty = no isolation)."""
    hs = head_size(head)
    sc = hs / TARGET_HEAD_SIZE
    if not 0.01 < sc < 100:
        raise EntryProblem("malformed entry", f"head box {head.round(1).tolist()} gives a head size of {hs:.2f} px; "
                                              f"the head box is wrong")
    width, height = max(1, math.ceil(image_width / sc)), max(1, math.ceil(image_height / sc))
    s = np.array([width / image_width, height / image_height])
    xy = (points + 0.5) * s - 0.5  # (n, 2) scaled image pixels
    bx1, by1 = _round(xy[:, 0].min()), _round(xy[:, 1].min())
    bx2, by2 = _round(xy[:, 0].max()), _round(xy[:, 1].max())
    x1, x2 = max(0, bx1 - pad), min(width - 1, bx2 + pad)
    y1, y2 = max(0, by1 - pad), min(height - 1, by2 + pad)
    if len(others):
        ox = (others[:, 0] + 0.5) * s[0] - 0.5  # (m,) other people's x in the scaled image
        left, right = ox[ox < bx1], ox[ox > bx2]
        if len(left):
            x1 = max(x1, _round(left.max() + ISOLATION_MARGIN))
        if len(right):
            x2 = min(x2, _round(right.min() - ISOLATION_MARGIN))
    if x2 < x1 or y2 < y1:
        raise EntryProblem("malformed entry", "the crop is empty (the person lies outside the image, or other "
                                              "people's joints overlap it)")
    return Crop(sc=sc, width=width, height=height, sx=float(s[0]), sy=float(s[1]), x1=x1, y1=y1, x2=x2, y2=y2)


def load_person(entry: Entry, quality: int = 95):
    """Worker: decode the image, resize by 1/sc (bicubic), cut the crop, re-encode it as JPEG, map the labels."""
    if entry.problems:
        raise EntryProblem(*entry.problems[0])
    p: Person = entry.payload
    path = entry.image_path
    where = f"annolist({p.image_index}).annorect({p.rect_index}) image {path}"
    if path is None or not path.is_file():
        raise EntryProblem("missing image", f"{where} not found")
    img = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise EntryProblem("unreadable image", f"{where} could not be decoded")
    h, w = img.shape[:2]
    joints = np.zeros((1, len(MPII_TO_DEEPERCUT), 3), np.float64)  # (1, 14, 3) in original pixels
    for k, mpii_id in enumerate(MPII_TO_DEEPERCUT):
        rows = p.points[p.points[:, 0] == mpii_id]
        if len(rows):
            joints[0, k] = rows[0, 1], rows[0, 2], rows[0, 3]
    check_joints(p.points[None, :, 1:], (3, h, w), where)  # all 16 ids, visibility column > 0
    crop = crop_for(p.points[:, 1:3], p.others, p.head, w, h, p.pad)
    scaled = np.asarray(Image.fromarray(img).resize((crop.width, crop.height), Image.Resampling.BICUBIC))
    pixels = np.ascontiguousarray(scaled[crop.y1:crop.y2 + 1, crop.x1:crop.x2 + 1])  # (h', w', 3) BGR
    ok, buf = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise EntryProblem("unreadable image", f"{where}: the crop could not be encoded")
    labelled = joints[..., 2] > 0
    joints[..., :2] = np.where(labelled[..., None], crop.to_crop(joints[..., :2]), 0.0)
    head = crop.to_crop(p.head.reshape(2, 2)).reshape(1, 4)
    return Sample(image=buf.tobytes(), image_format="jpeg", size=(3, pixels.shape[0], pixels.shape[1]),
                  joints=joints.astype(np.float32), head_box=head.astype(np.float32), transform=crop.transform,
                  source_index=p.image_index, source_path=str(path), meta={**entry.meta, "scale": crop.sc})


# ---------------------------------------------------------------------------------------------------------- convert
def convert(root: str | Path, out: str | Path, *, mat: str | Path | None = None, images: str | Path | None = None,
                 val_list: str | Path | None = None, split: str | None = None, seed: int = 0,
                 workers: int | None = None, skip_bad: bool = False, overwrite: bool = False,
                 samples_per_shard: int = 512, jpeg_quality: int = 95, quiet: bool = False) -> dict:
    """Convert MPII's RELEASE into single-person shards at `out`; returns {"samples": per split, "note": str}."""
    root = Path(root)
    mat_path = Path(mat) if mat else root / MAT_NAME
    images_dir = Path(images) if images else root / "images"
    if not 1 <= jpeg_quality <= 100:
        raise UserError(f"--jpeg-quality {jpeg_quality}: the JPEG quality must be 1..100.")
    if val_list is not None and split:
        raise UserError("Pass either --val-list (MPII's persons held out as split 'test') or --split (a random "
                        "held-out fraction), not both.")
    if not images_dir.is_dir():
        raise UserError(f"{images_dir} is not a folder. MPII's images (mpii_human_pose_v1.tar.gz) must be in "
                        f"MPII_ROOT/images, or pass --images DIR.")
    annolist, img_train, single = read_release(mat_path)
    entries, unannotated = parse_persons(annolist, img_train, single, images_dir, mat_path)
    if val_list is not None:
        held = read_val_list(val_list)
        keys = [(e.meta["image_index"], e.meta["person_index"]) for e in entries]
        splits = ["test" if k in held else "train" for k in keys]
        unmatched = sorted(held - set(keys))
        if len(unmatched) == len(held):
            raise UserError(f"--val-list {val_list}: none of its {len(held)} (image, person) pairs is an annotated "
                            f"person of a training image in {mat_path.name}, e.g. {unmatched[:3]}. The indices must "
                            f"be 1-based, as RELEASE's annolist(i).annorect(r).")
        if unmatched and not quiet:
            common.console.print(f"[yellow]--val-list: {len(unmatched)} of {len(held)} pairs are not annotated "
                                 f"training persons and are ignored[/yellow], e.g. {unmatched[:10]}")
    else:
        splits = common.assign_splits(len(entries), common.parse_split(split), seed)
    source = {"format": "mpii", "mat": str(mat_path), "images": str(images_dir), "val_list": str(val_list or ""),
              "split": split or "", "seed": seed, "jpeg_quality": jpeg_quality, "unannotated_rects": unannotated}
    writer = ShardWriter(out, len(MPII_TO_DEEPERCUT), MPII_JOINT_NAMES, MPII_ALL_JOINTS, MPII_SKELETON,
                         samples_per_shard=samples_per_shard, source=source, overwrite=overwrite)
    label = str(mat_path)
    load = partial(load_person, quality=jpeg_quality)
    written = common.convert_entries(entries, writer, source=label, splits=splits, load=load, workers=workers,
                                     skip_bad=skip_bad, quiet=quiet,
                                     index_name="numbers are annotated training persons in file order, 0-based; "
                                                "each detail names its annolist(i).annorect(r)")
    note = f"{unannotated} rectangles of training images have no annopoints and were skipped" if unannotated else ""
    return {"samples": written, "note": note}
