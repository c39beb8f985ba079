"""Files: the user's file arguments expanded (files, folders, glob patterns), atomic writes (a temp name beside the
target, then a rename, so no reader ever sees half a file) and the sha256 of a file (shard manifests, weights)."""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from fastpose.errors import UserError


def write_atomic(path: str | Path, data: str | bytes | Callable[[Path], object]) -> Path:
    """Write `data` (text, bytes, or a function that writes the given temp path) to `path` atomically.

    The temp name keeps the target's suffix (`x.png.tmp.png`), for writers that choose the format from it (cv2,
    scipy.io.savemat); it is removed if the write fails.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp" + path.suffix)
    try:
        if isinstance(data, str):
            tmp.write_text(data)
        elif isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            data(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def sha256_of(path: str | Path, block_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's contents, read in blocks (shards and weights files can be GBs)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(block_size):
            h.update(block)
    return h.hexdigest()


def expand_paths(items: list[str | Path], suffixes: tuple[str, ...], kind: str) -> list[Path]:
    """Files, folders (their files with one of `suffixes`, sorted) and glob patterns -> paths in order, without
    duplicates. A file given by name is kept whatever its suffix (its reader decides); `kind` ("images", "videos")
    names what is looked for in the messages."""
    paths: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in suffixes and q.is_file())
            if not found:
                raise UserError(f"{p} is a folder without {kind} ({', '.join(suffixes)}). Pass {kind[:-1]} files, a "
                                f"folder of {kind} or a glob such as '{p}/*{suffixes[0]}'.")
            paths += found
        elif p.is_file():
            paths.append(p)
        elif glob.has_magic(str(item)):
            found = sorted(Path(q) for q in glob.glob(str(item), recursive=True) if Path(q).is_file())
            if not found:
                raise UserError(f"The pattern '{item}' matched no files. Check the path (quote the pattern so the "
                                f"shell does not expand it).")
            paths += found
        else:
            raise UserError(f"{item} does not exist. Pass {kind[:-1]} files, folders of {kind} or glob patterns.")
    seen, unique = set(), []
    for p in paths:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique
