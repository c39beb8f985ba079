"""TensorFlow checkpoints read without TensorFlow: the V2 format (`prefix.index` + `prefix.data-00000-of-00001`, what
`tf.train.Saver` writes since TF 1.0, pose-tensorflow's and DeepLabCut 2.x's snapshots) and the V1 format (one file,
TF-slim's ImageNet `resnet_v1_50.ckpt`), in pure Python + numpy, TF's own values bit for bit.

Both are LevelDB tables ("SSTables"): data blocks of sorted (key, value) entries, each key stored as the length it
shares with the previous key plus its own suffix, with a "restart point" (a full key) every few entries; each block is
followed by a 1-byte compression type (0 none, 1 snappy) and the masked crc32c of block + type. An index block maps
the last key of each data block to its (offset, size), and a 48-byte footer holds the index block's handle and the
magic number. TensorFlow <= 1.1 could write snappy-compressed blocks (V1 files used the default table options, V2
index files were compressed in TF 1.1), so they are decompressed here (cramjam); today's writers never compress.

- V2: the table is the `.index` file. Key "" holds a BundleHeaderProto (number of shards, byte order, version); every
  other key is a tensor name whose value is a BundleEntryProto (dtype, shape, shard, offset, size, masked crc32c of
  the tensor's bytes). The bytes lie at [offset, offset + size) of `prefix.data-<shard>-of-<shards>`, raw.
- V1: the table is the whole file. Key "" holds a SavedTensorSlices with the meta (every tensor's name, shape, dtype
  and stored slices); every other key is an encoded (name, slice) whose value is a SavedTensorSlices holding one
  SavedSlice: the slice and a TensorProto with the values (float_val, half_val, int64_val, ... or tensor_content).

Protobuf messages are read with a small wire-format decoder (varints, fixed32/64, length-delimited fields), so no
protobuf or TensorFlow is needed. Every damage (truncated file, flipped byte, missing shard) ends in a UserError that
names the file, the tensor where known, and what to do.
"""

from __future__ import annotations

import difflib
import math
import mmap
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cramjam
import google_crc32c
import numpy as np

from fastpose.errors import UserError

TABLE_MAGIC = 0xDB4775248B80FB57  # leveldb's kTableMagicNumber, the footer's last 8 bytes (little-endian)
FOOTER_SIZE = 48  # two block handles (varints, padded to 40 bytes) + the magic
BLOCK_TRAILER = 5  # compression type (1 byte) + masked crc32c (4 bytes) after every block
CRC_MASK_DELTA = 0xA282EAD8
BUNDLE_VERSION = 1  # kTensorBundleVersion: the newest V2 layout this reader knows
_DATA_SUFFIX = re.compile(r"\.data-(\d{5})-of-(\d{5})$")

# TensorFlow's DataType enum (types.proto) -> numpy; the types a checkpoint of numbers can hold.
DTYPES = {
    1: np.dtype(np.float32), 2: np.dtype(np.float64), 3: np.dtype(np.int32), 4: np.dtype(np.uint8),
    5: np.dtype(np.int16), 6: np.dtype(np.int8), 8: np.dtype(np.complex64), 9: np.dtype(np.int64),
    10: np.dtype(np.bool_), 17: np.dtype(np.uint16), 18: np.dtype(np.complex128), 19: np.dtype(np.float16),
    22: np.dtype(np.uint32), 23: np.dtype(np.uint64),
}
UNSUPPORTED_DTYPES = {7: "string", 11: "qint8", 12: "quint8", 13: "qint32", 14: "bfloat16", 15: "qint16",
                      16: "quint16", 20: "resource", 21: "variant"}
# The TensorProto field that holds each dtype's values when tensor_content is not used (tensor.proto).
_VALUE_FIELD = {1: 5, 2: 6, 3: 7, 4: 7, 5: 7, 6: 7, 8: 9, 9: 10, 10: 11, 17: 7, 18: 12, 19: 13, 22: 16, 23: 17}
_FIXED_FIELDS = {5: "<f4", 6: "<f8", 9: "<f4", 12: "<f8"}  # float_val, double_val, scomplex_val, dcomplex_val


class _Corrupt(ValueError):
    """Damage found while decoding; the caller turns it into a UserError naming the file."""


def masked_crc32c(data: bytes) -> int:
    """crc32c as TensorFlow stores it (crc32c::Mask): rotated right by 15 bits plus a constant, so that a crc of
    data that itself holds crcs does not look like a crc."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + CRC_MASK_DELTA) & 0xFFFFFFFF


# ---- protobuf wire format ---------------------------------------------------------------------------------------

def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise _Corrupt("a varint runs past the end of its record")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Corrupt("a varint is longer than 10 bytes")


def _varints(buf: memoryview) -> np.ndarray:
    """All varints of a packed field, vectorised (a float16 tensor of millions of values): (N,) uint64."""
    a = np.frombuffer(buf, np.uint8)
    ends = np.flatnonzero(a < 0x80)  # the last byte of each varint
    if len(a) and (not len(ends) or ends[-1] != len(a) - 1):
        raise _Corrupt("a packed field ends inside a varint")
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
    lengths = ends - starts + 1
    if len(lengths) and lengths.max() > 10:
        raise _Corrupt("a varint is longer than 10 bytes")
    out = np.zeros(len(ends), np.uint64)
    for k in range(int(lengths.max()) if len(lengths) else 0):
        take = lengths > k
        out[take] |= (a[starts[take] + k] & 0x7F).astype(np.uint64) << np.uint64(7 * k)
    return out


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of a message: ints for varint / fixed fields, a view for length-delimited."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end)
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            if pos + n > end:
                raise _Corrupt("a fixed-size field runs past the end of its record")
            value = int.from_bytes(buf[pos:pos + n], "little")
            pos += n
        elif wire == 2:
            n, pos = _varint(buf, pos, end)
            if pos + n > end:
                raise _Corrupt("a length-delimited field runs past the end of its record")
            value = buf[pos:pos + n]
            pos += n
        else:
            raise _Corrupt(f"protobuf wire type {wire} (field {number}) is not used by checkpoints")
        yield number, wire, value


def _message(buf: memoryview) -> dict[int, list]:
    """Field number -> its values in order (a scalar field's value is the last one, as protobuf merges)."""
    if not isinstance(buf, memoryview):
        raise _Corrupt("a record holds a number where a message belongs")
    out: dict[int, list] = {}
    for number, _, value in _fields(buf):
        out.setdefault(number, []).append(value)
    return out


def _int64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _scalar(m: dict[int, list], number: int, default: int = 0) -> int:
    values = m.get(number)
    if values and not isinstance(values[-1], int):
        raise _Corrupt("a record holds bytes where a number belongs")
    return values[-1] if values else default


def _bytes(m: dict[int, list], number: int) -> memoryview | None:
    values = m.get(number)
    if values and not isinstance(values[-1], memoryview):
        raise _Corrupt("a record holds a number where bytes belong")
    return values[-1] if values else None


def _text(m: dict[int, list], number: int) -> str:
    value = _bytes(m, number)
    return "" if value is None else bytes(value).decode("utf-8", "replace")


def _shape(buf: memoryview | None) -> tuple[int, ...]:
    """TensorShapeProto: dim (2) {size (1)}, unknown_rank (3)."""
    if buf is None:
        return ()
    m = _message(buf)
    if _scalar(m, 3):
        raise _Corrupt("a tensor has an unknown rank")
    dims = tuple(_int64(_scalar(_message(d), 1)) for d in m.get(2, []))
    if any(d < 0 for d in dims):
        raise _Corrupt(f"a tensor has an undefined dimension {dims}")
    return dims


def _slice(buf: memoryview) -> tuple[tuple[int, int | None], ...]:
    """TensorSliceProto: extent (1) {start (1), length (2)}; a missing length is the whole dimension (None)."""
    extents = []
    for e in _message(buf).get(1, []):
        m = _message(e)
        extents.append((_int64(_scalar(m, 1)), _int64(_scalar(m, 2)) if 2 in m else None))
    return tuple(extents)


def _tensor_values(buf: memoryview, code: int, count: int) -> np.ndarray:
    """The (count,) values of a TensorProto of dtype `code` (V1 files: the typed repeated field, or tensor_content)."""
    dtype = DTYPES[code]
    content = _bytes(_message(buf), 4)
    if content is not None and len(content):
        if len(content) != count * dtype.itemsize:
            raise _Corrupt(f"a slice holds {len(content)} bytes where its shape needs {count * dtype.itemsize}")
        raw = np.frombuffer(content, dtype.newbyteorder("<")).astype(dtype)
    else:
        number = _VALUE_FIELD[code]
        parts: list[np.ndarray] = []
        for wire_number, wire, value in _fields(buf):
            if wire_number != number:
                continue
            if number in _FIXED_FIELDS:  # packed (wire 2) or one value per field (wire 5 / 1)
                fmt = np.dtype(_FIXED_FIELDS[number])
                if wire not in (2, 5 if fmt.itemsize == 4 else 1) or wire == 2 and len(value) % fmt.itemsize:
                    raise _Corrupt(f"a value field of {fmt.itemsize}-byte numbers is malformed")
                parts.append(np.frombuffer(value if wire == 2 else value.to_bytes(fmt.itemsize, "little"), fmt))
            elif wire in (2, 0):  # varints, packed or one per field
                parts.append(_varints(value) if wire == 2 else np.array([value], np.uint64))
            else:
                raise _Corrupt("a value field of varints holds fixed-size numbers")
        flat = np.concatenate(parts) if parts else np.zeros(0, np.uint64)
        if code in (8, 18):  # complex: (re, im) pairs
            if flat.size % 2:
                raise _Corrupt("a complex slice holds an odd count of numbers")
            raw = flat.astype(dtype.type(0).real.dtype).view(dtype)
        elif code == 19:  # half_val holds the float16 bit patterns as ints
            raw = flat.astype(np.uint16).view(np.float16)
        elif code == 10:
            raw = flat != 0
        elif flat.dtype == np.uint64:  # varints: negative ints are 64-bit two's complement
            raw = flat.view(np.int64).astype(dtype)
        else:
            raw = flat.astype(dtype)
    if raw.size != count:
        raise _Corrupt(f"a slice holds {raw.size} values where its shape needs {count}")
    return raw


# ---- LevelDB table ----------------------------------------------------------------------------------------------

def _handle(buf: memoryview, pos: int, end: int) -> tuple[int, int, int]:
    offset, pos = _varint(buf, pos, end)
    size, pos = _varint(buf, pos, end)
    return offset, size, pos


def _block(data: memoryview, offset: int, size: int) -> memoryview:
    """The contents of the block at `offset` (checksum verified, decompressed)."""
    if offset + size + BLOCK_TRAILER > len(data) - FOOTER_SIZE:
        raise _Corrupt(f"a block at bytes {offset}-{offset + size} lies past the end of the file")
    raw = bytes(data[offset:offset + size + 1])  # the contents + the compression type byte
    kind = raw[-1]
    stored = int.from_bytes(data[offset + size + 1:offset + size + BLOCK_TRAILER], "little")
    if masked_crc32c(raw) != stored:
        raise _Corrupt(f"the block at bytes {offset}-{offset + size} fails its checksum (the file was changed "
                       f"after TensorFlow wrote it)")
    if kind == 0:
        return memoryview(raw)[:-1]
    if kind == 1:
        try:
            return memoryview(bytes(cramjam.snappy.decompress_raw(raw[:-1])))
        except cramjam.DecompressionError as e:
            raise _Corrupt(f"the snappy block at bytes {offset}-{offset + size} does not decompress ({e})") from None
    raise _Corrupt(f"the block at bytes {offset}-{offset + size} has compression type {kind} (only 0, none, and "
                   f"1, snappy, exist in TensorFlow's tables)")


def _block_entries(block: memoryview) -> Iterator[tuple[bytes, memoryview]]:
    """(key, value) of a block in order: each key is `shared` bytes of the previous one + its own suffix; the restart
    points (offsets of entries with shared == 0, for binary search) are checked, the scan itself is linear."""
    if len(block) < 4:
        raise _Corrupt("a block is shorter than its restart count")
    n_restarts = int.from_bytes(block[-4:], "little")
    limit = len(block) - 4 - 4 * n_restarts  # entries end where the restart array begins
    if n_restarts < 1 or limit < 0:
        raise _Corrupt(f"a block claims {n_restarts} restart points")
    restarts = set(np.frombuffer(block[limit:len(block) - 4], "<u4").tolist())
    pos, key, seen = 0, b"", 0
    while pos < limit:
        start = pos
        shared, pos = _varint(block, pos, limit)
        own, pos = _varint(block, pos, limit)
        size, pos = _varint(block, pos, limit)
        if shared > len(key) or pos + own + size > limit:
            raise _Corrupt("a block entry runs past its block")
        if start in restarts:
            if shared:
                raise _Corrupt("a restart point holds a key that is not whole")
            seen += 1
        key = key[:shared] + bytes(block[pos:pos + own])
        pos += own
        yield key, block[pos:pos + size]
        pos += size
    if seen != len(restarts) and not (limit == 0 and restarts == {0}):  # an empty block has one restart, at 0
        raise _Corrupt("a block's restart points do not point at its entries")


def table_items(data: memoryview) -> Iterator[tuple[bytes, memoryview]]:
    """Every (key, value) of a LevelDB table held in `data` (an .index file or a V1 checkpoint), in key order."""
    if len(data) < FOOTER_SIZE or int.from_bytes(data[-8:], "little") != TABLE_MAGIC:
        raise _Corrupt("the file does not end in a table footer (it is cut short, or not a checkpoint)")
    footer = data[len(data) - FOOTER_SIZE:]
    _, _, pos = _handle(footer, 0, 40)  # the metaindex block: TensorFlow writes it empty
    index_offset, index_size, _ = _handle(footer, pos, 40)
    for _, handle in _block_entries(_block(data, index_offset, index_size)):
        offset, size, _ = _handle(handle, 0, len(handle))
        yield from _block_entries(_block(data, offset, size))


# ---- the checkpoint ---------------------------------------------------------------------------------------------

@dataclass
class _Tensor:
    code: int  # TensorFlow DataType
    shape: tuple[int, ...]
    shard: int = 0  # V2: where the bytes are
    offset: int = 0
    size: int = 0
    crc: int = 0
    sliced: bool = False  # V2: a partitioned variable (its slices under other keys)
    slices: list | None = None  # V1: [(extents, TensorProto view)]


class Checkpoint:
    """An open TensorFlow checkpoint: `names()`, `shape(name)`, `dtype(name)`, `read(name)`; `path` is the V2 prefix
    or the V1 file, `version` "V1" or "V2". Files are memory-mapped; a tensor is read (and checksummed) on demand."""

    def __init__(self, path: Path, version: str, tensors: dict[str, _Tensor], files: list[Path],
                 maps: list[memoryview], big_endian: bool = False):
        self.path, self.version = path, version
        self._tensors, self._files, self._maps, self._big_endian = tensors, files, maps, big_endian

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r}, {self.version}, {len(self._tensors)} tensors)"

    def __contains__(self, name: str) -> bool:
        return name in self._tensors

    def __len__(self) -> int:
        return len(self._tensors)

    def names(self) -> list[str]:
        return sorted(self._tensors)

    def _get(self, name: str) -> _Tensor:
        tensor = self._tensors.get(name)
        if tensor is None:
            close = difflib.get_close_matches(name, self._tensors, n=3, cutoff=0.5)
            hint = (f"Closest names: {', '.join(close)}." if close else
                    f"It holds {len(self._tensors)} tensors, e.g. {', '.join(self.names()[:3])}.")
            raise UserError(f"The TensorFlow checkpoint {self.path} has no tensor '{name}'. {hint} Check that the "
                            f"checkpoint is the network you meant (its scope names, e.g. resnet_v1_101 vs "
                            f"resnet_v1_50).")
        return tensor

    def shape(self, name: str) -> tuple[int, ...]:
        return self._get(name).shape

    def dtype(self, name: str) -> np.dtype:
        tensor = self._get(name)
        if tensor.code not in DTYPES:
            kind = UNSUPPORTED_DTYPES.get(tensor.code, f"type {tensor.code}")
            raise UserError(f"The tensor '{name}' of {self.path} is of TensorFlow type {kind}, which fastpose does "
                            f"not read (only numeric tensors: float16/32/64, ints, bool, complex). Network weights "
                            f"are float32; leave this tensor out.")
        return DTYPES[tensor.code]

    def read(self, name: str) -> np.ndarray:
        """The tensor as TensorFlow saved it (same dtype, shape and bits)."""
        tensor = self._get(name)
        dtype = self.dtype(name)
        count = math.prod(tensor.shape)
        if self.version == "V2":
            if tensor.sliced:
                raise UserError(f"The tensor '{name}' of {self.path} is a partitioned variable (saved in slices), "
                                f"which fastpose does not read. Save it unpartitioned (tf.train.Saver of the whole "
                                f"variable) and pass that checkpoint.")
            raw = self._maps[tensor.shard][tensor.offset:tensor.offset + tensor.size]
            if masked_crc32c(bytes(raw)) != tensor.crc:
                raise UserError(f"The tensor '{name}' in {self._files[tensor.shard]} fails its checksum: the file was "
                                f"changed after TensorFlow wrote it (a damaged download or copy). Download or copy "
                                f"the checkpoint's .data file again.")
            if tensor.size != count * dtype.itemsize:
                raise UserError(f"The tensor '{name}' of {self.path} is {tensor.size} bytes, but its shape "
                                f"{tensor.shape} of {dtype} needs {count * dtype.itemsize}: the .index file does not "
                                f"belong to this .data file. Pass a prefix whose files were saved together.")
            order = ">" if self._big_endian else "<"
            return np.frombuffer(raw, dtype.newbyteorder(order)).astype(dtype).reshape(tensor.shape)
        return self._read_v1(name, tensor, dtype, count)

    def _read_v1(self, name: str, tensor: _Tensor, dtype: np.dtype, count: int) -> np.ndarray:
        if count > len(self._maps[0]):  # every value takes at least one byte of the file
            raise UserError(f"The tensor '{name}' in {self.path} claims the shape {tensor.shape}, more values than the "
                            f"file holds bytes: the file is damaged. Download or copy it again.")
        out = np.zeros(tensor.shape, dtype)
        covered = 0
        try:
            for extents, proto in tensor.slices or []:
                if len(extents) not in (0, len(tensor.shape)):
                    raise _Corrupt(f"a slice of rank {len(extents)} for a tensor of rank {len(tensor.shape)}")
                index = tuple(slice(s, None if n is None else s + n) for s, n in extents)
                target = out[index] if index else out
                values = _tensor_values(proto, tensor.code, target.size)
                target[...] = values.reshape(target.shape)
                covered += target.size
        except _Corrupt as e:
            raise UserError(f"The tensor '{name}' in {self.path} is damaged ({e}). Download or copy the checkpoint "
                            f"again.") from None
        if covered != count:
            raise UserError(f"The tensor '{name}' in {self.path} has values for {covered} of its {count} elements "
                            f"(slices are missing): the file is incomplete. Download or copy it again.")
        return out


def _map(path: Path) -> memoryview:
    """The file's bytes, memory-mapped read-only (an empty file gives an empty view)."""
    with open(path, "rb") as f:
        if f.seek(0, 2) == 0:
            return memoryview(b"")
        return memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))


def _looks_like(path: Path) -> str:
    """What a file that is not a checkpoint seems to be, for the message."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"\x89PNG"):
        return "it is a PNG image"
    if head.startswith(b"\xff\xd8\xff"):
        return "it is a JPEG image"
    if head.startswith(b"PK\x03\x04"):
        return "it is a zip archive (a PyTorch .pt/.pth file? pass it as a torchvision weights file instead)"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "it is a Python pickle (an old PyTorch file?)"
    if head.startswith(b"\x89HDF"):
        return "it is an HDF5 file (a Keras .h5 model?), which fastpose does not read"
    if head.startswith(b"model_checkpoint_path"):
        return ("it is TensorFlow's 'checkpoint' state file, which only names the newest checkpoint: pass the prefix "
                "its model_checkpoint_path line names")
    if not head:
        return "it is empty"
    return "it does not end in the table footer of a TensorFlow checkpoint (a truncated file, or another format)"


def _prefixes_in(folder: Path) -> str:
    found = sorted({p.name[:-len(".index")] for p in folder.glob("*.index")} | {p.name for p in folder.glob("*.ckpt")})
    return f" It holds the checkpoints: {', '.join(found[:8])}." if found else " It holds no .index or .ckpt file."


def _resolve(path: Path) -> tuple[Path, str]:
    """(prefix or file, "V1" | "V2") for whatever name of a checkpoint the user gave."""
    name = path.name
    how = ("Pass a V2 checkpoint's prefix (model.ckpt-1000, beside model.ckpt-1000.index and "
           "model.ckpt-1000.data-00000-of-00001) or a V1 checkpoint file such as resnet_v1_50.ckpt.")
    if name.endswith(".meta"):
        prefix = path.with_name(name[:-len(".meta")])
        where = (f"Pass the prefix {prefix} instead (the weights are in {prefix}.index and its .data file)."
                 if Path(f"{prefix}.index").is_file() else
                 f"The weights are in {prefix}.index and {prefix}.data-00000-of-00001, which are not beside it: copy "
                 f"them there and pass the prefix {prefix}.")
        raise UserError(f"{path} is a TensorFlow MetaGraph (the graph's structure), which holds no weights. {where}")
    data = _DATA_SUFFIX.search(name)
    if data or name.endswith(".index"):
        prefix = path.with_name(name[:data.start()] if data else name[:-len(".index")])
        if not Path(f"{prefix}.index").is_file():
            raise UserError(f"{path} is part of the TensorFlow checkpoint {prefix}, but {prefix}.index is missing "
                            f"(it maps tensor names into the .data file). Copy the .index file beside the .data "
                            f"file and pass the prefix {prefix}.")
        return prefix, "V2"
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a TensorFlow checkpoint.{_prefixes_in(path)} {how}")
    if path.is_file():
        return path, "V1"
    if Path(f"{path}.index").is_file():
        return path, "V2"
    folder = path.parent
    found = _prefixes_in(folder) if folder.is_dir() else f" The folder {folder} does not exist."
    raise UserError(f"No TensorFlow checkpoint at {path}: neither that file nor {path}.index exists.{found} {how}")


def is_tf_checkpoint(path: str | Path) -> bool:
    """Whether `path` is meant as a TensorFlow checkpoint (a cheap look at names and the file's last 8 bytes): a V2
    prefix or any of its files (.index, .data-*, also .meta, so that open_checkpoint explains what to pass), a file
    ending in the table magic (V1), or a missing file named like TensorFlow's (resnet_v1_101.ckpt, model.ckpt-1000),
    so that open_checkpoint says what is missing. False for torchvision .pth files and anything else."""
    path = Path(path)
    if path.name.endswith((".index", ".meta")) or _DATA_SUFFIX.search(path.name) or Path(f"{path}.index").is_file():
        return True
    if not path.exists() and re.search(r"\.ckpt(-\d+)?$", path.name):
        return True
    try:
        with open(path, "rb") as f:
            if f.seek(0, 2) < FOOTER_SIZE:
                return False
            f.seek(-8, 2)
            return int.from_bytes(f.read(8), "little") == TABLE_MAGIC
    except OSError:
        return False


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Open a TensorFlow checkpoint: a V2 prefix (`model.ckpt-1000`), its `.index` or `.data-00000-of-00001` file, or
    a V1 file (`resnet_v1_50.ckpt`). UserError for anything else, or a damaged or incomplete checkpoint."""
    prefix, version = _resolve(Path(path))
    table = Path(f"{prefix}.index") if version == "V2" else prefix
    try:
        data = _map(table)
        if len(data) < FOOTER_SIZE or int.from_bytes(data[-8:], "little") != TABLE_MAGIC:
            what = (_looks_like(table) if version == "V1" else
                    "it does not end in a table footer: it is cut short (an interrupted download or copy) or not an "
                    "index file")
            raise UserError(f"{table} is not a TensorFlow checkpoint: {what}. "
                            + ("Copy the .index file again." if version == "V2" else
                               "Pass a V2 checkpoint's prefix (model.ckpt-1000) or a V1 file such as "
                               "resnet_v1_50.ckpt."))
        if version == "V2":
            return _open_v2(prefix, table, data)
        return _open_v1(prefix, data)
    except _Corrupt as e:
        raise UserError(f"{table} is damaged: {e}. It was probably cut short or changed by an interrupted download "
                        f"or copy; download or copy the checkpoint again.") from None


def _open_v2(prefix: Path, table: Path, data: memoryview) -> Checkpoint:
    items = table_items(data)
    first = next(items, None)
    if first is None or first[0] != b"":
        raise _Corrupt("its first entry is not the bundle header (is it a V1 checkpoint renamed to .index?)")
    header = _message(first[1])
    shards = _scalar(header, 1, 1)
    if not 1 <= shards < 100000:
        raise _Corrupt(f"its header claims {shards} data shards")
    big_endian = _scalar(header, 2) == 1
    version = _message(header[3][-1]) if 3 in header else {}
    if _scalar(version, 2) > BUNDLE_VERSION:
        raise UserError(f"{table} was written by a newer TensorFlow (bundle format {_scalar(version, 2)}; fastpose "
                        f"reads up to {BUNDLE_VERSION}). Re-save it with tf.compat.v1.train.Saver in TensorFlow 2.x "
                        f"or older.")
    tensors: dict[str, _Tensor] = {}
    for key, value in items:
        m = _message(value)
        tensors[key.decode("utf-8", "replace")] = _Tensor(
            code=_scalar(m, 1), shape=_shape(m[2][-1] if 2 in m else None), shard=_scalar(m, 3),
            offset=_int64(_scalar(m, 4)), size=_int64(_scalar(m, 5)), crc=_scalar(m, 6), sliced=bool(m.get(7)))
    files = [Path(f"{prefix}.data-{i:05d}-of-{shards:05d}") for i in range(shards)]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise UserError(f"The TensorFlow checkpoint {prefix} lacks its data file {missing[0]}"
                        f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}: the .index file only maps "
                        f"names to it. Copy the .data-*-of-{shards:05d} file(s) beside the .index file.")
    maps = [_map(f) for f in files]
    for name, t in sorted(tensors.items(), key=lambda kv: kv[1].offset):
        if not t.sliced and (t.shard >= shards or t.offset + t.size > len(maps[t.shard])):
            file = files[min(t.shard, shards - 1)]
            raise UserError(f"{file} is cut short: the tensor '{name}' needs bytes up to {t.offset + t.size}, the "
                            f"file has {len(maps[min(t.shard, shards - 1)])} (an interrupted download or copy). "
                            f"Download or copy it again.")
    return Checkpoint(prefix, "V2", tensors, files, maps, big_endian)


def _open_v1(path: Path, data: memoryview) -> Checkpoint:
    items = table_items(data)
    first = next(items, None)
    if first is None or first[0] != b"":
        raise _Corrupt("its first entry is not the checkpoint's table of contents (is it a V2 .index file? pass the "
                       "prefix without .index)")
    top = _message(first[1])
    if 1 not in top:
        raise _Corrupt("its table of contents holds no tensor list")
    tensors: dict[str, _Tensor] = {}
    for meta in _message(top[1][-1]).get(1, []):  # SavedSliceMeta: name 1, shape 2, type 3, slice 4
        m = _message(meta)
        tensors[_text(m, 1)] = _Tensor(code=_scalar(m, 3), shape=_shape(m[2][-1] if 2 in m else None), slices=[])
    for _, value in items:
        top = _message(value)
        if 2 not in top:
            raise _Corrupt("a slice entry holds no data")
        saved = _message(top[2][-1])  # SavedSlice: name 1, slice 2, data (TensorProto) 3
        name = _text(saved, 1)
        if name not in tensors:
            raise _Corrupt(f"it holds a slice of '{name}', which its table of contents does not list")
        tensors[name].slices.append((_slice(saved[2][-1]) if 2 in saved else (),
                                     saved[3][-1] if 3 in saved else memoryview(b"")))
    return Checkpoint(path, "V1", tensors, [path], [data])

