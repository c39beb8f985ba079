"""User-facing errors: a mistake the user can fix (bad file, typo in a config, joint id out of range).

The CLI catches `UserError`, prints its message as one paragraph and exits with status 2; anything else is a bug in
fastpose and keeps its traceback. `out_folder` / `out_file` turn the usual output-path mistakes (a file where a folder
must go, a folder given as an output file, no write permission) into such a message, naming the option.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

# Write failures the user fixes: disk full, quota, the output folder made read-only or removed while writing.
USER_FIXABLE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.ENOENT)


class UserError(Exception):
    """A problem with the user's input. The message says what, where (file, entry) and how to fix it."""


def out_folder(path: str | Path, option: str) -> Path:
    """Create the output folder `path` (and its parents) for `option` (e.g. "--out"); UserError when it cannot be."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        # Some component of the path (maybe the path itself) is a file.
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), path)
        raise UserError(f"{option} {path}: {blocker} is a file, not a folder, so the output folder cannot be created "
                        f"there. Pass another {option} folder, or move that file away.") from None
    except OSError as e:  # permission denied, read-only file system, ...
        raise UserError(f"{option} {path}: the folder cannot be created ({e.strerror or e}). Pass a folder you can "
                        f"write to.") from None
    if not os.access(path, os.W_OK):
        raise UserError(f"{option} {path}: the folder is not writable. Pass a folder you can write to.")
    return path


def out_file(path: str | Path, option: str, example: str = "out.json") -> Path:
    """Check that the output file `path` of `option` can be written: its folder is created, and it is no folder."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder, but a file name is expected here. Pass a file path such as "
                        f"{path / example}.")
    out_folder(path.parent, option)
    return path


def cause(e: BaseException) -> str:
    """'Type: first sentence' of a library's exception, for quoting inside a UserError (torch's run for paragraphs,
    and some of their advice, such as weights_only=False, is not for our users)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    end = text.find(". ")
    return f"{type(e).__name__}: {text[:end + 1] if end >= 0 else text}".rstrip(": ")
