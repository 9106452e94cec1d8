"""Claims: which process is computing which run, so that two sweeps sharing one --out do not
compute the same run twice.

Before computing a run a sweep creates `<runs>/.claim-<run>` with O_CREAT|O_EXCL (atomic,
also on NFS v3+), holding "host pid start-time". A sweep that finds someone else's claim
skips the run and comes back to it at the end of its sweep. A claim is stale when its host
is this host and its process is gone (killed; the start time guards against a reused pid):
it is then removed and the run claimed anew. Claims of other hosts cannot be checked, so
they are trusted; delete the claim file by hand if that machine died.

Claims only save work; correctness does not depend on them: save_run keeps one complete copy
of a run however many workers save it. So the rare races here (two sweeps breaking the same
stale claim at once) cost at most a run computed twice.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from .files import fs_error

PREFIX = ".claim-"
HOST = socket.gethostname()
UNWRITTEN_GRACE_S = 30.0  # an empty claim younger than this is being written, not abandoned


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot ('' where /proc has none)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def pid_alive(pid: int, start: str = "") -> bool:
    """Whether process `pid` of this host runs (and, given its start time, is the same one)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not start or _start_time(pid) in ("", start)


@dataclass(frozen=True)
class Holder:
    """The process that holds a claim."""
    host: str
    pid: int
    start: str = ""

    @property
    def local(self) -> bool:
        return self.host == HOST

    @property
    def alive(self) -> bool:
        return not self.local or self.pid < 0 or pid_alive(self.pid, self.start)

    def __str__(self) -> str:
        who = f"pid {self.pid}" if self.pid >= 0 else "an unknown process"
        return who + ("" if self.local else f" on {self.host}")


def claim_path(run_dir: Path) -> Path:
    return run_dir.parent / f"{PREFIX}{run_dir.name}"


def _holder(path: Path) -> Holder | None:
    """Who holds the claim at `path`: None if it vanished or is stale (garbled, or its
    process is gone)."""
    try:
        text = path.read_text()
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None
    except OSError:
        return Holder("?", -1)  # unreadable: assume someone elsewhere holds it
    parts = text.split()
    try:
        holder = Holder(parts[0], int(parts[1]), parts[2] if len(parts) > 2 else "")
    except (IndexError, ValueError):
        return Holder(HOST, -1) if not text and age < UNWRITTEN_GRACE_S else None
    return holder if holder.alive else None


def acquire(run_dir: Path) -> Path | Holder:
    """Claim a run: the claim file (release it when done), or the live holder of the claim."""
    path = claim_path(run_dir)
    for _ in range(5):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            holder = _holder(path)
            if holder is not None:
                return holder
            try:  # stale: break it, then try again
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as e:
                raise fs_error("cannot remove stale claim", path, e) from None
            continue
        except OSError as e:
            raise fs_error("cannot claim run: cannot write", path, e) from None
        try:
            os.write(fd, f"{HOST} {os.getpid()} {_start_time(os.getpid())}\n".encode())
        finally:
            os.close(fd)
        return path
    return Holder(HOST, -1)  # claimed and broken over and over: come back to it later


def release(claim: Path) -> None:
    """Best effort: a claim left behind is stale once its process has exited."""
    try:
        os.unlink(claim)
    except OSError:
        pass


def clean_stale(runs_dir: Path) -> None:
    """Remove the stale claims in a runs folder (left by killed processes of this host)."""
    for path in runs_dir.glob(f"{PREFIX}*"):
        if _holder(path) is None:
            try:
                os.unlink(path)
            except OSError:
                pass
