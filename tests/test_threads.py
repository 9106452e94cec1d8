"""Concurrent bnrobust processes share the cores (bnrobust/threads.py): the command's
environment, the host registry of live processes, and the thread count each one takes."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bnrobust import threads
from bnrobust.errors import BnrobustError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def share(tmp_path, monkeypatch):
    """A private registry, 4 cores, fresh module state; torch's thread count restored after."""
    n = torch.get_num_threads()
    monkeypatch.setattr(threads, "registry", lambda: tmp_path / "procs")
    monkeypatch.setattr(threads, "cores", lambda: 4)
    monkeypatch.setattr(threads, "_state", {"me": None, "pid": None, "checked": -float("inf")})
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    yield tmp_path / "procs"
    threads._unregister()
    torch.set_num_threads(n)


def _env_after_configure(**env) -> dict:
    """os.environ of a fresh process (torch not loaded) after configure_env()."""
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", threads.ENV)}
    code = ("import json, os, sys; from bnrobust import threads; threads.configure_env(); "
            "assert 'torch' not in sys.modules; print(json.dumps(dict(os.environ)))")
    out = subprocess.run([sys.executable, "-c", code], env={**base, "PYTHONPATH": str(REPO), **env},
                         capture_output=True, text=True, check=True).stdout
    import json
    return json.loads(out)


def test_command_bounds_idle_spinning_and_shares_cores():
    env = _env_after_configure()
    assert env["GOMP_SPINCOUNT"] == threads.SPIN_COUNT and env[threads.ENV] == "auto"
    assert "OMP_WAIT_POLICY" not in env
    env = _env_after_configure(OMP_WAIT_POLICY="ACTIVE", BNROBUST_THREADS="3")  # the user's choice stands
    assert env["OMP_WAIT_POLICY"] == "ACTIVE" and env[threads.ENV] == "3" and "GOMP_SPINCOUNT" not in env
    env = _env_after_configure(GOMP_SPINCOUNT="5")
    assert env["GOMP_SPINCOUNT"] == "5"
    env = _env_after_configure(BNROBUST_THREADS="torch")  # PyTorch's defaults, as before
    assert "OMP_WAIT_POLICY" not in env and "GOMP_SPINCOUNT" not in env


def test_configure_env_leaves_an_in_process_caller_alone(monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    threads.configure_env()  # torch is loaded here: nothing to gain, nothing changed
    assert threads.ENV not in os.environ and "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ


def test_live_processes_split_the_cores(share, monkeypatch):
    monkeypatch.setenv(threads.ENV, "auto")
    assert threads.share_cpus(force=True) == 4 and torch.get_num_threads() == 4  # alone
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (share / f"{sleeper.pid}-{threads._start_time(sleeper.pid)}").touch()  # a second live process
        (share / "999999999-1").touch()                                      # a dead one
        (share / f"{os.getpid()}-0").touch()                                 # our pid, another start time
        assert threads.share_cpus() is None  # throttled: looked less than RECHECK_S ago
        assert threads.share_cpus(force=True) == 2 and torch.get_num_threads() == 2
        assert sorted(p.name for p in share.iterdir()) == sorted(
            [threads._state["me"].name, f"{sleeper.pid}-{threads._start_time(sleeper.pid)}"])
    finally:
        sleeper.kill()
        sleeper.wait()
    assert threads.share_cpus(force=True) == 4  # the other one ended: all cores again
    threads._unregister()
    assert list(share.iterdir()) == []


def test_explicit_settings_are_obeyed(share, monkeypatch):
    monkeypatch.setenv(threads.ENV, "auto")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    assert threads.share_cpus(force=True) is None and torch.get_num_threads() == 1
    assert len(list(share.iterdir())) == 1  # still counted by the others
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setenv(threads.ENV, "3")
    assert threads.share_cpus(force=True) == 3 and torch.get_num_threads() == 3
    monkeypatch.setenv(threads.ENV, "torch")
    assert threads.share_cpus(force=True) is None and torch.get_num_threads() == 3
    for bad in ("many", "0"):
        monkeypatch.setenv(threads.ENV, bad)
        with pytest.raises(BnrobustError, match="BNROBUST_THREADS must be auto, torch or a number"):
            threads.share_cpus(force=True)


def test_a_bad_setting_is_one_line(monkeypatch, capsys):
    from bnrobust.cli import main
    monkeypatch.setenv(threads.ENV, "lots")
    assert main(["list"]) == 2
    assert capsys.readouterr().err.strip() == (
        "bnrobust: error: BNROBUST_THREADS must be auto, torch or a number of threads >= 1, got 'lots'")


def test_a_forked_child_registers_itself(share, monkeypatch):
    monkeypatch.setenv(threads.ENV, "auto")
    threads.share_cpus(force=True)
    parent = threads._state["me"]
    pid = os.fork()
    if pid == 0:  # the child: its own entry next to the parent's, then exit without cleanup handlers
        ok = threads.live_processes() == 2 and threads._state["me"] != parent
        threads._unregister()
        os._exit(0 if ok and parent.exists() else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [p.name for p in share.iterdir()] == [parent.name]


def test_library_use_is_left_alone(share, monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    assert threads.share_cpus(force=True) is None
    assert not share.exists()  # not registered either
