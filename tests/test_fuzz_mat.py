"""Property-based fuzzing of `fastpose convert mat` (the seed's dataset.mat, MATLAB v5 via scipy and v7.3 via h5py).

Every generated file ends in one of two outcomes: shards with a manifest (each written sample checked against the
entry it came from), or a one-paragraph UserError with nothing that looks like a dataset left behind; with --skip-bad
the bad entries are skipped and listed in the manifest. Never another exception. The inputs that once crashed are
fixed `@example`s. Profiles (examples, deadline, derandomised) are in tests/conftest.py; the `slow` test reruns the
properties with the long profile.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import scipy.io
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fastpose.convert import mat
from fastpose.errors import UserError
from fastpose.shards import ShardDataset, read_manifest

H, W = 24, 32  # the one test image, 24 rows x 32 columns
FIELD_NAMES = ("image", "size", "joints")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzzmat")
    ok, png = cv2.imencode(".png", np.full((H, W, 3), 90, np.uint8))
    assert ok
    (root / "im.png").write_bytes(png.tobytes())
    return root


# ------------------------------------------------------------------------------------------------- field values
def _numeric(shape_st) -> st.SearchStrategy:
    """Arrays of several dtypes (ints, floats, bools, complex) with values near the valid range."""
    dtypes = st.sampled_from([np.float64, np.int32, np.uint8, np.bool_, np.complex128, np.float32])
    return st.builds(lambda shape, dtype, seed: (np.random.default_rng(seed).uniform(-3, 40, shape)).astype(dtype),
                     shape_st, dtypes, st.integers(0, 2**16))


SHAPES = st.sampled_from([(0, 0), (1, 1), (1, 3), (3, 1), (2, 3), (3, 2), (1, 2), (2, 2), (3, 3), (4, 3), (1, 4),
                          (3, 4), (2, 2, 3)])
GOOD_JOINTS = np.array([[0, 5, 6], [1, 10, 12], [2, 20, 8]], np.float64)


def _cell(items: list) -> np.ndarray:
    out = np.empty((1, len(items)), dtype=object)
    for i, v in enumerate(items):
        out[0, i] = v
    return out


TEXT = st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=("Cs",)), max_size=5)  # MATLAB chars: UTF-16
image_values = st.one_of(st.just("im.png"), st.just(""), st.just("missing.png"), TEXT,
                         st.just(np.array([[1.0, 2.0]])), st.just(np.zeros((0, 0))),
                         st.builds(_cell, st.lists(st.just("im.png"), max_size=2)))
size_values = st.one_of(st.just(np.array([[3, H, W]], np.float64)), st.just(np.array([[3], [H], [W]], np.int32)),
                        _numeric(SHAPES), st.just("3 24 32"), st.just(np.array([[3, H, W]], np.complex128)),
                        st.builds(_cell, st.lists(st.just(np.array([[3.0]])), max_size=3)))
person_values = st.one_of(st.just(GOOD_JOINTS), st.just(GOOD_JOINTS.T.copy()), st.just(GOOD_JOINTS[:, 1:].copy()),
                          _numeric(SHAPES), st.just(np.zeros((0, 0))), st.just("abc"),
                          st.just(np.array([[0, np.nan, 3.0]])), st.just(np.array([[7.0, 5, 5]])),
                          st.just(np.array([[0.5, 5, 5]])), st.just(np.array([[-1.0, 5, 5]])),
                          st.just(np.array([[1e300, 5, 5]])))
joints_values = st.one_of(
    st.builds(_cell, st.lists(person_values, max_size=3)),  # a cell of persons
    person_values,  # a plain matrix instead of a cell
    st.builds(lambda xs: _cell([_cell(xs)]), st.lists(person_values, max_size=2)),  # nested cells
    st.builds(_cell, st.lists(st.builds(lambda v: np.array([[v]]), st.floats(-2, 5)), min_size=1, max_size=3)),
)


@st.composite
def datasets(draw) -> dict:
    """A `dataset` struct array: 1 x N, N x 1 or N x M entries, fields possibly missing or extra."""
    shape = draw(st.sampled_from([(1, 1), (1, 2), (2, 1), (2, 2), (1, 0)]))
    names = [f for f in FIELD_NAMES if draw(st.booleans()) or draw(st.integers(0, 9)) > 0]
    if draw(st.integers(0, 5)) == 0:
        names.append("crop")
    entries = [{name: draw({"image": image_values, "size": size_values, "joints": joints_values,
                            "crop": st.just(np.zeros((1, 4)))}[name]) for name in names}
               for _ in range(int(np.prod(shape)))]
    return {"shape": shape, "names": names, "entries": entries}


# ------------------------------------------------------------------------------------------------------ writers
def write_v5(path: Path, spec: dict) -> None:
    names = spec["names"] or ["image"]
    arr = np.zeros(spec["shape"], dtype=[(n, object) for n in names])
    for i, e in enumerate(spec["entries"]):
        idx = np.unravel_index(i, spec["shape"])
        for n in names:
            arr[idx][n] = e.get(n, np.zeros((0, 0)))
    scipy.io.savemat(path, {"dataset": arr})


def _v73(f: h5py.File, value, counter: list[int]) -> h5py.Reference:
    """Store one value under #refs# as MATLAB v7.3 does (column-major, MATLAB_class attribute); its reference."""
    counter[0] += 1
    name = f"#refs#/r{counter[0]}"
    if isinstance(value, str):
        codes = np.array([[ord(c) for c in value]], np.uint16).T if value else np.zeros(2, np.uint64)
        d = f.create_dataset(name, data=codes)
        d.attrs["MATLAB_class"] = np.bytes_("char")
        if not value:
            d.attrs["MATLAB_empty"] = np.uint8(1)
        return d.ref
    value = np.asarray(value)
    if value.dtype == object:
        refs = np.empty(value.shape, dtype=h5py.ref_dtype)
        for idx in np.ndindex(value.shape):
            refs[idx] = _v73(f, value[idx], counter)
        d = f.create_dataset(name, data=refs.T)
        d.attrs["MATLAB_class"] = np.bytes_("cell")
        return d.ref
    if value.dtype == np.complex128:  # MATLAB writes complex as a compound (real, imag)
        data = np.zeros(value.shape, dtype=[("real", "<f8"), ("imag", "<f8")])
        data["real"], data["imag"] = value.real, value.imag
        d = f.create_dataset(name, data=data.T)
        d.attrs["MATLAB_class"] = np.bytes_("double")
        return d.ref
    cls = {"b": "logical", "u": "uint8", "i": "int32"}.get(value.dtype.kind, "double")
    if value.size == 0:
        d = f.create_dataset(name, data=np.array(value.shape, np.uint64))
        d.attrs["MATLAB_empty"] = np.uint8(1)
    else:
        d = f.create_dataset(name, data=value.astype(np.uint8 if cls == "logical" else value.dtype).T)
    d.attrs["MATLAB_class"] = np.bytes_(cls)
    return d.ref


def write_v73(path: Path, spec: dict) -> None:
    with h5py.File(path, "w", userblock_size=512) as f:
        f.create_group("#refs#")
        group = f.create_group("dataset")
        group.attrs["MATLAB_class"] = np.bytes_("struct")
        counter = [0]
        for n in spec["names"]:
            refs = np.empty(spec["shape"], dtype=h5py.ref_dtype)
            for i, e in enumerate(spec["entries"]):
                refs[np.unravel_index(i, spec["shape"])] = _v73(f, e[n], counter)
            group.create_dataset(n, data=refs.T)


# ----------------------------------------------------------------------------------------------------- property
def check_outcome(path: Path, folder: Path, skip_bad: bool) -> None:
    """convert either writes a complete dataset (every sample an image of the source) or raises a UserError in one
    paragraph, leaving no manifest; anything else fails the test."""
    out = Path(tempfile.mkdtemp(dir=folder)) / "shards"
    try:
        result = mat.convert(path, out, images_root=folder, workers=1, skip_bad=skip_bad, quiet=True)
    except UserError as e:
        text = str(e)
        assert "\n" not in text.strip() and "Traceback" not in text, text
        assert str(path) in text or "--num-joints" in text, text  # names the file
        assert not (out / "manifest.json").exists()
        return
    manifest = read_manifest(out)
    n = sum(result["samples"].values())
    assert n == sum(s["samples"] for split in manifest["splits"].values() for s in split["shards"])
    if n:
        ds = ShardDataset(out, "train")
        for i in range(len(ds)):
            sample = ds[i]
            assert sample.size == (3, H, W) and Path(sample.source_path).name == "im.png"
            labelled = sample.joints[..., 2] > 0
            assert np.isfinite(sample.joints[..., :2][labelled]).all()
        ds.close()


# Inputs that crashed before (each is a fixed regression example).
CRASH_3xN = {"shape": (1, 1), "names": list(FIELD_NAMES),
             "entries": [{"image": "im.png", "size": np.array([[3, H, W]], np.float64),
                          "joints": _cell([np.array([[0.0, 1.0]])])}]}  # 1 x 2: the reshape to N x 3 failed
CRASH_COMPLEX = {"shape": (1, 1), "names": list(FIELD_NAMES),
                 "entries": [{"image": "im.png", "size": np.array([[3, H, W]], np.complex128),
                              "joints": _cell([GOOD_JOINTS])}]}
CRASH_NESTED = {"shape": (1, 1), "names": list(FIELD_NAMES),
                "entries": [{"image": "im.png", "size": np.array([[3, H, W]], np.float64),
                             "joints": _cell([_cell([GOOD_JOINTS])])}]}
CRASH_CHAR_JOINTS = {"shape": (1, 1), "names": list(FIELD_NAMES),
                     "entries": [{"image": "im.png", "size": np.array([[3, H, W]], np.float64), "joints": "abc"}]}
CRASH_HUGE_ID = {"shape": (1, 1), "names": list(FIELD_NAMES),
                 "entries": [{"image": "im.png", "size": np.array([[3, H, W]], np.float64),
                              "joints": _cell([np.array([[1e300, 5, 5]])])}]}
CRASH_IMAGE_NUMBER = {"shape": (1, 1), "names": list(FIELD_NAMES),
                      "entries": [{"image": np.array([[1.0, 2.0]]), "size": np.array([[3, H, W]], np.float64),
                                   "joints": _cell([GOOD_JOINTS])}]}


@given(spec=datasets(), skip_bad=st.booleans())
@example(spec=CRASH_3xN, skip_bad=False)
@example(spec=CRASH_COMPLEX, skip_bad=False)
@example(spec=CRASH_NESTED, skip_bad=False)
@example(spec=CRASH_CHAR_JOINTS, skip_bad=True)
@example(spec=CRASH_HUGE_ID, skip_bad=False)
@example(spec=CRASH_IMAGE_NUMBER, skip_bad=False)
def test_fuzz_mat_v5(folder, spec, skip_bad):
    path = Path(tempfile.mkdtemp(dir=folder)) / "dataset.mat"
    write_v5(path, spec)
    check_outcome(path, folder, skip_bad)


@given(spec=datasets(), skip_bad=st.booleans())
@example(spec=CRASH_3xN, skip_bad=False)
@example(spec=CRASH_COMPLEX, skip_bad=False)
@example(spec=CRASH_NESTED, skip_bad=False)
@example(spec=CRASH_CHAR_JOINTS, skip_bad=True)
def test_fuzz_mat_v73(folder, spec, skip_bad):
    path = Path(tempfile.mkdtemp(dir=folder)) / "dataset.mat"
    write_v73(path, spec)
    check_outcome(path, folder, skip_bad)


def test_regressions_name_the_entry(folder):
    """The first crash of the issue (a 1 x 2 person in `joints`) is now a UserError naming entry 0 and the field."""
    path = folder / "three.mat"
    write_v5(path, CRASH_3xN)
    with pytest.raises(UserError, match=r"entry 0: joints cell 1 is a 1 x 2 float64 array, not N x 3"):
        mat.convert(path, folder / "out3", images_root=folder, workers=1, quiet=True)
    with pytest.raises(UserError, match=r"malformed entry: 1 entry \[0\], e\.g\. entry 0: joints cell 1 is a 1 x 2"):
        mat.convert(path, folder / "out3", images_root=folder, num_joints=3, workers=1, quiet=True)
    assert not (folder / "out3" / "manifest.json").exists()
    # --skip-bad: the entry is skipped and listed; with no entry left, that is said too.
    good = {**CRASH_3xN, "shape": (1, 2), "entries": [CRASH_3xN["entries"][0], CRASH_COMPLEX["entries"][0]]}
    good["entries"][1] = {**good["entries"][1], "size": np.array([[3, H, W]], np.float64)}
    write_v5(path, good)
    result = mat.convert(path, folder / "out4", images_root=folder, skip_bad=True, workers=1, quiet=True)
    assert result["samples"] == {"train": 1} and result["num_joints"] == 3
    assert [s["index"] for s in read_manifest(folder / "out4")["skipped"]] == [0]


@pytest.mark.slow
@settings(settings.get_profile("fuzz-long"))
@given(spec=datasets(), skip_bad=st.booleans(), v73=st.booleans())
def test_fuzz_mat_long(folder, spec, skip_bad, v73):
    path = Path(tempfile.mkdtemp(dir=folder)) / "dataset.mat"
    (write_v73 if v73 else write_v5)(path, spec)
    check_outcome(path, folder, skip_bad)
