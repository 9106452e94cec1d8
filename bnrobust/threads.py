"""CPU threads of bnrobust's processes, so that concurrent sweeps share a machine's cores.

PyTorch starts one OpenMP thread per core in every process, and GNU OpenMP's idle threads
spin (busy-wait) before they sleep. Two processes on one machine then hold twice as many
spinning threads as cores, every parallel operation waits for a descheduled thread, and each
process runs 5-25x slower than alone (`benchmarks/bench_concurrency.py` measures it).

So the `bnrobust` command (and the worker processes it starts, through the environment):
1. shares the cores: every live bnrobust process on this host registers itself (a file in
   `$TMPDIR/bnrobust-procs`) and, before each run and every RECHECK_S seconds while it trains,
   takes cores // live processes threads (`share_cpus`), so two processes never hold more
   threads than cores for long, and
2. bounds how long an idle OpenMP thread spins (`GOMP_SPINCOUNT`, set before torch loads;
   `configure_env`) to SPIN_COUNT spins, 1/30 of libgomp's default: long enough to catch the
   next operation of a small model's step (they come microseconds apart), short enough that a
   thread does not hold a core another process needs for long. Letting idle threads sleep at once
   (`OMP_WAIT_POLICY=PASSIVE`, bnrobust's first fix) made every small operation wait for a
   sleeping thread to wake: Table 1 at paper scale took 13.8 s instead of 9.2 s.

`BNROBUST_THREADS` chooses: `auto` (the command's default), a number (that many threads),
or `torch` (PyTorch's defaults, as before). An explicit `OMP_NUM_THREADS`, `OMP_WAIT_POLICY` or
`GOMP_SPINCOUNT` is always obeyed. Library use is left alone unless BNROBUST_THREADS is set.
Threads only change speed, and the float rounding of some parallel sums.
"""
from __future__ import annotations

import atexit
import os
import sys
import tempfile
import time
from pathlib import Path

ENV = "BNROBUST_THREADS"
RECHECK_S = 2.0  # share_cpus looks at the other processes at most this often
SPIN_COUNT = "10000"  # GOMP_SPINCOUNT; measured on Table 1: 1000 spins 10.7 s, 10^4 9.3 s, 10^5 9.2 s, libgomp's 3*10^5 9.2 s
_state: dict = {"me": None, "pid": None, "checked": -float("inf")}


def configure_env() -> None:
    """Called by the command before anything imports torch: idle OpenMP threads spin only
    briefly, and this process and the workers it starts share the cores (BNROBUST_THREADS=auto),
    unless the user set OMP_WAIT_POLICY or GOMP_SPINCOUNT. A no-op
    where torch is loaded already (the command called in-process, e.g. by tests): libgomp has
    read its settings, and that process's thread count is its caller's business."""
    _mode()  # a bad BNROBUST_THREADS is one line before any work
    if "torch" in sys.modules:
        return
    if os.environ.setdefault(ENV, "auto").strip().lower() != "torch" and "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)


def _mode() -> str | int | None:
    """BNROBUST_THREADS: None (unset), "auto", "torch" or a thread count."""
    mode = os.environ.get(ENV, "").strip().lower()
    if not mode:
        return None
    if mode in ("auto", "torch"):
        return mode
    try:
        n = int(mode)
    except ValueError:
        n = 0
    if n < 1:
        from .errors import BnrobustError
        raise BnrobustError(f"{ENV} must be auto, torch or a number of threads >= 1, got {mode!r}")
    return n


def cores() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def registry() -> Path:
    return Path(tempfile.gettempdir()) / "bnrobust-procs"


def _start_time(pid: int) -> str:
    from .runner.claims import _start_time
    return _start_time(pid)


def _register() -> Path | None:
    """This process's file in the host's registry (created once per process, a forked child
    included; removed at exit)."""
    if _state["me"] is None or _state["pid"] != os.getpid():
        folder = registry()
        try:
            folder.mkdir(mode=0o1777, exist_ok=True)  # shared by every user, like /tmp itself
            if folder.stat().st_uid == os.getuid():
                folder.chmod(0o1777)
            me = folder / f"{os.getpid()}-{_start_time(os.getpid())}"
            me.touch()
        except OSError:
            return None  # no writable temp folder: behave as if alone
        if _state["pid"] is None:
            atexit.register(_unregister)
        _state["me"], _state["pid"] = me, os.getpid()
    return _state["me"]


def _unregister() -> None:
    me, _state["me"] = _state["me"], None
    if me is not None and _state["pid"] == os.getpid():  # never a parent's entry
        try:
            me.unlink()
        except OSError:
            pass


def live_processes() -> int:
    """How many registered bnrobust processes of this host are alive (at least 1: this one);
    entries of dead processes are removed where we may."""
    from .runner.claims import pid_alive
    me = _register()
    if me is None:
        return 1
    live = 0
    for path in registry().iterdir():
        pid, _, start = path.name.partition("-")
        try:
            alive = path == me or pid_alive(int(pid), start)
        except ValueError:
            continue
        if alive:
            live += 1
        else:
            try:
                path.unlink()
            except OSError:
                pass
    return max(live, 1)


def wanted_threads() -> int | None:
    """The thread count BNROBUST_THREADS asks for now, or None (leave torch as it is)."""
    mode = _mode()
    if mode is None or mode == "torch":
        return None
    if mode == "auto":
        share = max(1, cores() // live_processes())  # registers this process, so others count it
        return None if os.environ.get("OMP_NUM_THREADS") else share
    return None if os.environ.get("OMP_NUM_THREADS") else mode


def share_cpus(force: bool = False) -> int | None:
    """Set torch's thread count to this process's share of the cores (see the module's
    docstring); cheap, so callers may call it often (it looks again every RECHECK_S seconds).
    Returns the thread count set, or None where it left torch alone."""
    now = time.monotonic()
    if not force and now - _state["checked"] < RECHECK_S:
        return None
    _state["checked"] = now
    n = wanted_threads()
    if n is not None:
        import torch
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
    return n
