"""The run store and the sweep loop: what counts as finished, the manifest, file modes,
concurrent saves, claims, and OS faults as one-line errors."""
from __future__ import annotations

import errno
import os
import resource
import signal
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch

from bnrobust.cli import main
from bnrobust.errors import BnrobustError
from bnrobust.experiments import get_experiment
from bnrobust.runner import files, storage
from bnrobust.runner import execute as execute_mod
from bnrobust.runner import sweep as sweep_mod
from bnrobust.runner.storage import Run, check_run_dir, save_run
from bnrobust.runner.sweep import load_results, sweep

FAST = ["--seeds", "1", "--set", "train.epochs=1", "--set", "data.n_test=100"]
OVER = {"train.epochs": 1, "data.n_test": 100}


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def runs_dir(out: Path) -> Path:
    return out / "toy-tilting" / "runs"


def gd_run(out: Path) -> Path:
    return next(runs_dir(out).glob("gd-s0-*"))


def table(out: Path) -> list[str]:
    return [line for line in (out / "toy-tilting" / "quick" / "report.md").read_text().splitlines()
            if line.startswith("| ")]


@pytest.fixture
def finished(tmp_path, capsys) -> Path:
    """An --out with one finished toy-tilting sweep (GD and BNGD, one seed), and its report."""
    code, _, err = cli(capsys, "run", "toy-tilting", "--out", tmp_path, *FAST)
    assert code == 0, err
    return tmp_path


# 1. what counts as finished -------------------------------------------------------------------

def _truncate(p: Path, n: int = 100) -> None:
    p.write_bytes(p.read_bytes()[:n])


DAMAGE = {
    "truncated record": ("record.json", lambda d: _truncate(d / "record.json"), "record.json is truncated"),
    "null record": ("record.json", lambda d: (d / "record.json").write_text("null"), "record.json holds null"),
    "missing model": ("model.pt", lambda d: (d / "model.pt").unlink(), "model.pt is missing"),
    "truncated model": ("model.pt", lambda d: _truncate(d / "model.pt"), "model.pt is truncated or corrupt"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_run_is_reported_as_missing_then_rerun(finished, capsys, damage):
    name, hurt, why = DAMAGE[damage]
    run = gd_run(finished)
    hurt(run)
    assert not check_run_dir(run).finished
    # report: names the damaged file and the command, still writes the report, the run counted as missing
    code, out, err = cli(capsys, "report", "toy-tilting", "--out", finished)
    assert code == 0, err
    warning = next(line for line in err.splitlines() if "damaged" in line)
    assert str(run / name) in warning and why in warning
    assert f"bnrobust run toy-tilting --scale quick --out {finished} --seeds 1" in warning
    assert any(row.startswith("| GD | 0 (1 missing) |") for row in table(finished))
    # run: re-runs exactly that run, saying which and why
    code, _, err = cli(capsys, "run", "toy-tilting", "--out", finished, *FAST, "--no-report")
    assert code == 0, err
    assert f"re-running {run.name}: {why}" in err
    assert "2 runs: 1 reused, 1 to run" in err
    assert check_run_dir(run).finished


def test_truncated_manifest_report_is_one_line_error(finished, capsys):
    manifest = finished / "toy-tilting" / "quick" / "manifest.json"
    _truncate(manifest, 40)
    code, _, err = cli(capsys, "report", "toy-tilting", "--out", finished)
    assert code == 2 and err.count("\n") == 1, err
    assert str(manifest) in err and "truncated" in err and "bnrobust run toy-tilting --scale quick" in err
    # and a sweep rewrites it
    assert cli(capsys, "run", "toy-tilting", "--out", finished, *FAST, "--no-report")[0] == 0
    assert cli(capsys, "report", "toy-tilting", "--out", finished)[0] == 0


# 2. the manifest -------------------------------------------------------------------------------

def interrupt_after_first_run(monkeypatch) -> list:
    """Make the sweep's run_config compute one run, then raise KeyboardInterrupt (Ctrl-C).
    Runs train one by one here (no seed stacking; test_stacked.py covers stacks)."""
    monkeypatch.setenv("BNROBUST_STACK", "0")
    real, calls = execute_mod.run_config, []

    def interrupted(cfg, root=None, device="cpu", progress=False, checkpoint=None):
        if calls:
            raise KeyboardInterrupt
        calls.append(cfg)
        return real(cfg, root, device)
    monkeypatch.setattr(execute_mod, "run_config", interrupted)
    return calls


def test_failed_or_interrupted_command_keeps_previous_manifest(finished, capsys, monkeypatch):
    manifest = finished / "toy-tilting" / "quick" / "manifest.json"
    before, rows = manifest.read_text(), table(finished)
    # a bad option fails validation: nothing changes
    code, _, err = cli(capsys, "run", "toy-tilting", "--out", finished, *FAST, "--set", "eval.batch_size=-1")
    assert code == 2 and err.count("\n") == 1
    # a sweep of other settings interrupted after its first run: the manifest still names the old sweep
    calls = interrupt_after_first_run(monkeypatch)
    code, _, err = cli(capsys, "run", "toy-tilting", "--out", finished, "--seeds", "2", "--set", "train.epochs=2")
    assert code == 130 and len(calls) == 1
    assert manifest.read_text() == before
    assert cli(capsys, "report", "toy-tilting", "--out", finished)[0] == 0
    assert table(finished) == rows
    assert not list(runs_dir(finished).glob(".claim-*")) and not list(runs_dir(finished).glob(".tmp-*"))


def test_first_sweep_interrupted_is_reported_and_resumed(tmp_path, capsys, monkeypatch):
    """With no manifest yet, it is written once validation has passed: a killed first sweep
    reports its finished runs, and the same command resumes it."""
    real = execute_mod.run_config
    interrupt_after_first_run(monkeypatch)
    assert cli(capsys, "run", "toy-tilting", "--out", tmp_path, *FAST)[0] == 130
    code, _, err = cli(capsys, "report", "toy-tilting", "--out", tmp_path)
    assert code == 0 and "1 of 2 runs have not run yet" in err
    assert sum("(1 missing)" in row for row in table(tmp_path)) == 1
    monkeypatch.setattr(execute_mod, "run_config", real)
    code, _, err = cli(capsys, "run", "toy-tilting", "--out", tmp_path, *FAST)
    assert code == 0 and "2 runs: 1 reused, 1 to run" in err
    assert not any("missing" in row for row in table(tmp_path))


# 3. file modes ---------------------------------------------------------------------------------

def test_files_and_folders_get_the_umask(tmp_path, capsys):
    old = os.umask(0o027)
    try:
        out = tmp_path / "out"
        assert cli(capsys, "run", "toy-tilting", "--out", out, *FAST)[0] == 0
    finally:
        os.umask(old)
    paths = list(out.rglob("*"))
    assert any(p.suffix == ".png" for p in paths) and any(p.name == "model.pt" for p in paths)
    for p in paths:
        want = 0o750 if p.is_dir() else 0o640
        assert stat.S_IMODE(p.stat().st_mode) == want, p


# 4. concurrent saves ---------------------------------------------------------------------------

@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "rename-aside"])
def test_concurrent_saves_keep_one_complete_copy(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(storage, "_exchange", lambda a, b: False)
    run = Run("v", 0, {"seed": 0}, tmp_path / "runs" / "v-s0-x")
    model = torch.nn.Linear(3, 2)
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(15):
                save_run(run, {"status": "ok", "metrics": {"w": k, "i": i}}, model, force=(i + k) % 2 == 0)
                # with an atomic exchange the folder never disappears, even while others replace it
                assert not exchange or check_run_dir(run.dir).finished
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert time.time() - t0 < 5
    assert check_run_dir(run.dir).finished
    assert [p.name for p in run.dir.parent.iterdir()] == [run.dir.name]  # no temporary folders left


# 5. claims -------------------------------------------------------------------------------------

def test_two_sweeps_into_one_out_compute_each_run_once(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_mod, "POLL_S", 0.05)
    monkeypatch.setenv("BNROBUST_STACK", "0")  # run by run (test_stacked.py: the same with stacks)
    real, computed, lock = execute_mod.run_config, [], threading.Lock()

    def slow(cfg, root=None, device="cpu", progress=False, checkpoint=None):
        with lock:
            computed.append(cfg["seed"])
        time.sleep(0.3)
        return real(cfg, root, device)
    monkeypatch.setattr(execute_mod, "run_config", slow)
    exp, results = get_experiment("toy-tilting"), []

    def one() -> None:
        results.append(sweep(exp, tmp_path, "quick", 2, OVER, progress=False))
    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(computed) == 4 and len(results) == 2
    assert all(r.ok for res in results for r in res.runs)  # each waited for the other's runs
    assert not list(runs_dir(tmp_path).glob(".claim-*"))


def _claim(run_dir: Path, pid: int) -> Path:
    path = run_dir.parent / f".claim-{run_dir.name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{socket.gethostname()} {pid}\n")
    return path


def test_claims_of_live_processes_are_waited_for_and_of_dead_ones_taken_over(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sweep_mod, "POLL_S", 0.05)
    exp = get_experiment("toy-tilting")
    gd, bngd = (r.dir for r in sweep_mod.plan(exp, tmp_path, "quick", 1, OVER))
    dead = subprocess.Popen(["true"])
    dead.wait()
    _claim(gd, dead.pid)
    live = subprocess.Popen(["sleep", "30"])
    _claim(bngd, live.pid)
    res: list = []
    t = threading.Thread(target=lambda: res.append(sweep(exp, tmp_path, "quick", 1, OVER, progress=False)))
    t.start()
    try:
        deadline = time.time() + 20
        while not (gd / "record.json").exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert (gd / "record.json").exists() and not bngd.exists()  # waiting for the live claimant
    finally:
        live.kill()
        live.wait()
    t.join()
    assert all(r.ok for r in res[0].runs)
    assert f"pid {live.pid}" in capsys.readouterr().err
    assert not list(runs_dir(tmp_path).glob(".claim-*"))


# 6. OS faults are one line ---------------------------------------------------------------------

def test_run_folder_replaced_by_a_file(finished, capsys):
    run = gd_run(finished)
    for f in run.iterdir():
        f.unlink()
    run.rmdir()
    run.write_text("not a folder")
    code, _, err = cli(capsys, "run", "toy-tilting", "--out", finished, *FAST)
    assert code == 2 and err.count("\n") == 1, err
    assert str(run) in err and "is a file" in err
    code, _, err = cli(capsys, "report", "toy-tilting", "--out", finished)  # the report counts it as missing
    assert code == 0 and str(run) in err


def test_experiment_folder_not_writable(tmp_path, capsys, monkeypatch):
    exp_dir = tmp_path / "toy-tilting"
    exp_dir.mkdir()
    exp_dir.chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway: make the probe fail as it would for a user
        real = files._probe

        def probe(folder: Path) -> None:
            if folder == exp_dir:
                raise PermissionError(errno.EACCES, "Permission denied", str(folder / ".write-test-x"))
            real(folder)
        monkeypatch.setattr(files, "_probe", probe)
    try:
        code, _, err = cli(capsys, "run", "toy-tilting", "--out", tmp_path, *FAST)
    finally:
        exp_dir.chmod(0o755)
    assert code == 2 and err.count("\n") == 1, err
    assert f"cannot write to experiment folder {exp_dir}: Permission denied" in err


def test_disk_full_while_saving(tmp_path, capsys, monkeypatch):
    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", full)
    code, _, err = cli(capsys, "run", "toy-tilting", "--out", tmp_path, *FAST)
    assert code == 2 and err.strip().splitlines()[-1].startswith("bnrobust: error: cannot save run ")
    assert "No space left on device" in err and err.count("bnrobust: error") == 1
    assert list(runs_dir(tmp_path).iterdir()) == []  # nothing half-written, no claim left


def test_file_size_limit_while_saving(tmp_path):
    """A real write error (RLIMIT_FSIZE, EFBIG) in the middle of a run's files."""
    run = Run("v", 0, {"seed": 0}, tmp_path / "runs" / "v-s0-x")
    model = torch.nn.Linear(50, 10)  # model.pt ~ 3 kB, over the limit; config.json is not
    old_sig = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))
    try:
        with pytest.raises(BnrobustError, match=r"cannot save run .*v-s0-x: File too large"):
            save_run(run, {"status": "ok", "metrics": {}}, model)
        with pytest.raises(BnrobustError, match=r"cannot write .*big.txt: File too large"):
            files.write_text_atomic(tmp_path / "big.txt", "x" * 2000)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_sig)
    assert not run.dir.exists() and list(run.dir.parent.iterdir()) == []
    assert [p.name for p in tmp_path.iterdir()] == ["runs"]


# 7. the plan line ------------------------------------------------------------------------------

def test_run_prints_reused_and_to_run(tmp_path, capsys):
    def run(*extra: str) -> str:
        code, _, err = cli(capsys, "run", "toy-tilting", "--out", tmp_path, *FAST, "--no-report", *extra)
        assert code == 0, err
        return err
    assert "toy-tilting [quick]: 2 runs: 0 reused, 2 to run" in run()
    assert "toy-tilting [quick]: 4 runs: 2 reused, 2 to run" in run("--seeds", "2", "--shard", "1/2")
    # shard 0/2 of 6 runs: GD s0 (done), GD s2, BNGD s1 (done); the other shard still has BNGD s2
    assert "toy-tilting [quick]: 6 runs: 4 reused, 1 to run, 1 left to other shards" in run(
        "--seeds", "3", "--shard", "0/2")
    res = load_results(get_experiment("toy-tilting"), tmp_path, "quick")
    assert len(res.runs) == 6 and sum(r.ok for r in res.runs) == 5
    assert "toy-tilting [quick]: 2 runs: 0 reused, 2 to run" in run("--force")


def test_run_only_some_variants(tmp_path, capsys):
    """--variant runs those rows alone; the others stay to be run, and the manifest still plans all."""
    def run(*extra: str) -> str:
        code, _, err = cli(capsys, "run", "toy-tilting", "--out", tmp_path, *FAST, "--no-report", *extra)
        assert code == 0, err
        return err
    assert "toy-tilting [quick]: 4 runs: 0 reused, 2 to run, 2 left to other variants" in run(
        "--seeds", "2", "--variant", "BNGD")
    res = load_results(get_experiment("toy-tilting"), tmp_path, "quick")
    assert len(res.runs) == 4 and sorted(r.variant for r in res.runs if r.ok) == ["BNGD", "BNGD"]
    assert "toy-tilting [quick]: 4 runs: 2 reused, 2 to run" in run("--seeds", "2", "--variant", "GD",
                                                                     "--variant", "BNGD")
