"""Where datasets live on disk, checksums, and downloads with md5 checks."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

from ..errors import BnrobustError


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """`--data-dir`, else `$BNROBUST_DATA`, else the user cache directory."""
    if data_dir:
        return Path(data_dir).expanduser()
    if os.environ.get("BNROBUST_DATA"):
        return Path(os.environ["BNROBUST_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "bnrobust"


def _md5(path: Path) -> str:
    h = hashlib.md5()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as e:  # unreadable, a folder, ...: one line naming the file
        raise BnrobustError(f"cannot read data file {path}: {e.strerror or e}") from None
    return h.hexdigest()


def _download(urls: list[str], dest: Path, md5: str, timeout: float = 20.0) -> None:
    """Fetch `dest` from the first mirror that serves a file with the right md5."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in urls:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as r:
                shutil.copyfileobj(r, out)
            if _md5(Path(tmp)) != md5:
                raise OSError("md5 mismatch")
            os.replace(tmp, dest)
            return
        except Exception as e:  # noqa: BLE001 - any failure means "try the next mirror"
            errors.append(f"{url}: {e}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise OSError("; ".join(errors))


def download_allowed() -> bool:
    return os.environ.get("BNROBUST_NO_DOWNLOAD", "") in ("", "0")
