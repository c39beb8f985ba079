"""ImageNet weights for `init_weights:`: download torchvision's ResNet checkpoints, verified, written atomically.

This replaces the reference's `models/pretrained/download.sh` (TF-slim checkpoints). The files are torchvision's
IMAGENET1K_V1 ResNet weights, whose names embed the first 8 hex digits of the file's sha256 (torchvision's own
convention, which `torch.hub` checks). Where the full sha256 is recorded below the whole digest is checked; otherwise
the 8-digit prefix from the file name is.

The download base URL can be replaced (a mirror, or a local server in the tests) with the `url_base` argument or the
FASTPOSE_WEIGHTS_URL environment variable.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from fastpose.atomic import sha256_of
from fastpose.errors import UserError, out_folder

DEFAULT_URL_BASE = "https://download.pytorch.org/models/"
URL_ENV = "FASTPOSE_WEIGHTS_URL"

# name -> (file name at the URL base, full sha256 or None when only the file name's prefix is known).
# resnet50's full digest: the Git LFS pointer of an unchanged copy of resnet50-0676ba61.pth (102530333 bytes) in the
# Hugging Face repo weleen/syncs; its first 8 digits agree with the file name. The others: prefix only.
WEIGHTS = {
    "resnet18": ("resnet18-f37072fd.pth", None),
    "resnet34": ("resnet34-b627a593.pth", None),
    "resnet50": ("resnet50-0676ba61.pth", "0676ba61b6795bbe1773cffd859882e5e297624d384b6993f7c9e683e722fb8a"),
    "resnet101": ("resnet101-63fe2227.pth", None),
    "resnet152": ("resnet152-394f9c45.pth", None),
}
CHUNK = 1 << 20


def canonical_name(name: str) -> str:
    """'resnet50', 'resnet_50' (a net_type) and 'ResNet-50' all mean 'resnet50'."""
    key = name.lower().replace("_", "").replace("-", "")
    if key not in WEIGHTS:
        raise UserError(f"Unknown weights '{name}'. Allowed: {', '.join(WEIGHTS)} (torchvision's ImageNet ResNets; "
                        f"pick the one matching your net_type, e.g. resnet_101 -> resnet101).")
    return key


def expected_digest(name: str) -> tuple[str, bool]:
    """(expected sha256 or its prefix, whether it is the full digest)."""
    filename, full = WEIGHTS[name]
    if full:
        return full, True
    return filename.rsplit("-", 1)[1].split(".", 1)[0], False


def download(name: str, out_dir: str | Path = "weights", url_base: str | None = None, progress: bool = True) -> Path:
    """Fetch the ImageNet weights `name` into out_dir (skipped when a verified copy is there); returns its path.

    Raises UserError on a network/HTTP failure, a connection that drops before the announced length, or a checksum
    mismatch; no file (and no partial file) is left behind in those cases.
    """
    name = canonical_name(name)
    filename, _ = WEIGHTS[name]
    want, full = expected_digest(name)
    base = url_base or os.environ.get(URL_ENV) or DEFAULT_URL_BASE
    url = base.rstrip("/") + "/" + filename
    out_dir = Path(out_dir)
    dest = out_dir / filename
    if dest.is_file() and _matches(sha256_of(dest), want, full):
        return dest
    out_folder(out_dir, "--out")
    tmp = out_dir / f".{filename}.part-{os.getpid()}"
    try:
        digest = _fetch(url, tmp, progress)
        if not _matches(digest, want, full):
            what = "sha256" if full else "sha256 prefix (from torchvision's file name)"
            raise UserError(f"{url}: the downloaded file's sha256 is {digest}, but the expected {what} is {want}. "
                            f"The file was deleted. Retry; if it persists, the server (or {URL_ENV}) serves another "
                            f"file.")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _matches(digest: str, want: str, full: bool) -> bool:
    return digest == want if full else digest.startswith(want)


def _fetch(url: str, tmp: Path, progress: bool) -> str:
    """Stream url into tmp, return the sha256; UserError when the transfer fails or ends short."""
    fix = (f"Check the network and retry, or download {url} yourself (e.g. with curl) and point init_weights at it; "
           f"set {URL_ENV} to use a mirror.")
    h = hashlib.sha256()
    received = 0
    total = None
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as f:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            bar = _progress_bar(progress)
            with bar:
                task = bar.add_task(url.rsplit("/", 1)[1], total=total)
                while block := response.read(CHUNK):
                    f.write(block)
                    h.update(block)
                    received += len(block)
                    bar.update(task, advance=len(block))
    except urllib.error.HTTPError as e:
        raise UserError(f"Downloading {url} failed: HTTP {e.code} {e.reason}. {fix}") from None
    except http.client.IncompleteRead as e:
        raise UserError(f"Downloading {url}: the connection dropped after {received + len(e.partial)} bytes of "
                        f"{total} (incomplete file deleted). {fix}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        raise UserError(f"Downloading {url} failed after {received} bytes: {reason}. No file was written. {fix}") \
            from None
    if total is not None and received != total:
        raise UserError(f"Downloading {url}: the connection dropped after {received} bytes of {total} (incomplete "
                        f"file deleted). {fix}")
    return h.hexdigest()


def _progress_bar(enabled: bool):
    # On stderr, so stdout carries only the init_weights line.
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), console=Console(stderr=True), disable=not enabled)
