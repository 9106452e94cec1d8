"""The VGG-on-CIFAR-10 experiments (section D) end to end on a tiny slice of the real CIFAR-10,
their attacks against Foolbox on a trained VGG8, the gradient-masking checks, and a run killed
mid-training that resumes to the same table."""
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bnrobust import attacks
from bnrobust.cli import main
from bnrobust.data import load_dataset
from bnrobust.eval import accuracy_and_loss, masking_problems
from bnrobust.models import build_model
from bnrobust.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
TINY = ["--set", "data.n_train=600", "--set", "data.n_val=200", "--set", "data.n_test=200",
        "--set", "train.epochs=1", "--set", "model.width_factor=0.25"]
EXTRA = {"cifar10-small-lr": [], "cifar10-vgg-depth": [], "bn-eps-sweep-cifar": [],
         "lr-schedule-curves": ["--set", "data.n_val=0", "--set", "eval.curve_every=1"]}
FIGURES = {"cifar10-small-lr": "val_curves.png", "cifar10-vgg-depth": "val_curves.png",
           "bn-eps-sweep-cifar": "fig3b_eps_sweep_cifar.png", "lr-schedule-curves": "fig16_17_curves.png"}


@pytest.mark.parametrize("exp_id", list(EXTRA))
def test_cifar_experiment_runs_end_to_end(exp_id, cifar_root, tmp_path, capsys):
    code = main(["run", exp_id, "--data-dir", str(cifar_root), "--out", str(tmp_path), *TINY, *EXTRA[exp_id]])
    err = capsys.readouterr().err
    assert code == 0, err
    report = (tmp_path / exp_id / "quick" / "report.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| ")]
    assert len({line.count(" | ") for line in rows}) == 1  # every table row has the same number of cells
    assert "paper, reference" in report or exp_id == "bn-eps-sweep-cifar"
    assert (tmp_path / exp_id / "quick" / FIGURES[exp_id]).stat().st_size > 5000
    if exp_id == "cifar10-small-lr":
        assert "CIFAR-10.1 v6 was not found" in report


@pytest.fixture(scope="module")
def vgg8(cifar_root):
    ds = load_dataset({"name": "cifar10", "n_train": 1000, "n_val": 0, "n_test": 100}, seed=0, root=cifar_root)
    torch.manual_seed(0)
    model = build_model({"name": "vgg8", "norm": "bn", "width_factor": 0.25}, ds)
    train(model, ds, TrainConfig(lr=0.05, epochs=2, batch_size=100, momentum=0.9), seed=0)
    return model.eval(), ds


def _inputs(ds):
    """The test images inside the attacks' clip range: Foolbox requires inputs within its bounds, and
    standardized CIFAR-10 puts the brightest 2.7% of pixel values just above 2."""
    return ds.inputs("test").clamp(*ds.clip)


def _acc(model, ds, perturb=None):
    return accuracy_and_loss(model, _inputs(ds), ds.y_test, perturb, 100)[0]


fb = pytest.importorskip("foolbox", reason="foolbox (test extra) is not installed")


@pytest.mark.parametrize("norm, eps", [("linf", 0.03), ("l2", 0.03 * math.sqrt(3072))])
def test_pgd_matches_foolbox_on_a_trained_vgg8(vgg8, norm, eps):
    model, ds = vgg8
    x, y = _inputs(ds), ds.y_test
    ours = _acc(model, ds, lambda xb, yb: attacks.pgd(model, xb, yb, eps, 20, eps / 10, norm, clip=ds.clip))
    attack = (fb.attacks.LinfPGD if norm == "linf" else fb.attacks.L2PGD)(abs_stepsize=eps / 10, steps=20,
                                                                          random_start=False)
    _, _, success = attack(fb.PyTorchModel(model, bounds=ds.clip), x, y, epsilons=[eps])
    theirs = 100.0 * (1 - success[0].float().mean().item())
    assert abs(ours - theirs) <= 0.5, (ours, theirs)


def test_vgg8_attacks_pass_the_gradient_masking_checks(vgg8):
    model, ds = vgg8
    eps = [0.0, 0.01, 0.03, 0.1, 0.3, 1.0]
    clean = _acc(model, ds)
    f = [_acc(model, ds, lambda xb, yb: attacks.fgsm(model, xb, yb, e, clip=ds.clip)) for e in eps]
    p = [_acc(model, ds, lambda xb, yb: attacks.pgd(model, xb, yb, e, 20, max(e, 1e-12) / 10, clip=ds.clip))
         for e in eps]
    assert not masking_problems(clean, eps, f, p, fgsm_curve=False), (clean, f, p)


def test_killed_cifar_run_resumes_from_its_epoch_to_the_same_table(cifar_root, tmp_path):
    args = [sys.executable, "-m", "bnrobust", "run", "cifar10-small-lr", "--data-dir", str(cifar_root),
            "--seeds", "1", *TINY, "--set", "train.epochs=2", "--set", "data.n_test=100"]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    out = tmp_path / "killed"
    proc = subprocess.Popen(args + ["--out", str(out)], env=dict(env, BNROBUST_CHECKPOINT_SECONDS="0"), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    runs = out / "cifar10-small-lr" / "runs"
    deadline = time.time() + 240
    while time.time() < deadline and not list(runs.glob(".ckpt-*.pt")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(runs.glob(".ckpt-*.pt")), "the kill should land mid-training"
    done = subprocess.run(args + ["--out", str(out)], env=env, cwd=REPO, check=True, capture_output=True, text=True)
    assert "resuming" in done.stderr
    clean = tmp_path / "clean"
    subprocess.run(args + ["--out", str(clean)], env=env, cwd=REPO, check=True, capture_output=True)
    table = lambda o: [line for line in (o / "cifar10-small-lr" / "quick" / "report.md").read_text().splitlines()  # noqa: E731
                       if line.startswith("| ")]
    assert table(out) == table(clean)
