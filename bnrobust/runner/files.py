"""Writing and reading our files safely.

Writes are atomic (a temporary file beside the target, renamed over it) and get the mode a
plain open()/mkdir() would: tempfile creates 0600/0700, which would hide results from the
group the user's umask shares them with. Every OSError on our files becomes one
BnrobustError line that names the path and the cause.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..errors import BnrobustError


def umask() -> int:
    """The process umask. Read from /proc where possible, since os.umask can only read it by
    setting it (not thread-safe); the set-and-restore fallback is fine for a CLI."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def file_mode() -> int:
    return 0o666 & ~umask()


def dir_mode() -> int:
    return 0o777 & ~umask()


def why(e: OSError) -> str:
    """The cause of an OSError in words ('No space left on device')."""
    return e.strerror or str(e) or type(e).__name__


def fs_error(action: str, path: Path | str, e: OSError) -> BnrobustError:
    """'cannot write /x/record.json: No space left on device', naming the file the OS names if any."""
    return BnrobustError(f"{action} {e.filename or path}: {why(e)}")


class Damaged(ValueError):
    """A file of ours that exists but does not parse; `reason` says how, e.g. 'record.json is truncated'."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def load_json(path: Path) -> Any:
    """Parse a JSON file we wrote. Damaged if it does not parse; OSErrors pass through."""
    data = path.read_bytes()
    try:
        return json.loads(data)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        if not data.strip():
            raise Damaged(path, f"{path.name} is empty") from None
        if not data.rstrip().endswith((b"}", b"]")):  # we always write an object or a list
            raise Damaged(path, f"{path.name} is truncated ({len(data)} bytes)") from None
        raise Damaged(path, f"{path.name} is not valid JSON ({e})") from None


@contextmanager
def atomic_output(path: Path, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside `path` (same folder, so the rename is atomic) that becomes
    `path` when the block succeeds and is removed when it fails. OSErrors in the block
    (disk full, ...) become a BnrobustError naming `path`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    except OSError as e:
        raise fs_error("cannot write", path, e) from None
    try:
        os.fchmod(fd, file_mode())
        os.close(fd)
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise BnrobustError(f"cannot write {path}: {why(e)}") from None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def write_bytes_synced(path: Path, data: bytes | memoryview) -> None:
    """Write and fsync, so that a crash right after the rename cannot leave an empty file."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_output(path) as tmp:
        write_bytes_synced(tmp, text.encode())


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, allow_nan=True) + "\n")


def _probe(folder: Path) -> None:
    """Create and remove a file in `folder` (raises the OSError a real write would)."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".write-test-")
    os.close(fd)
    os.unlink(tmp)


def check_writable(*folders: tuple[Path, str]) -> None:
    """Create each (folder, what it is) and check that we can write in it, before any work:
    one line naming the first that fails."""
    for folder, what in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _probe(folder)
        except OSError as e:
            raise BnrobustError(f"cannot write to {what} {folder}: {why(e)}") from None
