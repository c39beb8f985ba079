"""fastpose.tfckpt against TensorFlow's own files (tests/data/tf, made by tools/tf_fixtures.py with TensorFlow 2.21):
every tensor bit for bit in V1 and V2; hand-made tables for the snappy and restart-point paths; each kind of bad input
ending in one clear UserError."""

from __future__ import annotations

import importlib.util
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import cramjam
import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from fastpose.errors import UserError
from fastpose.tfckpt import CRC_MASK_DELTA, TABLE_MAGIC, is_tf_checkpoint, masked_crc32c, open_checkpoint, table_items

REPO = Path(__file__).resolve().parents[1]
TF = REPO / "tests" / "data" / "tf"
PNG = Path(__file__).resolve().parents[2] / "shared" / "data" / "pose-tensorflow" / "image.png"
FIXTURES = ["r50_all", "r101_plain", "dtypes"]


@pytest.fixture(scope="module")
def held():
    """Each fixture's tensors as TensorFlow held them in memory when it saved them."""
    return {name: dict(np.load(TF / name / "tensors.npz")) for name in FIXTURES}


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()  # NaN bits too


@pytest.mark.parametrize("fixture", FIXTURES)
@pytest.mark.parametrize("file", ["model.ckpt", "model_v1.ckpt"])
def test_every_tensor_bit_for_bit(fixture, file, held):
    ckpt = open_checkpoint(TF / fixture / file)
    assert ckpt.version == ("V1" if file.endswith("v1.ckpt") else "V2")
    expected = held[fixture]
    names = [n for n in ckpt.names() if n != "string"]
    assert names == sorted(expected) and len(names) > 250
    for name in names:
        value = ckpt.read(name)
        assert ckpt.dtype(name) == expected[name].dtype and ckpt.shape(name) == expected[name].shape
        assert _same(value, expected[name]), name


def test_dtypes_fixture_covers_the_awkward_values(held):
    """The dtypes fixture holds what would break a sloppy decoder: int64 extremes (10-byte varints in V1), NaN/inf
    and a denormal, float16 (V1's half_val holds bit patterns), bool, an empty and a scalar tensor."""
    v1 = open_checkpoint(TF / "dtypes" / "model_v1.ckpt")
    assert v1.read("int64").tolist() == [-2**63, -1, 0, 1, 2**63 - 1, 123456789012345]
    assert v1.read("bool").tolist() == [True, False, True]
    assert v1.read("scalar").shape == () and v1.read("scalar") == np.float32(np.pi)
    assert v1.read("empty").shape == (0, 3)
    special = v1.read("special")
    assert np.isnan(special[2]) and special[0] == np.inf and np.signbit(special[3]) and special[4] > 0
    assert v1.read("half").dtype == np.float16 and v1.shape("half") == (3, 5)


@pytest.mark.parametrize("fixture", FIXTURES)
def test_string_tensor_listed_but_not_read(fixture):
    ckpt = open_checkpoint(TF / fixture / "model.ckpt")
    if fixture != "dtypes":
        assert "string" not in ckpt
        return
    assert ckpt.shape("string") == ()
    with pytest.raises(UserError, match="TensorFlow type string"):
        ckpt.read("string")


def test_the_names_a_user_may_give(tmp_path):
    folder = TF / "r50_all"
    for name in ["model.ckpt", "model.ckpt.index", "model.ckpt.data-00000-of-00001"]:
        ckpt = open_checkpoint(folder / name)
        assert ckpt.path == folder / "model.ckpt" and ckpt.version == "V2"
        assert is_tf_checkpoint(folder / name)
    assert is_tf_checkpoint(folder / "model_v1.ckpt") and not is_tf_checkpoint(folder / "pose_cfg.yaml")
    assert is_tf_checkpoint(folder / "model.ckpt.meta")  # so that open_checkpoint explains what to pass
    assert is_tf_checkpoint(tmp_path / "resnet_v1_101.ckpt") and is_tf_checkpoint(tmp_path / "model.ckpt-1000")
    assert not is_tf_checkpoint(tmp_path / "missing.pth") and not is_tf_checkpoint(tmp_path)
    torch.save({"conv1.weight": torch.zeros(2)}, tmp_path / "resnet.pth")
    assert not is_tf_checkpoint(tmp_path / "resnet.pth")
    # A Lightning-style .ckpt that is really a torch zip is not TensorFlow's.
    shutil.copy(tmp_path / "resnet.pth", tmp_path / "lightning.ckpt")
    assert not is_tf_checkpoint(tmp_path / "lightning.ckpt")


def test_masked_crc32c():
    """crc32c's check value (RFC 3720: "123456789" -> 0xE3069283), masked as TensorFlow's crc32c::Mask does."""
    crc = 0xE3069283
    assert masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + CRC_MASK_DELTA) & 0xFFFFFFFF
    assert masked_crc32c(b"") == CRC_MASK_DELTA  # crc32c of nothing is 0


# ---- hand-made tables --------------------------------------------------------------------------------------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def _block(entries: list[tuple[bytes, bytes]], restart_interval: int) -> bytes:
    out, restarts, prev = bytearray(), [], b""
    for i, (key, value) in enumerate(entries):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(prev), len(key)) and prev[shared] == key[shared]:
                shared += 1
        out += _varint(shared) + _varint(len(key) - shared) + _varint(len(value)) + key[shared:] + value
        prev = key
    return bytes(out) + struct.pack(f"<{len(restarts) or 1}I", *(restarts or [0])) + struct.pack("<I",
                                                                                                 len(restarts) or 1)


def _table(entries, per_block=4, restart_interval=16, snappy=False) -> bytes:
    """A LevelDB table as TensorFlow's table builder lays it out, with every block snappy-compressed if asked."""
    out = bytearray()

    def put(contents: bytes) -> bytes:
        kind = 0
        if snappy:
            contents, kind = bytes(cramjam.snappy.compress_raw(contents)), 1
        handle = _varint(len(out)) + _varint(len(contents))
        out.extend(contents + bytes([kind]) + masked_crc32c(contents + bytes([kind])).to_bytes(4, "little"))
        return handle

    index = [(chunk[-1][0], put(_block(chunk, restart_interval)))
             for chunk in (entries[i:i + per_block] for i in range(0, len(entries), per_block))]
    meta = put(_block([], 1))
    handles = meta + put(_block(index, 1))
    return bytes(out) + handles + bytes(40 - len(handles)) + TABLE_MAGIC.to_bytes(8, "little")


def test_hand_computed_block():
    """Two keys sharing "a": the second is stored as (shared 1, own 1, value 1, "c", "2"); one restart, at 0."""
    block = _block([(b"ab", b"1"), (b"ac", b"2")], restart_interval=16)
    assert block == bytes([0, 2, 1]) + b"ab1" + bytes([1, 1, 1]) + b"c2" + bytes([0, 0, 0, 0, 1, 0, 0, 0])
    table = _table([(b"ab", b"1"), (b"ac", b"2")])
    assert [(k, bytes(v)) for k, v in table_items(memoryview(table))] == [(b"ab", b"1"), (b"ac", b"2")]


@pytest.mark.parametrize("restart_interval", [1, 3, 16])
@pytest.mark.parametrize("snappy", [False, True])
def test_table_round_trip(restart_interval, snappy):
    rng = np.random.default_rng(restart_interval)
    entries = sorted({f"scope/block{i % 7}/unit_{i}/weights".encode(): rng.bytes(int(rng.integers(0, 300)))
                      for i in range(200)}.items())
    entries.insert(0, (b"", b"header"))
    got = [(k, bytes(v)) for k, v in table_items(memoryview(_table(entries, 9, restart_interval, snappy)))]
    assert got == entries


@pytest.mark.parametrize("file", ["model.ckpt.index", "model_v1.ckpt"])
def test_snappy_compressed_checkpoint(tmp_path, file, held):
    """TensorFlow <= 1.1 wrote snappy blocks: TF's own table, re-laid with every block compressed, reads the same."""
    src = TF / "r50_all"
    entries = [(k, bytes(v)) for k, v in table_items(memoryview((src / file).read_bytes()))]
    (tmp_path / file).write_bytes(_table(entries, per_block=5, restart_interval=4, snappy=True))
    if file.endswith(".index"):
        shutil.copy(src / "model.ckpt.data-00000-of-00001", tmp_path)
    ckpt = open_checkpoint(tmp_path / file.removesuffix(".index"))
    assert all(_same(ckpt.read(n), held["r50_all"][n]) for n in ckpt.names())


def test_bad_blocks(tmp_path):
    entries = [(f"k{i:03d}".encode(), b"v") for i in range(20)]
    table = bytearray(_table(entries, per_block=20, restart_interval=4))
    # The first block's trailer is after its contents: (compression type, crc). Type 2 is no TensorFlow type...
    size = len(_block(entries, 4))
    bad = bytearray(table)
    bad[size] = 2
    bad[size + 1:size + 5] = masked_crc32c(bytes(bad[:size + 1])).to_bytes(4, "little")
    with pytest.raises(ValueError, match="compression type 2"):
        list(table_items(memoryview(bytes(bad))))
    # ... and a restart point that does not land on an entry (the checksum made to fit, so the check is the one hit).
    bad = bytearray(table)
    bad[size - 8:size - 4] = struct.pack("<I", 3)
    bad[size + 1:size + 5] = masked_crc32c(bytes(bad[:size + 1])).to_bytes(4, "little")
    with pytest.raises(ValueError, match="restart points"):
        list(table_items(memoryview(bytes(bad))))


# ---- bad input ---------------------------------------------------------------------------------------------------

def _copy(tmp_path: Path, *files: str) -> Path:
    for f in files:
        shutil.copy(TF / "r50_all" / f, tmp_path / f)
    return tmp_path


def _one_paragraph(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text and "Traceback" not in text
    return text


def test_meta_file(tmp_path):
    _copy(tmp_path, "model.ckpt.index", "model.ckpt.data-00000-of-00001")
    (tmp_path / "model.ckpt.meta").write_bytes(b"\x0a\x02graph")
    with pytest.raises(UserError) as e:
        open_checkpoint(tmp_path / "model.ckpt.meta")
    assert "MetaGraph" in _one_paragraph(e) and f"Pass the prefix {tmp_path / 'model.ckpt'} instead" in str(e.value)
    (tmp_path / "model.ckpt.index").unlink()
    with pytest.raises(UserError, match="which are not beside it"):
        open_checkpoint(tmp_path / "model.ckpt.meta")


def test_index_without_data(tmp_path):
    _copy(tmp_path, "model.ckpt.index")
    for name in ["model.ckpt", "model.ckpt.index"]:
        with pytest.raises(UserError) as e:
            open_checkpoint(tmp_path / name)
        assert f"lacks its data file {tmp_path / 'model.ckpt.data-00000-of-00001'}" in _one_paragraph(e)


def test_data_without_index(tmp_path):
    _copy(tmp_path, "model.ckpt.data-00000-of-00001")
    with pytest.raises(UserError) as e:
        open_checkpoint(tmp_path / "model.ckpt.data-00000-of-00001")
    assert f"{tmp_path / 'model.ckpt.index'} is missing" in _one_paragraph(e)


def test_truncated_data(tmp_path, held):
    _copy(tmp_path, "model.ckpt.index", "model.ckpt.data-00000-of-00001")
    data = tmp_path / "model.ckpt.data-00000-of-00001"
    full = data.read_bytes()
    data.write_bytes(full[:len(full) // 2])
    with pytest.raises(UserError) as e:
        open_checkpoint(tmp_path / "model.ckpt")
    text = _one_paragraph(e)
    assert "is cut short" in text and f"the file has {len(full) // 2}" in text
    # The tensor named is one whose bytes (found in the intact file) run past the cut.
    name = text.split("the tensor '")[1].split("'")[0]
    start = full.find(held["r50_all"][name].tobytes())
    assert start >= 0 and start + held["r50_all"][name].nbytes > len(full) // 2


def test_flipped_byte_in_data_names_the_tensor(tmp_path, held):
    _copy(tmp_path, "model.ckpt.index", "model.ckpt.data-00000-of-00001")
    data = tmp_path / "model.ckpt.data-00000-of-00001"
    full = bytearray(data.read_bytes())
    at = len(full) * 2 // 3
    full[at] ^= 0x10
    data.write_bytes(bytes(full))
    ckpt = open_checkpoint(tmp_path / "model.ckpt")
    failed = {}
    for name in ckpt.names():
        try:
            assert _same(ckpt.read(name), held["r50_all"][name])
        except UserError as e:
            failed[name] = str(e)
    assert len(failed) == 1
    (name, message), = failed.items()
    assert f"The tensor '{name}'" in message and "fails its checksum" in message and "\n" not in message
    original = bytes(full[:at]) + bytes([full[at] ^ 0x10]) + bytes(full[at + 1:])
    start = original.find(held["r50_all"][name].tobytes())
    assert start <= at < start + held["r50_all"][name].nbytes


def test_flipped_byte_in_v1_file(tmp_path):
    _copy(tmp_path, "model_v1.ckpt")
    path = tmp_path / "model_v1.ckpt"
    full = bytearray(path.read_bytes())
    full[len(full) // 2] ^= 0x01
    path.write_bytes(bytes(full))
    with pytest.raises(UserError) as e:
        open_checkpoint(path)
    assert "fails its checksum" in _one_paragraph(e) and str(path) in str(e.value)


@pytest.mark.parametrize("file", ["model.ckpt.index", "model_v1.ckpt"])
def test_truncated_table(tmp_path, file):
    _copy(tmp_path, file, "model.ckpt.data-00000-of-00001")
    path = tmp_path / file
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(UserError) as e:
        open_checkpoint(path)
    assert "is not a TensorFlow checkpoint" in _one_paragraph(e)
    assert ("cut short" if file.endswith(".index") else "truncated file") in str(e.value)


@pytest.mark.skipif(not PNG.is_file(), reason=f"shared test data not found at {PNG}")
def test_png(tmp_path):
    shutil.copy(PNG, tmp_path / "weights.ckpt")
    with pytest.raises(UserError) as e:
        open_checkpoint(tmp_path / "weights.ckpt")
    assert "it is a PNG image" in _one_paragraph(e)


def test_not_a_checkpoint(tmp_path):
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "resnet50.pth")
    with pytest.raises(UserError) as e:
        open_checkpoint(tmp_path / "resnet50.pth")
    assert "zip archive (a PyTorch .pt/.pth file?" in _one_paragraph(e)
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "snapshot-1000"\n')
    with pytest.raises(UserError, match="only names the newest checkpoint"):
        open_checkpoint(tmp_path / "checkpoint")
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(UserError, match="it is empty"):
        open_checkpoint(tmp_path / "empty.ckpt")


def test_folder_and_missing_prefix(tmp_path):
    _copy(tmp_path, "model.ckpt.index", "model.ckpt.data-00000-of-00001", "model_v1.ckpt")
    with pytest.raises(UserError) as e:
        open_checkpoint(tmp_path)
    assert "is a folder" in _one_paragraph(e) and "It holds the checkpoints: model.ckpt, model_v1.ckpt." in str(e.value)
    with pytest.raises(UserError) as e:
        open_checkpoint(tmp_path / "snapshot-1000")
    assert "No TensorFlow checkpoint at" in _one_paragraph(e) and "model.ckpt, model_v1.ckpt" in str(e.value)


def test_unknown_name_suggests_the_closest():
    ckpt = open_checkpoint(TF / "r50_all" / "model.ckpt")
    with pytest.raises(UserError) as e:
        ckpt.read("resnet_v1_50/conv1/weight")
    assert "Closest names: resnet_v1_50/conv1/weights" in _one_paragraph(e)
    with pytest.raises(UserError, match="has no tensor 'resnet_v1_101/conv1/weights'"):
        ckpt.shape("resnet_v1_101/conv1/weights")


# ---- regenerating the fixtures with TensorFlow -------------------------------------------------------------------

def _tf_python() -> str | None:
    if importlib.util.find_spec("tensorflow") is not None:
        return sys.executable
    return os.environ.get("FASTPOSE_TF_PYTHON") or None


@pytest.mark.slow
@pytest.mark.skipif(_tf_python() is None, reason="TensorFlow is not importable here; set FASTPOSE_TF_PYTHON to a "
                    "Python with tensorflow-cpu 2.21, tf-keras and tf-slim (see tools/tf_fixtures.py)")
def test_regenerated_fixtures_match(tmp_path, held):
    """tools/tf_fixtures.py run again gives the committed fixtures: the same weights bit for bit (numpy-seeded), the
    batch-norm statistics and outputs (computed by TF's convolutions, which may round differently on another CPU)
    within float32 noise, and checkpoints that the reader returns bit for bit."""
    subprocess.run([_tf_python(), str(REPO / "tools" / "tf_fixtures.py"), "--out", str(tmp_path), "--only",
                    "r50_all", "dtypes"], check=True, capture_output=True, timeout=900)
    for fixture in ["r50_all", "dtypes"]:
        fresh = dict(np.load(tmp_path / fixture / "tensors.npz"))
        assert sorted(fresh) == sorted(held[fixture])
        for name, value in fresh.items():
            if "moving_" in name:
                np.testing.assert_allclose(value, held[fixture][name], rtol=1e-4, atol=1e-5, err_msg=name)
            else:
                assert _same(value, held[fixture][name]), name
        for file in ["model.ckpt", "model_v1.ckpt"]:
            ckpt = open_checkpoint(tmp_path / fixture / file)
            assert all(_same(ckpt.read(n), fresh[n]) for n in fresh)
    golden, fresh = np.load(TF / "r50_all" / "golden.npz"), np.load(tmp_path / "r50_all" / "golden.npz")
    assert sorted(golden.files) == sorted(fresh.files)
    for key in golden.files:
        np.testing.assert_allclose(fresh[key], golden[key], rtol=1e-4, atol=1e-4, err_msg=key)


# ---- fuzzing: tables with valid checksums around malformed records, and raw damage -------------------------------

_SOURCES = {"V1": TF / "dtypes" / "model_v1.ckpt", "V2": TF / "dtypes" / "model.ckpt.index"}
_ENTRIES: dict[str, list[tuple[bytes, bytes]]] = {}


def _entries(version: str) -> list[tuple[bytes, bytes]]:
    if version not in _ENTRIES:
        _ENTRIES[version] = [(k, bytes(v)) for k, v in table_items(memoryview(_SOURCES[version].read_bytes()))]
    return list(_ENTRIES[version])


def _mutate(data: bytes, op: str, at: float, junk: bytes) -> bytes:
    p = min(int(at * len(data)), max(len(data) - 1, 0))
    if op == "flip":
        return data[:p] + bytes([data[p] ^ junk[0]]) + data[p + 1:] if data else junk
    if op == "cut":
        return data[:p]
    if op == "insert":
        return data[:p] + junk + data[p:]
    return data[:p] + junk + data[p + len(junk):]  # overwrite


@given(version=st.sampled_from(["V1", "V2"]), where=st.sampled_from(["value", "key", "raw"]),
       entry=st.integers(0, 10**6), op=st.sampled_from(["flip", "cut", "insert", "overwrite"]),
       at=st.floats(0, 1), junk=st.binary(min_size=1, max_size=12))
@example(version="V2", where="value", entry=0, op="overwrite", at=0.0, junk=b"\x08\x00")  # 0 shards
@example(version="V1", where="value", entry=0, op="flip", at=0.5, junk=b"\x07")
@example(version="V1", where="value", entry=3, op="cut", at=0.3, junk=b"\x00")
def test_fuzz_checkpoint_files(tmp_path_factory, version, where, entry, op, at, junk):
    """A damaged .index / V1 file, or one whose records are malformed inside valid checksums (as a buggy writer
    would make), opens and reads, or ends in a one-paragraph UserError; never another exception."""
    folder = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    name = _SOURCES[version].name
    if where == "raw":
        data = _mutate(_SOURCES[version].read_bytes(), op, at, junk)
    else:
        entries = _entries(version)
        i = entry % len(entries)
        key, value = entries[i]
        entries[i] = (_mutate(key, op, at, junk), value) if where == "key" else (key, _mutate(value, op, at, junk))
        data = _table(entries, per_block=50, restart_interval=16)
    (folder / name).write_bytes(data)
    if version == "V2":
        (folder / "model.ckpt.data-00000-of-00001").symlink_to(TF / "dtypes" / "model.ckpt.data-00000-of-00001")
    try:
        ckpt = open_checkpoint(folder / name)
    except UserError as e:
        assert str(e) and "\n" not in str(e), str(e)
        return
    for tensor in ckpt.names():
        try:
            ckpt.read(tensor)
        except UserError as e:
            assert tensor in str(e) and "\n" not in str(e), str(e)


# ---- hand-made V1 records: encodings TensorFlow 2.21 does not write, but older writers or partitioned saves do ----

def _ld(field: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _v1_file(path: Path, shape: tuple[int, ...], slices: list[tuple[list[tuple[int, int]], bytes]]) -> Path:
    """A V1 checkpoint of one float32 tensor "x": `slices` are ([(start, length) per dim], TensorProto body)."""
    dims = b"".join(_ld(2, _varint(1 << 3) + _varint(d)) for d in shape)
    meta = _ld(1, _ld(1, b"x") + _ld(2, dims) + _varint(3 << 3) + _varint(1))  # SavedTensorSliceMeta.tensor
    entries = [(b"", _ld(1, meta))]
    for i, (extents, body) in enumerate(slices):
        spec = b"".join(_ld(1, _varint(1 << 3) + _varint(s) + _varint(2 << 3) + _varint(n)) for s, n in extents)
        entries.append((b"\x00x" + bytes([i]), _ld(2, _ld(1, b"x") + _ld(2, spec) + _ld(3, body))))
    path.write_bytes(_table(entries))
    return path


def _floats(values) -> bytes:
    return np.asarray(values, "<f4").tobytes()


def test_v1_encodings_and_slices(tmp_path):
    packed = _ld(5, _floats([1, 2, 3, 4]))  # float_val, packed (what TensorFlow writes)
    unpacked = b"".join(_varint(5 << 3 | 5) + _floats([v]) for v in [1, 2, 3, 4])  # one fixed32 field per value
    content = _ld(4, _floats([1, 2, 3, 4]))  # tensor_content
    for body in [packed, unpacked, content]:
        x = open_checkpoint(_v1_file(tmp_path / "a.ckpt", (2, 2), [([(0, 2), (0, 2)], body)])).read("x")
        assert x.tolist() == [[1, 2], [3, 4]]
    # A partitioned variable: rows 0 and 1 saved as two slices, put together.
    rows = [([(0, 1), (0, 2)], _ld(5, _floats([1, 2]))), ([(1, 1), (0, 2)], _ld(5, _floats([3, 4])))]
    assert open_checkpoint(_v1_file(tmp_path / "b.ckpt", (2, 2), rows)).read("x").tolist() == [[1, 2], [3, 4]]
    with pytest.raises(UserError, match=r"has values for 2 of its 4 elements"):
        open_checkpoint(_v1_file(tmp_path / "c.ckpt", (2, 2), rows[:1])).read("x")
    with pytest.raises(UserError, match=r"'x' .* is damaged \(a value field of 4-byte numbers is malformed\)"):
        open_checkpoint(_v1_file(tmp_path / "d.ckpt", (2, 2), [([(0, 2), (0, 2)], _ld(5, b"\x00" * 5))])).read("x")
    with pytest.raises(UserError, match=r"a slice holds 3 values where its shape needs 4"):
        open_checkpoint(_v1_file(tmp_path / "e.ckpt", (2, 2), [([(0, 2), (0, 2)], _ld(5, _floats([1, 2, 3])))]))\
            .read("x")


def test_malformed_v2_header(tmp_path):
    """A header whose version field is a number instead of a message (a record inside a valid checksum)."""
    (tmp_path / "m.index").write_bytes(_table([(b"", _varint(1 << 3) + _varint(1) + _varint(3 << 3) + _varint(5))]))
    (tmp_path / "m.data-00000-of-00001").write_bytes(b"")
    with pytest.raises(UserError, match="holds a number where a message belongs"):
        open_checkpoint(tmp_path / "m")
