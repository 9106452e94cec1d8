"""The engine (hashing, storage, resume) and the CLI's behaviour on good and bad input."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bnrobust.cli import main
from bnrobust.config import apply_overrides, config_hash
from bnrobust.runner.sweep import load_results, sweep
from bnrobust.experiments import EXPERIMENTS, get_experiment
from bnrobust.eval import mean_sem, tilt_angle

import torch

REPO = Path(__file__).resolve().parents[1]
TOY_FAST = ["--set", "train.epochs=50", "--set", "data.n_test=500"]


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_metrics_helpers():
    assert tilt_angle(torch.tensor([1.0, 0]), torch.tensor([0, 2.0])) == pytest.approx(90)
    assert tilt_angle(torch.tensor([1.0, 1]), torch.tensor([-3.0, -3])) == pytest.approx(0, abs=1e-6)
    assert tilt_angle(torch.tensor([1.0, 0]), torch.tensor([1.0, 1])) == pytest.approx(45)
    m, s, n = mean_sem([1.0, 2.0, 3.0, None])
    assert (m, n) == (2.0, 3) and s == pytest.approx(1 / 3 ** 0.5)


def test_config_hash_and_overrides():
    base = {"train": {"lr": 0.1}, "seed": 0}
    cfg = apply_overrides(base, {"train.lr": 0.2, "model.bn": "fixed"})
    assert cfg == {"train": {"lr": 0.2}, "model": {"bn": "fixed"}, "seed": 0} and base["train"]["lr"] == 0.1
    assert config_hash(cfg) == config_hash(json.loads(json.dumps(cfg))) != config_hash(base)


def test_every_registered_experiment_has_valid_configs():
    assert {"toy-tilting", "mnist37-linear", "bn-eps-sweep-mnist", "bn-tracking"} <= set(EXPERIMENTS)
    for exp in (e for _, e in EXPERIMENTS.items()):
        for scale in ("quick", "paper"):
            assert exp.configs(scale)  # validates every config


def test_sweep_skips_finished_runs_and_force_reruns(tmp_path):
    exp = get_experiment("toy-tilting")
    over = {"train.epochs": 20, "data.n_test": 200}
    res = sweep(exp, tmp_path, "quick", 2, over, progress=False)
    assert len(res.runs) == 4 and all(r.ok for r in res.runs)
    stamp = {r.dir: (r.dir / "record.json").stat().st_mtime_ns for r in res.runs}
    sweep(exp, tmp_path, "quick", 2, over, progress=False)
    assert all((d / "record.json").stat().st_mtime_ns == t for d, t in stamp.items())
    sweep(exp, tmp_path, "quick", 2, over, force=True, progress=False)
    assert all((d / "record.json").stat().st_mtime_ns != t for d, t in stamp.items())
    assert sorted(p.name for p in (tmp_path / "toy-tilting" / "runs").iterdir()) == sorted(d.name for d in stamp)
    run = res.runs[0]
    assert (run.dir / "model.pt").exists() and json.loads((run.dir / "config.json").read_text())["seed"] == run.seed


def test_failed_training_is_recorded_not_averaged(tmp_path, capsys):
    code, out, err = run_cli(capsys, "run", "toy-tilting", "--out", tmp_path, "--seeds", 1,
                             "--set", "train.lr=1e30", "--set", "train.epochs=5", "--set", "data.n_test=100",
                             "--set", "data.mean0=[-1.0e+20, 0]")
    assert code == 0, err
    report = (tmp_path / "toy-tilting" / "quick" / "report.md").read_text()
    assert "failed to train" in report and "non-finite training loss" in report
    runs = {p.parent.name.split("-s")[0]: json.loads(p.read_text())
            for p in (tmp_path / "toy-tilting" / "runs").glob("*/record.json")}
    # plain GD diverges on inputs of 1e20; BN normalizes them away and trains
    assert runs["gd"]["status"] == "failed" and runs["gd"]["metrics"] == {}
    assert runs["bngd"]["status"] == "ok" and "theta" in runs["bngd"]["metrics"]
    assert "| GD | 0 (1 failed to train) |" in report


def test_cli_list(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0 and "mnist37-linear" in out and "Table 1" in out


@pytest.mark.parametrize("argv, match", [
    (["run", "no-such-experiment"], "unknown experiment"),
    (["run", "toy-tilting", "--seeds", "0"], "--seeds"),
    (["run", "toy-tilting", "--seeds", "two"], "invalid int"),
    (["run", "toy-tilting", "--scale", "huge"], "invalid choice"),
    (["run", "toy-tilting", "--set", "train.lr=-1"], "train.lr"),
    (["run", "toy-tilting", "--set", "train.lr"], "KEY=VALUE"),
    (["run", "toy-tilting", "--set", "model.bn=sometimes"], "model.bn: model 'linear' has no option 'bn'"),
    (["run", "toy-tilting", "--set", "model.init=sometimes"], "model.init: Input should be 'default' or 'zeros'"),
    (["run", "toy-tilting", "--set", "model.norm.bogus=fixed"], "model.norm.bogus: norm 'none' has no option"),
    (["run", "toy-tilting", "--set", "model.width=3"], "has no option 'width'"),
    (["run", "toy-tilting", "--shard", "3/2"], "--shard"),
    (["run", "toy-tilting", "--variant", "bngd"], "--variant: toy-tilting has no variant 'bngd' at quick scale"),
    (["run", "toy-tilting", "toy-tilting", "--variant", "GD"], "--variant needs exactly one experiment"),
    (["run", "toy-tilting", "--device", "tpu9"], "device"),
    (["report", "toy-tilting"], "no quick results"),
])
def test_bad_input_is_one_line(capsys, tmp_path, argv, match):
    code, out, err = run_cli(capsys, *argv, "--out", tmp_path / "out")
    assert code == 2 and match in err and err.count("\n") == 1, err
    assert not list((tmp_path / "out").rglob("record.json"))
    if "report" not in argv and "device" not in " ".join(argv):
        assert not (tmp_path / "out").exists()  # rejected before anything was written


def test_unwritable_output_dir(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, _, err = run_cli(capsys, "run", "toy-tilting", "--out", blocker / "sub", *TOY_FAST)
    assert code == 2 and "cannot write to output directory" in err and err.count("\n") == 1


@pytest.mark.parametrize("corrupt", [False, True])
def test_missing_or_corrupt_mnist(capsys, tmp_path, corrupt):
    data = tmp_path / "data"
    if corrupt:
        (data / "MNIST" / "raw").mkdir(parents=True)
        for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                     "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
            (data / "MNIST" / "raw" / name).write_bytes(b"\x1f\x8b broken")
    code, _, err = run_cli(capsys, "run", "mnist37-linear", "--data-dir", data, "--out", tmp_path / "out")
    assert code == 2 and err.count("\n") == 1
    assert ("corrupt" if corrupt else "missing") in err
    assert not list((tmp_path / "out").rglob("record.json")) and not list((tmp_path / "out").rglob("manifest.json"))


def _table(out: Path) -> str:
    text = (out / "toy-tilting" / "paper" / "report.md").read_text()
    return "\n".join(line for line in text.splitlines() if line.startswith("| "))


def test_killed_sweep_resumes_with_nothing_lost_or_duplicated(tmp_path):
    """SIGKILL `bnrobust run` mid-sweep, run it again: same runs, same table as an uninterrupted sweep.
    Runs one at a time (BNROBUST_STACK=0): stacked, all 8 linear runs are one unit whose records land
    together, so no kill falls between them (test_stacked kills and resumes a stack)."""
    args = [sys.executable, "-m", "bnrobust", "run", "toy-tilting", "--scale", "paper", "--seeds", "4",
            "--set", "train.epochs=1500", "--set", "data.n_test=500"]
    env = dict(os.environ, PYTHONPATH=str(REPO), BNROBUST_STACK="0")
    killed = tmp_path / "killed"
    proc = subprocess.Popen(args + ["--out", str(killed)], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    runs_dir = killed / "toy-tilting" / "runs"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(runs_dir.glob("*/record.json"))) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = list(runs_dir.glob("*/record.json"))
    assert 2 <= len(finished) < 8, "the kill should land mid-sweep"
    for d in runs_dir.iterdir():  # every visible run directory is complete
        if not d.name.startswith("."):
            assert (d / "record.json").exists() and (d / "model.pt").exists()
    subprocess.run(args + ["--out", str(killed)], env=env, cwd=REPO, check=True, capture_output=True)
    assert len([d for d in runs_dir.iterdir()]) == 8  # no duplicates, no leftover temporary directories
    clean = tmp_path / "clean"
    subprocess.run(args + ["--out", str(clean)], env=env, cwd=REPO, check=True, capture_output=True)
    assert _table(killed) == _table(clean)


def test_report_regenerates_from_stored_runs(tmp_path, capsys):
    code, _, err = run_cli(capsys, "run", "toy-tilting", "--out", tmp_path, "--seeds", 2, *TOY_FAST)
    assert code == 0, err
    report = tmp_path / "toy-tilting" / "quick" / "report.md"
    first = report.read_text()
    report.unlink()
    code, out, err = run_cli(capsys, "report", "toy-tilting", "--out", tmp_path)
    assert code == 0 and report.exists()
    strip = lambda t: [l for l in t.splitlines() if not l.startswith("Experiment `")]  # noqa: E731,E741
    assert strip(report.read_text()) == strip(first)
    res = load_results(get_experiment("toy-tilting"), tmp_path, "quick")
    assert len(res.runs) == 4 and all(r.ok for r in res.runs)
    assert (tmp_path / "toy-tilting" / "quick" / "fig1_toy_tilting.png").stat().st_size > 10000


def test_no_scale_override_is_silently_undone_by_a_variant():
    """Variant overrides are applied after scale overrides; a variant that sets a key the scale
    also sets would silently undo the scale (as the PGD step count of mnist-c once did)."""
    from bnrobust.experiments import EXPERIMENTS
    deliberate = {("bn-tracking", "quick", "(e) nearest centroid", "train.epochs")}  # 0 epochs: nothing to train
    clashes = {(e.id, scale, name, key) for _, e in EXPERIMENTS.items() for scale, over in e.scales.items()
               for name in e.variants for key, value in e.variant_overrides(name, scale).items()
               if key in over and value != over[key]}
    assert clashes == deliberate
    cfg = {v: c for v, _, c in EXPERIMENTS["mnist-c"].configs("quick")}
    assert cfg["PGD"]["train"]["adversarial"]["steps"] == 5 and cfg["PGD BN"]["train"]["adversarial"]["eps"] == 0.3
    cfg = {v: c for v, _, c in EXPERIMENTS["mnist-c"].configs("paper")}
    assert cfg["PGD"]["train"]["adversarial"]["steps"] == 20
    assert cfg["PGD"]["train"]["adversarial"]["step_size"] == 0.03 and cfg["PGD"]["train"]["adversarial"]["random_start"]


@pytest.mark.parametrize("command", ["bnrobust.experiments.residual:LONGER_CPU_RUN",
                                     "bnrobust.experiments.cifar10c:LONGER_WRN_RUN"])
def test_commands_in_report_notes_still_parse(command):
    """The longer CPU runs that reports quote are valid commands: options, --set keys and variant names."""
    import importlib
    import shlex
    from bnrobust.cli.main import _parse_set, build_parser
    from bnrobust.runner.sweep import check_variants
    module, name = command.split(":")
    argv = shlex.split(getattr(importlib.import_module(module), name))
    assert argv[0] == "bnrobust"
    args = build_parser().parse_args(argv[1:])
    exp = get_experiment(args.experiment[0])
    exp.configs(args.scale, args.seeds, _parse_set(args.set))
    check_variants(exp, args.scale, args.variant)
    assert len(args.variant) == 2
