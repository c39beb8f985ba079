"""The HDF5 shard dataset format: writer, reader and manifest.

A dataset is a folder::

    DIR/manifest.json            written last: its presence means the dataset is complete
    DIR/<split>/shard-00000.h5   e.g. train/, test/
    DIR/<split>/shard-00001.h5

`manifest.json` holds the format version, num_joints, joint names, symmetric groups (all_joints), skeleton, samples per
shard, per split the list of shards with their sample counts and sha256, the source description and the entries that
were skipped (with --skip-bad) and why.

One shard holds N samples and P_total persons (all datasets readable with plain h5py):

    image          (N,)  vlen uint8   the encoded image bytes as stored in the source (JPEG/PNG)
    image_format   (N,)  str          "jpeg" | "png" | ...
    size           (N, 3) int32       [C, H, W] of the decoded image
    persons_offset (N+1,) int64       persons of sample i are rows persons_offset[i]:persons_offset[i+1]
    joints         (P_total, K, 3) float32   x, y, visibility per person and joint id; visibility 0 = not labelled
                                             (x = y = 0), 1 = labelled but occluded, 2 = labelled and visible
    head_box       (P_total, 4) float32      x1, y1, x2, y2 (MPII; NaN where unknown)
    person_box     (P_total, 4) float32      x, y, w, h (COCO; NaN where unknown)
    person_area    (P_total,)  float32       COCO segmentation area (NaN where unknown)
    person_id      (P_total,)  int64         source annotation id (-1 where unknown)
    transform      (N, 6) float32     affine [a, b, c, d, e, f]: source x = a*x + b*y + c, source y = d*x + e*y + f,
                                      mapping this sample's pixels back to the source image (identity when uncropped)
    source_index   (N,) int64         entry index in the source (.mat entry, csv row, COCO image id, ...)
    source_path    (N,) str           the source image path
    meta           (N,) str           JSON per sample: small extras (COCO image_id, ignore regions as RLE, ...)

Coordinates follow the project's pixel convention (see fastpose/pipeline.py): pixel centres at integer coordinates.
Shards are written to a temp folder and renamed into place, manifest last, so an interrupted convert never leaves a
dataset that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from fastpose.atomic import sha256_of
from fastpose.errors import UserError, out_folder

FORMAT = "fastpose-shards"
VERSION = 1
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
# The columns write_shard writes: one row per sample, one row per person (see the table in the README).
SAMPLE_COLUMNS = ("image", "image_format", "size", "transform", "source_index", "source_path", "meta")
PERSON_COLUMNS = ("joints", "head_box", "person_box", "person_area", "person_id")
COLUMNS = SAMPLE_COLUMNS + ("persons_offset",) + PERSON_COLUMNS
# What h5py raises reading a damaged file: OSError / KeyError for most damage, ValueError / TypeError for odd
# metadata, RuntimeError for a broken B-tree ("addr overflow"; seen in tests/test_fuzz_files.py under load).
DAMAGED_FILE_ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError)


@dataclass
class Sample:
    """One image with all its persons, as stored in a shard."""

    image: bytes
    image_format: str
    size: tuple[int, int, int]  # C, H, W
    joints: np.ndarray  # (P, K, 3) float32: x, y, visibility
    head_box: np.ndarray | None = None  # (P, 4) x1, y1, x2, y2
    person_box: np.ndarray | None = None  # (P, 4) x, y, w, h
    person_area: np.ndarray | None = None  # (P,)
    person_id: np.ndarray | None = None  # (P,)
    transform: tuple[float, ...] = IDENTITY
    source_index: int = -1
    source_path: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_persons(self) -> int:
        return int(self.joints.shape[0])


def _person_column(samples: list[Sample], name: str, shape: tuple[int, ...], fill: float, dtype) -> np.ndarray:
    cols = []
    for s in samples:
        value = getattr(s, name)
        if value is None:
            value = np.full((s.num_persons, *shape), fill, dtype=dtype)
        cols.append(np.asarray(value, dtype=dtype).reshape(s.num_persons, *shape))
    return np.concatenate(cols) if cols else np.zeros((0, *shape), dtype)


def write_shard(path: Path, samples: list[Sample], num_joints: int) -> None:
    """Write one shard file (the caller renames the folder into place)."""
    n = len(samples)
    vlen_u8 = h5py.vlen_dtype(np.uint8)
    str_dt = h5py.string_dtype()
    with h5py.File(path, "w") as f:
        img = f.create_dataset("image", (n,), dtype=vlen_u8)
        for i, s in enumerate(samples):
            img[i] = np.frombuffer(s.image, dtype=np.uint8)
        f.create_dataset("image_format", data=[s.image_format for s in samples], dtype=str_dt)
        f.create_dataset("size", data=np.array([s.size for s in samples], dtype=np.int32).reshape(n, 3))
        offsets = np.zeros(n + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([s.num_persons for s in samples])
        f.create_dataset("persons_offset", data=offsets)
        joints = [np.asarray(s.joints, np.float32).reshape(s.num_persons, num_joints, 3) for s in samples]
        f.create_dataset("joints", data=np.concatenate(joints) if joints else np.zeros((0, num_joints, 3), np.float32))
        f.create_dataset("head_box", data=_person_column(samples, "head_box", (4,), np.nan, np.float32))
        f.create_dataset("person_box", data=_person_column(samples, "person_box", (4,), np.nan, np.float32))
        f.create_dataset("person_area", data=_person_column(samples, "person_area", (), np.nan, np.float32))
        f.create_dataset("person_id", data=_person_column(samples, "person_id", (), -1, np.int64))
        f.create_dataset("transform", data=np.array([s.transform for s in samples], np.float32).reshape(n, 6))
        f.create_dataset("source_index", data=np.array([s.source_index for s in samples], np.int64))
        f.create_dataset("source_path", data=[s.source_path for s in samples], dtype=str_dt)
        f.create_dataset("meta", data=[json.dumps(s.meta) for s in samples], dtype=str_dt)
        f.attrs["format"] = FORMAT
        f.attrs["version"] = VERSION
        f.attrs["num_joints"] = num_joints


class ShardWriter:
    """Write samples into shards of a new dataset folder; nothing appears at `out_dir` until `close()` succeeds.

    Use as a context manager: an exception inside the block removes the temp folder and leaves `out_dir` untouched.
    """

    def __init__(self, out_dir: str | Path, num_joints: int, joint_names: list[str] | None = None,
                 all_joints: list[list[int]] | None = None, skeleton: list[list[int]] | None = None,
                 samples_per_shard: int = 512, source: dict | None = None, overwrite: bool = False):
        self.out_dir = Path(out_dir)
        if samples_per_shard < 1:
            raise UserError(f"--samples-per-shard {samples_per_shard}: must be at least 1 (default 512).")
        if num_joints < 1:
            raise UserError(f"--num-joints {num_joints}: a dataset needs at least one joint.")
        if self.out_dir.exists() and not overwrite:
            raise UserError(f"{self.out_dir} already exists. Choose another --out folder, or pass --overwrite to "
                            f"replace it.")
        self.num_joints = num_joints
        self.joint_names = list(joint_names) if joint_names else [f"joint{k}" for k in range(num_joints)]
        self.all_joints = [list(g) for g in all_joints] if all_joints else [[k] for k in range(num_joints)]
        self.skeleton = [list(e) for e in skeleton] if skeleton else []
        self.samples_per_shard = samples_per_shard
        self.source = source or {}
        self.skipped: list[dict] = []
        self.tmp = self.out_dir.with_name(f".{self.out_dir.name}.tmp-{os.getpid()}")
        out_folder(self.out_dir.parent, "--out")
        _remove_stale_temps(self.out_dir)
        self.tmp.mkdir()
        self._pending: dict[str, list[Sample]] = {}
        self._shards: dict[str, list[dict]] = {}
        self._closed = False

    def add(self, sample: Sample, split: str = "train") -> None:
        joints = np.asarray(sample.joints, np.float32)
        if joints.ndim != 3 or joints.shape[1:] != (self.num_joints, 3):
            raise ValueError(f"sample joints must be (P, {self.num_joints}, 3), got {joints.shape}")
        self._pending.setdefault(split, []).append(sample)
        self._shards.setdefault(split, [])
        if len(self._pending[split]) >= self.samples_per_shard:
            self._flush(split)

    def _flush(self, split: str) -> None:
        samples = self._pending.get(split) or []
        if not samples:
            return
        folder = self.tmp / split
        folder.mkdir(exist_ok=True)
        name = f"shard-{len(self._shards[split]):05d}.h5"
        write_shard(folder / name, samples, self.num_joints)
        self._shards[split].append({"file": f"{split}/{name}", "samples": len(samples),
                                    "persons": sum(s.num_persons for s in samples),
                                    "sha256": sha256_of(folder / name)})
        self._pending[split] = []

    def close(self) -> Path:
        """Flush, write the manifest, and move the dataset into place (replacing it with --overwrite)."""
        for split in list(self._pending):
            self._flush(split)
        if not any(self._shards.values()):
            self.abort()
            raise UserError(f"No sample was written to {self.out_dir}: the source holds no usable entry "
                            f"(see the problems listed above). Nothing was created.")
        manifest = {
            "format": FORMAT, "version": VERSION, "num_joints": self.num_joints, "joint_names": self.joint_names,
            "all_joints": self.all_joints, "skeleton": self.skeleton, "samples_per_shard": self.samples_per_shard,
            "splits": {split: {"samples": sum(s["samples"] for s in shards),
                               "persons": sum(s["persons"] for s in shards), "shards": shards}
                       for split, shards in self._shards.items() if shards},
            "source": self.source, "skipped": self.skipped,
        }
        # manifest last: a folder without it is not a dataset.
        (self.tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        if self.out_dir.exists():
            trash = self.out_dir.with_name(f".{self.out_dir.name}.old-{os.getpid()}")
            self.out_dir.rename(trash)
            self.tmp.rename(self.out_dir)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            self.out_dir.parent.mkdir(parents=True, exist_ok=True)
            self.tmp.rename(self.out_dir)
        self._closed = True
        return self.out_dir

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._closed = True

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and not self._closed:
            self.abort()


def _remove_stale_temps(out_dir: Path) -> None:
    """Delete temp folders left by converts that were killed (their process no longer exists)."""
    for tmp in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        alive = pid.isdigit() and int(pid) != os.getpid() and Path(f"/proc/{pid}").exists()
        if not alive:
            shutil.rmtree(tmp, ignore_errors=True)


def read_manifest(root: str | Path) -> dict:
    root = Path(root)
    path = root / "manifest.json"
    if not path.is_file():
        partial = root.is_dir() and any(root.glob("*/shard-*.h5"))
        why = " It holds shards but no manifest: a convert was interrupted; run it again." if partial else ""
        raise UserError(f"{root} is not a fastpose dataset (no manifest.json).{why} Create one with "
                        f"`fastpose convert ...`.")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:  # json.JSONDecodeError is a ValueError
        raise UserError(f"{path} is not valid JSON ({e}): the manifest was damaged or edited by hand. Convert the "
                        f"dataset again (`fastpose convert ... --overwrite`).") from None
    if not isinstance(manifest, dict):
        raise UserError(f"{path} is not a fastpose manifest (a JSON object). Convert the dataset again.")
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise UserError(f"{path}: format {manifest.get('format')} v{manifest.get('version')} is not "
                        f"{FORMAT} v{VERSION}; convert the data again with this version of fastpose.")
    problem = _manifest_problem(manifest)
    if problem:
        raise UserError(f"{path}: {problem}, so the manifest was damaged or edited by hand. Convert the dataset again "
                        f"(`fastpose convert ... --overwrite`).")
    return manifest


def _is_int(value, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _id_lists(value, k: int, size: int | None = None) -> bool:
    """A list of lists of joint ids 0..k-1 (each of `size` ids when given)."""
    return isinstance(value, list) and all(
        isinstance(g, list) and (size is None or len(g) == size) and all(_is_int(j) and j < k for j in g)
        for g in value)


def _manifest_problem(m: dict) -> str:
    """What is wrong with the fields a reader relies on ('' when nothing): the joint set and the split's shards."""
    k = m.get("num_joints")
    if not _is_int(k, 1):
        return f"num_joints is {k!r}, not a positive integer"
    names = m.get("joint_names")
    if not (isinstance(names, list) and len(names) == k and all(isinstance(n, str) for n in names)):
        return f"joint_names is {str(names)[:80]}, not a list of {k} names"
    if not _id_lists(m.get("all_joints"), k):
        return f"all_joints is {str(m.get('all_joints'))[:80]}, not a list of groups of joint ids 0..{k - 1}"
    if m.get("skeleton") is not None and not _id_lists(m.get("skeleton"), k, 2):
        return f"skeleton is {str(m.get('skeleton'))[:80]}, not a list of [a, b] joint id pairs"
    splits = m.get("splits")
    if not isinstance(splits, dict) or not splits:
        return f"splits is {str(splits)[:80]}, not a mapping of split names to their shards"
    for name, info in splits.items():
        shards = info.get("shards") if isinstance(info, dict) else None
        if not isinstance(shards, list):
            return f"split '{name}' lists no shards"
        for i, shard in enumerate(shards):
            if not (isinstance(shard, dict) and isinstance(shard.get("file"), str) and shard["file"]
                    and _is_int(shard.get("samples")) and isinstance(shard.get("sha256"), str)):
                return f"shard {i} of split '{name}' lacks a file name, a sample count or a sha256 ({str(shard)[:80]})"
    return ""


class ShardDataset:
    """Random access to the samples of one split. Picklable: h5py handles are opened lazily in each process."""

    def __init__(self, root: str | Path, split: str = "train"):
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        splits = self.manifest["splits"]
        if split not in splits:
            raise UserError(f"{self.root} has no split '{split}'; it has: {', '.join(splits)}. Pass one of those, or "
                            f"convert with --split train=0.9,{split}=0.1.")
        self.split = split
        self.shards = splits[split]["shards"]
        self.num_joints = int(self.manifest["num_joints"])
        self.joint_names = self.manifest["joint_names"]
        self.all_joints = self.manifest["all_joints"]
        self.skeleton = self.manifest.get("skeleton", [])
        counts = np.array([s["samples"] for s in self.shards], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(counts)])
        self._files: dict[int, h5py.File] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_files"] = {}  # h5py handles cannot cross processes
        return state

    def locate(self, index: int) -> tuple[int, int]:
        """(shard number, row within the shard) of a sample index."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range 0..{len(self) - 1}")
        shard = int(np.searchsorted(self.starts, index, side="right") - 1)
        return shard, int(index - self.starts[shard])

    def shard_path(self, shard: int) -> Path:
        return self.root / self.shards[shard]["file"]

    def _file(self, shard: int) -> h5py.File:
        if self._pid != os.getpid():  # forked: never reuse the parent's handles
            self._files, self._pid = {}, os.getpid()
        if shard not in self._files:
            path = self.shard_path(shard)
            try:
                f = h5py.File(path, "r")
            except OSError as e:  # missing, truncated or not HDF5 (h5py raises OSError / FileNotFoundError)
                what = "is missing" if not path.exists() else f"cannot be read as HDF5 ({str(e).splitlines()[0]})"
                raise self._damaged(shard, what) from None
            try:
                problem = self._structure_problem(f, shard)
            except DAMAGED_FILE_ERRORS as e:
                problem = f"cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
            if problem:
                f.close()
                raise self._damaged(shard, problem)
            self._files[shard] = f
        return self._files[shard]

    def _damaged(self, shard: int, what: str) -> UserError:
        return UserError(f"{self.shard_path(shard)} (shard {shard} of split '{self.split}' of {self.root}) {what}: the "
                         f"dataset is damaged, e.g. an incomplete copy. Copy it again, or convert it again; "
                         f"`fastpose info {self.root} --verify` checks every shard.")

    def _structure_problem(self, f: h5py.File, shard: int) -> str:
        """What does not match the manifest and write_shard's layout ('' when nothing): columns, lengths, offsets."""
        n = int(self.shards[shard]["samples"])
        missing = [name for name in COLUMNS if name not in f or not isinstance(f[name], h5py.Dataset)]
        if missing:
            return f"lacks the column(s) {', '.join(missing)}"
        wrong = [f"{name} {f[name].shape}" for name in SAMPLE_COLUMNS if f[name].shape[:1] != (n,)]
        if f["size"].shape != (n, 3) or f["transform"].shape != (n, 6):
            wrong.append(f"size {f['size'].shape} / transform {f['transform'].shape}")
        if f["persons_offset"].shape != (n + 1,):
            wrong.append(f"persons_offset {f['persons_offset'].shape}")
        if wrong:
            return f"has columns of the wrong length for its {n} samples: {', '.join(wrong)}"
        joints = f["joints"]
        if joints.ndim != 3 or joints.shape[1:] != (self.num_joints, 3):
            return f"has joints of shape {joints.shape}, not (persons, {self.num_joints}, 3)"
        offsets = f["persons_offset"][()]
        p = joints.shape[0]
        if offsets[0] != 0 or offsets[-1] != p or (np.diff(offsets) < 0).any():
            return f"has persons_offset {offsets.tolist()[:10]} that does not index its {p} persons"
        bad = [name for name in PERSON_COLUMNS if f[name].shape[:1] != (p,)]
        if bad:
            return f"has person columns ({', '.join(bad)}) of another length than its {p} persons"
        return ""

    def _read(self, shard: int, read):
        """read(file) on the shard's open file; a damaged shard's read errors become the UserError above."""
        f = self._file(shard)
        try:
            return read(f)
        except (*DAMAGED_FILE_ERRORS, UnicodeDecodeError) as e:
            raise self._damaged(shard, f"cannot be read ({type(e).__name__}: "
                                       f"{str(e).splitlines()[0] if str(e) else ''})") from None

    def meta(self, index: int) -> dict:
        """The sample's meta dict alone (e.g. its ignore RLEs), without reading its image."""
        shard, row = self.locate(index)
        return self._read(shard, lambda f: json.loads(_str(f["meta"][row])))

    def image_bytes(self, index: int) -> bytes:
        shard, row = self.locate(index)
        return self._read(shard, lambda f: f["image"][row].tobytes())

    def joints(self, index: int) -> np.ndarray:
        """(P, K, 3) float32 x, y, visibility."""
        shard, row = self.locate(index)

        def read(f):
            a, b = f["persons_offset"][row:row + 2]
            return f["joints"][a:b]
        return self._read(shard, read)

    def __getitem__(self, index: int) -> Sample:
        shard, row = self.locate(index)
        return self._read(shard, lambda f: self._sample(f, row))

    @staticmethod
    def _sample(f: h5py.File, row: int) -> Sample:
        a, b = (int(v) for v in f["persons_offset"][row:row + 2])
        return Sample(
            image=f["image"][row].tobytes(),
            image_format=_str(f["image_format"][row]),
            size=tuple(int(v) for v in f["size"][row]),
            joints=f["joints"][a:b],
            head_box=f["head_box"][a:b],
            person_box=f["person_box"][a:b],
            person_area=f["person_area"][a:b],
            person_id=f["person_id"][a:b],
            transform=tuple(float(v) for v in f["transform"][row]),
            source_index=int(f["source_index"][row]),
            source_path=_str(f["source_path"][row]),
            meta=json.loads(_str(f["meta"][row])),
        )

    def column(self, name: str) -> np.ndarray:
        """A whole per-sample or per-person column over all shards (e.g. 'size', 'joints')."""
        parts = []
        for shard in range(len(self.shards)):
            parts.append(self._read(shard, lambda f: f[name][()]))
        return np.concatenate(parts) if parts else np.zeros((0,))

    def persons_per_sample(self) -> np.ndarray:
        return np.concatenate([self._read(s, lambda f: np.diff(f["persons_offset"][()]))
                               for s in range(len(self.shards))])

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}


def _str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def verify(root: str | Path) -> list[str]:
    """Check every shard's sha256 against the manifest; returns the problems (empty when all is well)."""
    root = Path(root)
    manifest = read_manifest(root)
    problems = []
    for info in manifest["splits"].values():
        for shard in info["shards"]:
            path = root / shard["file"]
            if not path.is_file():
                problems.append(f"{path}: missing")
            elif sha256_of(path) != shard["sha256"]:
                problems.append(f"{path}: sha256 differs from the manifest (the file changed or is corrupt)")
    return problems


def summary(root: str | Path) -> dict:
    """Counts per split for `fastpose info` (also its --json output)."""
    root = Path(root)
    manifest = read_manifest(root)
    out = {"path": str(root), "num_joints": manifest["num_joints"], "joint_names": manifest["joint_names"],
           "source": manifest.get("source", {}), "skipped": len(manifest.get("skipped", [])), "splits": {}}
    for split in manifest["splits"]:
        ds = ShardDataset(root, split)
        sizes = ds.column("size").reshape(-1, 3)
        joints = ds.column("joints").reshape(-1, ds.num_joints, 3)
        labelled = joints[..., 2] > 0  # (P_total, K)
        persons_kp = int((labelled.sum(1) > 0).sum())
        out["splits"][split] = {
            "samples": len(ds), "persons": int(joints.shape[0]), "persons_with_keypoints": persons_kp,
            "joints_present": int(labelled.sum()),
            "joints_present_per_joint": {name: int(c) for name, c in zip(ds.joint_names, labelled.sum(0))},
            "joints_per_sample": float(labelled.sum() / max(len(ds), 1)),
            "image_height": [int(sizes[:, 1].min()), int(sizes[:, 1].max())] if len(sizes) else [0, 0],
            "image_width": [int(sizes[:, 2].min()), int(sizes[:, 2].max())] if len(sizes) else [0, 0],
            "shards": len(ds.shards),
        }
        ds.close()
    out["samples"] = sum(s["samples"] for s in out["splits"].values())
    out["persons"] = sum(s["persons"] for s in out["splits"].values())
    out["joints_present"] = sum(s["joints_present"] for s in out["splits"].values())
    return out
