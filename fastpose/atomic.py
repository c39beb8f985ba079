"""Files written and checked safely: atomic writes (a temp name beside the target, then a rename, so no reader ever
sees half a file) and the sha256 of a file (shard manifests, downloaded weights)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path


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
