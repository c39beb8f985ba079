"""`fastpose convert mat`: the seed's `dataset.mat` format into shards.

The file holds a struct array `dataset` with fields
    image   path of the image (absolute, or relative to the .mat's folder)
    size    [C, H, W]
    joints  a cell; each cell is one person's N x 3 `[joint_id, x, y]` (0-based ids; absent joints are left out)
    crop    optional, ignored (the reference used it only for its own bookkeeping)
Every person of an entry is kept (the reference used only the first cell). Coordinates are taken as they are: the
reference used them directly as pixel positions with pixel centres at integer coordinates, which is the project's
convention (fastpose/pipeline.py).

Both MATLAB v5 files (scipy.io) and v7.3 files (HDF5, read with h5py) are read.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import scipy.io

from fastpose.convert.common import Entry, Reencode, assign_splits, convert_entries, load_image_entry, parse_split
from fastpose.errors import UserError
from fastpose.shards import ShardWriter

FIELDS = ("image", "size", "joints")


# Joint ids above this are not inferred into num_joints (a garbage id such as 1e300 would ask for a huge array).
MAX_INFERRED_JOINTS = 1000


class Unreadable:
    """A v7.3 value that is no MATLAB array fastpose reads (a nested struct, a null reference): reported per entry."""

    def __init__(self, what: str):
        self.what = what

    def __repr__(self) -> str:
        return self.what


def _v73_value(f: h5py.File, obj):
    """A MATLAB v7.3 value as numpy / str / list (cells). MATLAB stores arrays column-major, hence the transposes."""
    try:
        if isinstance(obj, h5py.Reference):
            obj = f[obj]
    except (ValueError, KeyError, TypeError):  # a null or dangling reference
        return Unreadable("a null reference")
    if isinstance(obj, h5py.Group):
        return Unreadable("a struct")
    if not isinstance(obj, h5py.Dataset):
        return np.asarray(obj)  # a plain number stored where a reference belongs
    cls = obj.attrs.get("MATLAB_class", b"")
    cls = cls.decode() if isinstance(cls, bytes) else str(cls)
    if obj.attrs.get("MATLAB_empty", 0):
        return np.zeros((0, 0))
    data = obj[()]
    if cls == "char":
        try:
            return "".join(chr(int(c)) for c in np.asarray(data).T.ravel())
        except (TypeError, ValueError, OverflowError):
            return Unreadable("a char array of non-characters")
    if cls == "cell" or np.asarray(data).dtype == h5py.ref_dtype:
        return [_v73_value(f, r) for r in np.asarray(data).T.ravel()]
    return np.asarray(data).T


def _read_v73(path: Path) -> list[dict]:
    try:
        f = h5py.File(path, "r")
    except OSError as e:  # an HDF5 signature but a truncated or damaged file
        raise UserError(f"{path} is a damaged MATLAB v7.3 (HDF5) file ({str(e).splitlines()[0]}). Save it again "
                        f"from MATLAB (save -v7.3) or with scipy.io.savemat.") from None
    with f:
        if "dataset" not in f:
            names = [k for k in f if not k.startswith("#")]
            raise UserError(f"{path}: no variable 'dataset' (found: {', '.join(names) or 'none'}). The seed format is "
                            f"a struct array named 'dataset' with fields image, size, joints.")
        group = f["dataset"]
        if not isinstance(group, h5py.Group):
            raise UserError(f"{path}: 'dataset' is not a struct array. Save it as a struct with fields "
                            f"image, size, joints.")
        _require_fields(path, list(group.keys()))
        refs = {}
        for name in FIELDS:
            field = group[name]
            if not isinstance(field, h5py.Dataset):
                raise UserError(f"{path}: the field {name} of 'dataset' is a nested struct, not one value per entry. "
                                f"Save dataset(i).{name} as a plain array (image: text, size: [C, H, W], joints: a "
                                f"cell of N x 3 matrices).")
            refs[name] = np.asarray(field[()]).T.ravel()
        lengths = {name: len(v) for name, v in refs.items()}
        if len(set(lengths.values())) != 1:
            raise UserError(f"{path}: the fields of 'dataset' have different entry counts ({lengths}); every entry "
                            f"needs image, size and joints. Save the struct array again.")
        n = lengths["image"]
        return [{name: _v73_value(f, refs[name][i]) for name in FIELDS} for i in range(n)]


def _require_fields(path: Path, present: list[str]) -> None:
    missing = [name for name in FIELDS if name not in present]
    if missing:
        raise UserError(f"{path}: the struct 'dataset' lacks the field(s) {', '.join(missing)} (it has: "
                        f"{', '.join(present)}). Every entry needs image (path), size ([C, H, W]) and joints (a cell "
                        f"of N x 3 [joint_id, x, y] per person).")


def _read_v5(path: Path) -> list[dict]:
    try:
        mat = scipy.io.loadmat(path, squeeze_me=False, struct_as_record=True)
    except Exception as e:  # scipy raises several types for a damaged file
        raise UserError(f"{path} is not a readable MATLAB file ({type(e).__name__}: {e}). Re-save it from MATLAB "
                        f"(save -v7 or -v7.3) or with scipy.io.savemat.") from None
    if "dataset" not in mat:
        names = [k for k in mat if not k.startswith("__")]
        raise UserError(f"{path}: no variable 'dataset' (found: {', '.join(names) or 'none'}). The seed format is a "
                        f"struct array named 'dataset' with fields image, size, joints.")
    data = mat["dataset"]
    if data.dtype.names is None:
        raise UserError(f"{path}: 'dataset' is not a struct array. Save it as a struct with fields image, size, "
                        f"joints.")
    _require_fields(path, list(data.dtype.names))
    out = []
    for e in data.ravel(order="F"):  # MATLAB's linear order dataset(1), dataset(2), ... for any N x M shape
        cells = e["joints"]
        out.append({"image": e["image"], "size": e["size"],
                    "joints": list(cells.ravel(order="F")) if cells.dtype == object else cells})
    return out


def _kind(value) -> str:
    """What a MATLAB value is, for messages: 'a 1 x 2 double matrix', 'a cell', 'text'."""
    if isinstance(value, Unreadable):
        return value.what
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a cell"
    a = np.asarray(value)
    if a.dtype == object:
        return "a cell"
    name = {"b": "logical", "c": "complex", "U": "char", "S": "char", "V": "compound"}.get(a.dtype.kind, str(a.dtype))
    return f"a {' x '.join(map(str, a.shape)) or 'scalar'} {name} array"


def _image_path(value) -> str:
    """The image field as text: a char array, or a cell / array holding exactly one; ValueError otherwise."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 1:
        return _image_path(value[0])
    a = np.asarray(value) if not isinstance(value, Unreadable) else None
    if a is not None and a.dtype.kind in "US" and a.size <= 1:
        return str(a.ravel()[0]) if a.size else ""
    if a is not None and a.dtype == object and a.size == 1:
        return _image_path(a.ravel()[0])
    raise ValueError(f"image is {_kind(value)}, not the image's path as text")


def _size(value) -> np.ndarray:
    """The size field as 3 positive integers [C, H, W]; ValueError otherwise."""
    a = None if isinstance(value, Unreadable | str | list) else np.asarray(value)
    if a is None or a.dtype.kind not in "iuf" or a.size != 3:
        raise ValueError(f"size is {_kind(value)}, not [C, H, W] (3 numbers)")
    a = a.astype(np.float64).ravel()
    if not (np.isfinite(a).all() and (a == np.round(a)).all() and (a > 0).all() and a.max() < 2**31):
        raise ValueError(f"size is {a.tolist()}, not 3 positive integers [C, H, W]")
    return a


def _persons(value) -> list[np.ndarray]:
    """The joints field as one (N, 3) float64 [joint_id, x, y] array per person; ValueError otherwise."""
    if isinstance(value, list):
        items = value
    elif isinstance(value, np.ndarray) and value.dtype.kind in "iuf":
        items = [value]  # a numeric matrix instead of a cell: one person
    else:
        raise ValueError(f"joints is {_kind(value)}, not a cell of N x 3 [joint_id, x, y] matrices")
    persons = []
    for p, item in enumerate(items):
        a = None if isinstance(item, Unreadable | str | list) else np.asarray(item)
        if a is None or a.dtype.kind not in "iuf":
            raise ValueError(f"joints cell {p + 1} is {_kind(item)}, not an N x 3 [joint_id, x, y] matrix")
        if a.size == 0:
            persons.append(np.zeros((0, 3)))
        elif a.ndim == 2 and a.shape[1] == 3:
            persons.append(a.astype(np.float64))
        else:
            hint = " (transpose it: one row per joint)" if a.ndim == 2 and a.shape[0] == 3 else ""
            raise ValueError(f"joints cell {p + 1} is {_kind(item)}, not N x 3 [joint_id, x, y]{hint}")
    return persons


def read_entries(path: str | Path) -> list[dict]:
    """The raw entries of a seed .mat: dicts with image (str), size (array), joints (list of N x 3 arrays) and
    problem (None, or what is malformed in that entry: it is reported, or skipped with --skip-bad)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder. Pass the path of your dataset.mat file itself.")
    if not path.is_file():
        raise UserError(f"{path} does not exist. Pass the path of your dataset.mat.")
    raw = _read_v73(path) if h5py.is_hdf5(path) else _read_v5(path)
    out = []
    for e in raw:
        entry = {"image": "", "size": np.zeros(0), "joints": [], "problem": None}
        try:
            entry["image"] = _image_path(e["image"])
            entry["size"] = _size(e["size"])
            entry["joints"] = _persons(e["joints"])
        except ValueError as why:
            entry["problem"] = str(why)
        out.append(entry)
    return out


def _valid_ids(rows: np.ndarray) -> np.ndarray:
    ids = rows[:, 0]
    return ids[np.isfinite(ids) & (ids == np.round(ids)) & (ids >= 0)]


def max_joint_id(raw: list[dict]) -> int:
    """The largest well-formed joint id of the entries (-1 when none), for num_joints = max id + 1."""
    ids = [int(_valid_ids(p).max()) for e in raw for p in e["joints"] if len(_valid_ids(p))]
    return max(ids) if ids else -1


def to_entries(raw: list[dict], mat_path: Path, num_joints: int, images_root: Path | None = None) -> list[Entry]:
    """Seed entries -> checked-later `Entry` objects; parse-time problems are attached to the entry."""
    root = images_root or mat_path.resolve().parent
    entries = []
    for i, e in enumerate(raw):
        problems = []
        if e.get("problem"):
            problems.append(("malformed entry", f"entry {i}: {e['problem']}"))
        image = Path(e["image"]) if e["image"] else None
        if image is not None and not image.is_absolute():
            image = root / image
        elif image is not None and images_root is not None and not image.is_file():
            image = images_root / image.name  # placeholder absolute paths: look for the file name under --images-root
        size = np.asarray(e["size"]).ravel()
        if not problems and (image is None or size.size != 3):
            problems.append(("malformed entry", f"entry {i}: image path empty or size not [C, H, W] ({size.tolist()})"))
        persons = np.zeros((len(e["joints"]), num_joints, 3), np.float32)
        for p, rows in enumerate(e["joints"]):
            for jid, x, y in rows:
                if not (np.isfinite(jid) and jid == round(jid) and 0 <= jid < num_joints):
                    problems.append(("joint id out of range",
                                     f"entry {i} person {p} has joint id {jid:g}, num_joints is {num_joints}"))
                    continue
                if not (np.isfinite(x) and np.isfinite(y)):
                    problems.append(("non-finite coordinates", f"entry {i} person {p} joint {int(jid)}: ({x}, {y})"))
                    continue
                persons[p, int(jid)] = (x, y, 2.0)
        entries.append(Entry(index=i, image_path=image, joints=persons,
                             declared_size=tuple(int(v) for v in size) if size.size == 3 else None,
                             problems=problems[:1]))
    return entries


def convert(mat_path: str | Path, out: str | Path, *, num_joints: int | None = None, joint_names=None,
            all_joints=None, skeleton=None, images_root: str | Path | None = None, split: str | None = None,
            seed: int = 0, workers: int | None = None, skip_bad: bool = False, overwrite: bool = False,
            samples_per_shard: int = 512, reencode_jpeg: int | None = None, quiet: bool = False) -> dict:
    """Convert a seed .mat into a shards folder. Returns {"samples": {split: n}, "num_joints": K, "note": str}."""
    mat_path = Path(mat_path)
    if num_joints is not None and num_joints < 0:
        raise UserError(f"--num-joints {num_joints}: must be positive (or left out to use the largest joint id + 1).")
    raw = read_entries(mat_path)
    note = ""
    if not num_joints:
        num_joints = max_joint_id(raw) + 1
        note = (f"num_joints not given: using max joint id + 1 = {num_joints}. Pass --num-joints or --config to "
                f"set it (and the joint names).")
        if num_joints <= 0:
            bad = [(i, e["problem"]) for i, e in enumerate(raw) if e["problem"]]
            why = (f" {len(bad)} of the {len(raw)} entries are malformed, e.g. entry {bad[0][0]}: {bad[0][1]}; fix "
                   f"them in the source file." if bad else "")
            raise UserError(f"{mat_path}: no joints in any well-formed entry, and no --num-joints given.{why}")
        if num_joints > MAX_INFERRED_JOINTS:
            raise UserError(f"{mat_path}: the largest joint id is {num_joints - 1}, so num_joints would be "
                            f"{num_joints}; that id is probably wrong. Pass --num-joints (or --config with num_joints) "
                            f"to check every id against the real joint count.")
    entries = to_entries(raw, mat_path, num_joints, Path(images_root) if images_root else None)
    splits = assign_splits(len(entries), parse_split(split), seed)
    load = Reencode(load_image_entry, reencode_jpeg) if reencode_jpeg else load_image_entry
    source = {"kind": "mat", "path": str(mat_path.resolve()), "stamp": file_stamp(mat_path), "split": split or "",
              "seed": seed}
    writer = ShardWriter(out, num_joints, joint_names, all_joints, skeleton, samples_per_shard, source, overwrite)
    written = convert_entries(entries, writer, source=str(mat_path), splits=splits, load=load, workers=workers,
                              skip_bad=skip_bad, quiet=quiet)
    return {"samples": written, "num_joints": num_joints, "note": note}


def file_stamp(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def cached_shards(mat_path: str | Path, cfg, quiet: bool = False) -> Path:
    """A config's `dataset: x.mat` -> shards converted on first use into `x.mat.shards/` beside it.

    The cache is reused while the .mat is unchanged (same size and modification time) and rebuilt otherwise. All
    entries go to the `train` split (as the seed trained on the whole file); convert explicitly with --split for a
    held-out set.
    """
    mat_path = Path(mat_path)
    cache = mat_path.with_name(mat_path.name + ".shards")
    manifest = cache / "manifest.json"
    if manifest.is_file() and mat_path.is_file():
        try:
            source = json.loads(manifest.read_text()).get("source", {})
        except (ValueError, AttributeError):  # a damaged cache manifest: convert again below
            source = {}
        if source.get("stamp") == file_stamp(mat_path):
            return cache
    convert(mat_path, cache, num_joints=cfg.num_joints or None, joint_names=cfg.joint_names or None,
            all_joints=cfg.all_joints or None, skeleton=cfg.skeleton or None, split=None, seed=cfg.seed,
            overwrite=True, quiet=quiet)
    return cache
