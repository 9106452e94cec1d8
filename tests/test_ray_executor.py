"""The Ray executor (`--executor ray`): the same table as in-process, generic units, errors not
retried, a killed worker or driver losing and duplicating nothing; its CLI options and errors,
and the checkpoint transport it relies on. The Ray tests share one local Ray (2 CPUs) and skip
when Ray (`pip install 'bnrobust[ray]'`) is not installed."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bnrobust.checkpoints import FileCheckpoint, checkpoint_transport
from bnrobust.cli import main
from bnrobust.errors import BnrobustError
from bnrobust.experiments import get_experiment
from bnrobust.runner import sweep as sweep_mod
from bnrobust.runner.executors import EXECUTORS
from bnrobust.runner.ray_executor import RayExecutor, Weights, _portable
from bnrobust.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--seeds", "2", "--set", "train.epochs=300", "--set", "data.n_test=200"]
# long enough to be killed mid-run; the workers checkpoint every CKPT_S seconds
LONG = ["--seeds", "1", "--set", "train.epochs=2000", "--set", "data.n_test=200"]
LONG_OVER = {"train.epochs": 2000, "data.n_test": 200}
CKPT_S = "0.2"


def cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def table(out: Path) -> list[str]:
    return [line for line in (out / "toy-tilting" / "quick" / "report.md").read_text().splitlines()
            if line.startswith("| ")]


def leftovers(out: Path) -> list[str]:
    """Claims, checkpoints and temporary folders left in the runs folder."""
    return sorted(p.name for p in (out / "toy-tilting" / "runs").iterdir() if p.name.startswith("."))


# without Ray ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--gpus-per-run", "1"], "--gpus-per-run is an option of --executor ray (this is --executor local)"),
    (["--address", "auto", "--cpus-per-run", "2"], "--address, --cpus-per-run are options of --executor ray"),
    (["--executor", "ray", "--gpus-per-run", "-1"], "--gpus-per-run must be >= 0, got -1"),
    (["--executor", "ray", "--cpus-per-run", "0"], "--cpus-per-run must be > 0, got 0"),
    (["--executor", "ray", "--device", "cuda"], "--device cuda with --executor ray needs --gpus-per-run"),
    (["--executor", "ray", "--device", "cuda:1", "--gpus-per-run", "1"], "use auto, cpu or cuda"),
    (["--executor", "ray", "--address", "ray://head:10001"], "Ray Client (ray://) is not supported"),
    (["--executor", "ray", "--address", "127.0.0.1:1"], "cannot reach the Ray cluster at 127.0.0.1:1"),
])
def test_ray_options_are_checked_in_one_line(tmp_path, capsys, argv, message):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'bnrobust[ray]')")
    code, err = cli(capsys, "run", "toy-tilting", "--out", tmp_path, *argv)
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "toy-tilting").exists()


def test_without_ray_the_executor_is_one_line_naming_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    code, err = cli(capsys, "run", "toy-tilting", "--out", tmp_path, "--executor", "ray")
    assert code == 2 and err.count("\n") == 1, err
    assert "--executor ray needs Ray" in err and "pip install 'bnrobust[ray]'" in err


def test_ray_device_follows_the_gpus_a_run_reserves():
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'bnrobust[ray]')")
    assert RayExecutor().device("auto") == torch.device("cpu")
    assert RayExecutor(gpus_per_run=0.25).device(None) == torch.device("cuda")  # not checked on the driver
    assert EXECUTORS.build({"name": "ray", "cpus_per_run": 2}).cpus == 2


class MemoryCheckpoint:
    def __init__(self, store: dict, path: Path):
        self.store, self.key, self.name = store, str(path), path.name

    def read(self):
        return self.store.get(self.key)

    def write(self, data):
        self.store[self.key] = bytes(data)


def test_checkpoints_go_through_the_transport(tmp_path, monkeypatch):
    """Inside checkpoint_transport, train() saves and resumes through it (no file is written),
    ending with the weights of an uninterrupted run."""
    monkeypatch.setenv("BNROBUST_CHECKPOINT_SECONDS", "0")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=g)
    from bnrobust.data import Dataset
    ds = Dataset("t", x, (x[:, 0] > 0).long(), x[:50], (x[:50, 0] > 0).long(), 2, None)
    cfg = TrainConfig(lr=0.1, epochs=4, batch_size=32, momentum=0.9)

    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))

    ref = model()
    train(ref, ds, cfg, seed=1)
    store: dict = {}
    path = tmp_path / ".ckpt-x.pt"

    def die_at_3(epoch, m):
        if epoch == 3:
            raise KeyboardInterrupt
    with checkpoint_transport(lambda p: MemoryCheckpoint(store, p)):
        with pytest.raises(KeyboardInterrupt):
            train(model(), ds, cfg, seed=1, checkpoint=path, on_epoch=die_at_3)
        assert list(store) == [str(path)] and not path.exists()
        resumed = model()
        train(resumed, ds, cfg, seed=1, checkpoint=path)
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), resumed.state_dict().values()))
    FileCheckpoint(path).write(b"x")  # outside the block: the file again
    assert path.read_bytes() == b"x"


def test_results_travel_as_state_dicts():
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'bnrobust[ray]')")
    lin = torch.nn.Linear(3, 2)
    rec, w = _portable(({"status": "ok"}, lin))
    assert rec == {"status": "ok"} and isinstance(w, Weights)
    assert all(torch.equal(a, b) for a, b in zip(w.state_dict().values(), lin.state_dict().values()))
    assert isinstance(_portable([(1, lin)])[0][1], Weights)


# on a local Ray -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_session():
    """One local Ray with 2 CPUs for this module; its workers checkpoint every CKPT_S seconds."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'bnrobust[ray]')")
    from ray import cloudpickle
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    old = os.environ.get("BNROBUST_CHECKPOINT_SECONDS")
    os.environ["BNROBUST_CHECKPOINT_SECONDS"] = CKPT_S  # the workers inherit the environment Ray starts with
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
    finally:
        if old is None:
            del os.environ["BNROBUST_CHECKPOINT_SECONDS"]
        else:
            os.environ["BNROBUST_CHECKPOINT_SECONDS"] = old
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory) -> list[str]:
    """The table of the LONG sweep computed in-process, uninterrupted."""
    out = tmp_path_factory.mktemp("reference")
    assert main(["run", "toy-tilting", "--out", str(out), *LONG]) == 0
    return table(out)


def test_same_table_as_in_process(ray_session, tmp_path, capsys):
    assert cli(capsys, "run", "toy-tilting", "--out", tmp_path / "local", *SMALL)[0] == 0
    code, err = cli(capsys, "run", "toy-tilting", "--out", tmp_path / "ray", *SMALL, "--executor", "ray")
    assert code == 0, err
    assert "4 runs: 0 reused, 4 to run" in err and "2 run(s) at a time (1 CPU each)" in err
    assert table(tmp_path / "ray") == table(tmp_path / "local")
    assert leftovers(tmp_path / "ray") == []
    code, err = cli(capsys, "run", "toy-tilting", "--out", tmp_path / "ray", *SMALL, "--executor", "ray", "--no-report")
    assert code == 0 and "4 reused, 0 to run" in err and "ray:" not in err  # nothing to run: no task
    # a run that fails to train (GD's loss overflows at this rate) is recorded as in-process, not retried
    statuses = {}
    for executor in ("local", "ray"):
        out = tmp_path / f"nan-{executor}"
        code, err = cli(capsys, "run", "toy-tilting", "--out", out, "--seeds", "1", "--set", "train.lr=3e38",
                        "--set", "train.epochs=3", "--executor", executor, "--no-report")
        assert code == 0, err
        runs = (out / "toy-tilting" / "runs").glob("*/record.json")
        records = {p.parent.name: json.loads(p.read_text()) for p in runs}
        statuses[executor] = sorted((name, r["status"], r["reason"]) for name, r in records.items())
    assert statuses["ray"] == statuses["local"] and sorted(s for _, s, _ in statuses["ray"]) == ["failed", "ok"]


def _square(u: int):
    return {"u": u * u}, torch.nn.Linear(2, 2)


@pytest.fixture(autouse=True)
def _runs_one_by_one(monkeypatch):
    """These tests kill workers and drivers between runs: each run is its own unit (no seed stacking,
    which tests/test_stacked.py covers, with its own interruption tests)."""
    monkeypatch.setenv("BNROBUST_STACK", "0")


def _fail(marker: Path, u: int):
    with open(marker, "a") as f:
        f.write(f"{u}\n")
    raise BnrobustError(f"unit {u} is wrong")


def test_units_are_generic_and_errors_are_not_retried(ray_session, tmp_path):
    import functools
    out = sorted((u, rec["u"], type(w)) for u, (rec, w) in RayExecutor().map(iter(range(5)), _square))
    assert out == [(u, u * u, Weights) for u in range(5)]
    marker = tmp_path / "attempts"
    with pytest.raises(BnrobustError, match="unit 0 is wrong"):
        list(RayExecutor().map(iter([0]), functools.partial(_fail, marker)))
    assert marker.read_text() == "0\n"  # one attempt: an exception in a run is not retried


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _ours(pid: int) -> bool:
    """Whether `pid` descends from this process (a worker of the Ray this test process started)."""
    while pid > 1:
        pid = _parent(pid)
        if pid == os.getpid():
            return True
    return False


def _ray_workers_running() -> list[int]:
    """The pids of our Ray workers that are computing a run (Ray names them by the task)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().startswith(b"ray::bnrobust-run"):
                pids.append(int(proc.name))
        except OSError:
            pass
    return [pid for pid in pids if _ours(pid)]


def _running_all_checkpointed(runs: Path) -> bool:
    """Some run is being computed, and each one that is has a checkpoint."""
    running = [p.name[len(".claim-"):] for p in runs.glob(".claim-*")]
    running = [name for name in running if not (runs / name / "record.json").exists()]
    return bool(running) and all((runs / f".ckpt-{name}.pt").exists() for name in running)


def test_killed_worker_loses_and_duplicates_nothing(ray_session, long_reference, tmp_path, monkeypatch, capfd):
    import threading
    saved: list[str] = []
    real_save = sweep_mod.save_run
    def counted_save(run, *args, **kwargs):
        saved.append(run.dir.name)
        return real_save(run, *args, **kwargs)
    monkeypatch.setattr(sweep_mod, "save_run", counted_save)
    done: list = []
    t = threading.Thread(target=lambda: done.append(sweep_mod.sweep(
        get_experiment("toy-tilting"), tmp_path, "quick", 1, LONG_OVER, progress=False, executor="ray")))
    t.start()
    deadline = time.time() + 120
    while time.time() < deadline and not _running_all_checkpointed(tmp_path / "toy-tilting" / "runs"):
        time.sleep(0.02)
    victims = _ray_workers_running()
    assert victims, "the kill should land mid-run"
    os.kill(victims[0], signal.SIGKILL)
    t.join(timeout=240)
    assert done and all(r.ok for r in done[0].runs)
    assert sorted(saved) == sorted(r.dir.name for r in done[0].runs)  # each run stored once
    assert leftovers(tmp_path) == []
    from bnrobust.report import write_report
    write_report(done[0], tmp_path / "toy-tilting" / "quick")
    assert table(tmp_path) == long_reference
    err, deadline = "", time.time() + 10  # the worker's messages reach us through Ray's log monitor
    while "resuming" not in err and time.time() < deadline:
        err += capfd.readouterr().err
        time.sleep(0.2)
    assert "resuming .ckpt-" in err  # the retried run continued from its checkpoint


def test_killed_driver_resumes(ray_session, long_reference, tmp_path, capfd):
    """SIGKILL a `bnrobust run --executor ray` (a driver on our Ray cluster) once one run is stored and
    the other is mid-run; the same command skips the finished run, resumes the other from the
    checkpoint and stale claim the driver left, and gives the uninterrupted table."""
    address = ray_session.get_runtime_context().gcs_address
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    driver = subprocess.Popen([sys.executable, "-m", "bnrobust", "run", "toy-tilting", "--out", str(tmp_path), *LONG,
                               "--executor", "ray", "--address", address], env=env, cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    runs = tmp_path / "toy-tilting" / "runs"
    stored = lambda: [p for p in runs.glob("*/record.json") if not p.parent.name.startswith(".")]  # noqa: E731
    try:  # GD is faster than BNGD: it is stored while BNGD trains
        deadline = time.time() + 180
        while time.time() < deadline and not (stored() and list(runs.glob(".ckpt-bngd-*.pt"))):
            time.sleep(0.02)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    assert len(stored()) == 1 and list(runs.glob(".ckpt-bngd-*.pt")), "the kill should land with BNGD mid-run"
    assert any(name.startswith(".claim-") for name in leftovers(tmp_path))
    capfd.readouterr()
    code, out = cli(capfd, "run", "toy-tilting", "--out", tmp_path, *LONG, "--executor", "ray")
    assert code == 0, out
    assert "2 runs: 1 reused, 1 to run" in out
    assert table(tmp_path) == long_reference
    assert leftovers(tmp_path) == []
    deadline = time.time() + 10
    while "resuming" not in out and time.time() < deadline:
        out += capfd.readouterr().err
        time.sleep(0.2)
    assert "resuming .ckpt-" in out
