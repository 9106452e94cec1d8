"""The residual-network, CIFAR-10-C and SVHN experiments end to end: on a tiny slice of the real
CIFAR-10 (skipped without it), and the SVHN ones on small .mat files in the official format."""
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from bnrobust.cli import main
from bnrobust.data.svhn import SVHN_FILES
from bnrobust.experiments import get_experiment
from bnrobust.models import build_model

TINY = ["--set", "data.n_train=200", "--set", "data.n_val=100", "--set", "data.n_test=60", "--set", "train.epochs=1"]
CURVES = [f"eval.metrics.{k}" for k in ("linf_mis", "linf_tgt_ll", "l2_mis", "l2_tgt_ll")]
CASES = {
    "fixup-resnets": (["--set", "data.n_test=30", "--set", "eval.metrics.pgd_linf.steps=3",
                       "--set", "eval.metrics.pgd_l2.steps=3"], "fig4_fixup_resnets.png"),
    "eps-curves": ([a for k in CURVES for a in ("--set", f"{k}.n=10", "--set", f"{k}.steps=3")]
                   + ["--set", "data.n_train=100", "--set", "train.adversarial.steps=2"], "fig5_eps_curves.png"),
    "cifar10-c": (["--set", "model.width_factor=0.25"], "cifar10c_bn_gap.png"),
}


def _table_rows(report: str) -> list[str]:
    return [line for line in report.splitlines() if line.startswith("| ")]


@pytest.mark.parametrize("exp_id", list(CASES))
def test_cifar_residual_experiment_runs_end_to_end(exp_id, cifar_root, tmp_path, capsys):
    extra, figure = CASES[exp_id]
    code = main(["run", exp_id, "--data-dir", str(cifar_root), "--out", str(tmp_path), *TINY, *extra])
    err = capsys.readouterr().err
    assert code == 0, err
    out = tmp_path / exp_id / "quick"
    report = (out / "report.md").read_text()
    assert len({line.count(" | ") for line in _table_rows(report)}) == 1  # every row has the same number of cells
    assert (out / figure).stat().st_size > 5000
    if exp_id == "cifar10-c":
        assert "paper, reference" in report and "model.width_factor does not apply" in err
        csv = (out / "results.csv").read_text()
        assert "corruptions.gaussian_noise" in csv and "corruptions.mce" in csv


def test_fixup_quick_variants_have_no_normalization_layer(cifar_root):
    """The Fixup rows of fixup-resnets and eps-curves train networks without any norm layer (the WRN keeps
    the paper's one BN before the classifier)."""
    from bnrobust.data import load_dataset
    ds = load_dataset({"name": "cifar10", "n_train": 10, "n_val": 0, "n_test": 10}, seed=0, root=cifar_root)
    norms = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm, torch.nn.LayerNorm)
    for exp_id, variant, allowed in (("fixup-resnets", "ResNet56 Fixup", 0), ("eps-curves", "ResNet32 F", 0),
                                     ("eps-curves", "WRN-28-10 PGD F", 1)):
        cfg = get_experiment(exp_id).variant_config(variant, "quick")
        model = build_model(cfg["model"], ds)
        assert sum(isinstance(m, norms) for m in model.modules()) == allowed, (exp_id, variant)


# ---------------------------------------------------------------------------
# SVHN, on small files written like the official ones


def _write_svhn(root: Path, monkeypatch, n_train: int = 400, n_test: int = 200) -> None:
    """Digits whose class shows in the mean brightness of a patch, so a tiny CNN can learn them."""
    rng = np.random.default_rng(0)
    d = root / "SVHN"
    d.mkdir(parents=True)
    for name, n in (("train_32x32.mat", n_train), ("test_32x32.mat", n_test)):
        labels = rng.integers(1, 11, n)  # 10 = the digit 0
        x = rng.integers(0, 80, (32, 32, 3, n)).astype(np.uint8)
        for i, lab in enumerate(labels):
            r = (lab % 10) * 3
            x[r:r + 3, 4:28, :, i] = 250
        scipy.io.savemat(str(d / name), {"X": x, "y": labels.astype(np.uint8)[:, None]}, format="5")
        monkeypatch.setitem(SVHN_FILES, name, __import__("hashlib").md5((d / name).read_bytes()).hexdigest())


SVHN_CASES = {
    "svhn-vgg": (["--set", "data.n_train=300", "--set", "data.n_val=50", "--set", "data.n_test=100",
                  "--set", "train.epochs=2", "--set", "model.width_factor=0.25"], None),
    "fooling-images-svhn": (["--set", "data.n_train=400", "--set", "data.n_test=200", "--set", "train.epochs=2",
                             "--set", "eval.metrics.fooling.steps=[1,5]"], "fig14_fooling_bn.png"),
    "bim-l2-grid": (["--set", "data.n_train=400", "--set", "data.n_test=200", "--set", "train.epochs=2",
                     "--set", "eval.metrics.grid.max_steps=20"], "fig15_grid_bn.png"),
}


@pytest.mark.parametrize("exp_id", list(SVHN_CASES))
def test_svhn_experiments_run_end_to_end_on_official_format_files(exp_id, tmp_path, monkeypatch, capsys):
    _write_svhn(tmp_path / "data", monkeypatch)
    extra, figure = SVHN_CASES[exp_id]
    code = main(["run", exp_id, "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert code == 0, err
    out = tmp_path / "out" / exp_id / "quick"
    report = (out / "report.md").read_text()
    assert len({line.count(" | ") for line in _table_rows(report)}) == 1
    if figure:
        assert (out / figure).stat().st_size > 5000
    if exp_id == "bim-l2-grid":
        csv = (out / "results.csv").read_text()
        assert "grid.steps" in csv and "grid.l2_mean" in csv


def test_svhn_experiment_without_files_is_one_line(tmp_path, monkeypatch, capsys):
    code = main(["run", "svhn-vgg", "--data-dir", str(tmp_path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code != 0 and "train_32x32.mat" in err and len(err.strip().splitlines()) == 1
