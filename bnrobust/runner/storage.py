"""The run store: one folder per run, keyed by the hash of its resolved config.

A run is written into a temporary folder and renamed into place, so a run folder is either
complete or absent; still, a run counts as finished only when its files check out (see
`check_run_dir`), because disks fill, machines crash and people edit files. Concurrent
saves of one run (two workers that computed it) keep one complete copy, with no error and no
moment without the folder.
"""
from __future__ import annotations

import ctypes
import errno
import functools
import io
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import BnrobustError
from ..models import build_model
from . import claims
from .execute import get_dataset
from .files import (Damaged, dir_mode, load_json, why, write_bytes_synced, write_json_atomic,
                    write_text_atomic)

__all__ = ["Health", "Run", "check_run_dir", "checkpoint_path", "clean_stale_tmp", "save_run", "slug",
           "write_json_atomic", "write_text_atomic"]

STATUSES = ("ok", "failed")
TMP_PREFIX = ".tmp-"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "run"


@dataclass(frozen=True)
class Health:
    """Whether a run folder holds a finished run, and if not, why."""
    finished: bool
    reason: str = ""           # why not: "" when never started, else what is damaged
    path: Path | None = None   # the damaged file
    fatal: bool = False        # the folder cannot be read (an OSError): re-running would not fix it
    record: dict | None = None
    saved_ns: int = 0          # record.json's mtime


def _first_line(e: BaseException) -> str:
    text = str(e).strip().split("\n")[0].split(". ")[0]
    return f"{type(e).__name__}: {text[:100]}" if text else type(e).__name__


def _unreadable(d: Path, e: OSError) -> Health:
    if e.errno == errno.ENOTDIR and not d.exists():
        return Health(False)  # a folder above the run is a file: never run here (check_writable names it)
    if d.exists() and not d.is_dir():
        return Health(False, f"{d} is a file, not a run folder", d, fatal=True)
    return Health(False, f"cannot read {e.filename or d}: {why(e)}", Path(e.filename or d), fatal=True)


def check_run_dir(d: Path) -> Health:
    """A run is finished when record.json parses to a dict with a known status and, for an
    ok run, model.pt loads (torch.load weights_only)."""
    rec, pt = d / "record.json", d / "model.pt"
    try:
        st = rec.stat()
    except FileNotFoundError:
        return Health(False, "record.json is missing", rec) if d.is_dir() else Health(False)
    except OSError as e:
        return _unreadable(d, e)
    try:
        record = load_json(rec)
    except Damaged as e:
        return Health(False, e.reason, rec)
    except OSError as e:
        return _unreadable(d, e)
    if not isinstance(record, dict):
        return Health(False, f"record.json holds {json.dumps(record)[:20]}, not a run record", rec)
    if record.get("status") not in STATUSES:
        what = f"an unknown status {record['status']!r}" if "status" in record else "no status"
        return Health(False, f"record.json has {what}", rec)
    if record["status"] == "ok":
        if not isinstance(record.get("metrics"), dict):
            return Health(False, "record.json has no metrics", rec)
        try:
            f = open(pt, "rb")
        except FileNotFoundError:
            return Health(False, "model.pt is missing", pt)
        except OSError as e:
            return _unreadable(d, e)
        with f:
            try:
                weights = torch.load(f, map_location="cpu", weights_only=True)
            except Exception as e:  # truncated or corrupt: EOFError, RuntimeError, OSError, UnpicklingError
                return Health(False, f"model.pt is truncated or corrupt ({_first_line(e)})", pt)
        if not isinstance(weights, dict):
            return Health(False, "model.pt holds no weights", pt)
    return Health(True, record=record, saved_ns=st.st_mtime_ns)


def _stat_key(p: Path) -> tuple[int, int, int] | None:
    try:
        st = p.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


@dataclass
class Run:
    variant: str
    seed: int
    config: dict
    dir: Path
    _health: tuple[Any, Health] | None = field(default=None, init=False, repr=False, compare=False)

    def health(self) -> Health:
        """check_run_dir, cached until record.json or model.pt change (it loads the weights)."""
        try:
            key = (_stat_key(self.dir / "record.json"), _stat_key(self.dir / "model.pt"))
        except OSError as e:
            return _unreadable(self.dir, e)
        if self._health is None or self._health[0] != key:
            self._health = (key, check_run_dir(self.dir))
        return self._health[1]

    @property
    def done(self) -> bool:
        """Finished (see check_run_dir). A record set on the instance (in-memory results) counts too."""
        return "record" in self.__dict__ or self.health().finished

    @functools.cached_property
    def record(self) -> dict:
        h = self.health()
        if not h.finished:
            raise BnrobustError(f"run {self.dir} is not finished: {h.reason or 'it has not run'}")
        return h.record  # type: ignore[return-value]

    @property
    def ok(self) -> bool:
        return self.done and self.record["status"] == "ok"

    def metric(self, path: str) -> Any:
        """A stored metric by dotted path, e.g. "fgsm.acc"; None if the run has none."""
        node: Any = self.record.get("metrics", {})
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def model(self, root: Path | None = None) -> torch.nn.Module:
        """Rebuild the trained model from its config and stored weights (on CPU)."""
        torch.manual_seed(self.seed)
        model = build_model(self.config["model"], get_dataset(self.config, root))
        model.load_state_dict(torch.load(self.dir / "model.pt", map_location="cpu", weights_only=True))
        return model.eval()


def checkpoint_path(run: Run) -> Path:
    """Where a run in progress keeps its training state (hidden beside the run folders; written
    only by the process that holds the run's claim, removed once the run is saved)."""
    return run.dir.parent / f".ckpt-{run.dir.name}.pt"


def _owner() -> str:
    return f"{claims.HOST}-{os.getpid()}"


def clean_stale_tmp(runs_dir: Path) -> None:
    """Remove temporary run folders and claims left by killed processes of this host."""
    for tmp in runs_dir.glob(f"{TMP_PREFIX}*"):
        m = re.match(rf"{re.escape(TMP_PREFIX + claims.HOST)}-(\d+)-", tmp.name)
        if m and not claims.pid_alive(int(m.group(1))):
            shutil.rmtree(tmp, ignore_errors=True)
    claims.clean_stale(runs_dir)


@functools.lru_cache(maxsize=1)
def _renameat2() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically (Linux renameat2 RENAME_EXCHANGE). False where the
    kernel, libc or file system cannot, or `b` is gone."""
    fn = _renameat2()
    if fn is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.ENOENT, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _install(tmp: Path, dest: Path, force: bool) -> bool:
    """Rename the complete run folder `tmp` to `dest`. If `dest` exists and is complete, keep
    it (another worker finished the same config) unless `force`; otherwise swap ours in.
    `tmp` is left holding whatever the caller should delete. True if ours is in place."""
    try:
        os.rename(tmp, dest)  # atomic; fails if dest is a non-empty folder
        return True
    except OSError as e:
        if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
    if not force and check_run_dir(dest).finished:
        return False
    if _exchange(tmp, dest):
        return True
    # No atomic exchange: move the old copy aside, then ours in (a moment without the folder).
    aside = tmp.with_name(tmp.name + "-old")
    try:
        os.rename(dest, aside)
    except FileNotFoundError:
        pass  # another worker moved it aside first
    try:
        os.rename(tmp, dest)
    except OSError as e:
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
            return False  # another worker's copy went in first: it is as good as ours
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)
    return True


def save_run(run: Run, record: dict, model: torch.nn.Module, force: bool = False) -> bool:
    """Write config, record and weights into a temporary folder, then rename it into place:
    a run folder either is complete or does not exist. If another worker saved the same run
    meanwhile, one complete copy is kept (ours only with `force`). Any OSError (disk full,
    permissions) is one BnrobustError line and leaves nothing half-written. True if ours was
    stored."""
    if record.get("status") not in STATUSES:
        raise ValueError(f"record status must be one of {STATUSES}, got {record.get('status')!r}")
    tmp: Path | None = None
    try:
        run.dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=run.dir.parent, prefix=f"{TMP_PREFIX}{_owner()}-{run.dir.name}-"))
        os.chmod(tmp, dir_mode())
        write_bytes_synced(tmp / "config.json",
                           (json.dumps({"variant": run.variant, **run.config}, indent=2) + "\n").encode())
        if record["status"] == "ok":  # via memory, so a full disk is an OSError, not torch's RuntimeError
            buf = io.BytesIO()
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
            write_bytes_synced(tmp / "model.pt", buf.getbuffer())
        write_bytes_synced(tmp / "record.json", (json.dumps(record, indent=2, allow_nan=True) + "\n").encode())
        return _install(tmp, run.dir, force)
    except OSError as e:
        raise BnrobustError(f"cannot save run {run.dir}: {why(e)}") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
