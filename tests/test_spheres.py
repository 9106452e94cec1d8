"""Section C "adversarial spheres": the dataset, the Fig. 8 representation metrics, and both
experiments end to end through the CLI at a reduced quick scale (seconds)."""
import json
import re
from pathlib import Path

import pytest
import torch

from bnrobust.cli import main
from bnrobust.data.synthetic import spheres
from bnrobust.eval.representations import batch_representations, pca2, quadratic_probe_accuracy, two_minibatches
from bnrobust.models.mlp import deep_linear


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a busy 2-core machine two threads contend and run far slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_spheres_dataset_radii_balance_and_seed():
    ds = spheres(Path("."), seed=0, n_train=500, n_test_per_class=300)
    assert ds.x_train.shape == (500, 2) and ds.x_test.shape == (600, 2) and ds.num_classes == 2
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        r = x.double().norm(dim=1)
        assert torch.allclose(r[y == 0], torch.ones(1, dtype=torch.float64), atol=1e-6)
        assert torch.allclose(r[y == 1], torch.full((1,), 1.3, dtype=torch.float64), atol=1e-6)
    assert int((ds.y_train == 0).sum()) == 250 and int((ds.y_test == 1).sum()) == 300
    again, other = spheres(Path("."), seed=0, n_train=500, n_test_per_class=10), spheres(Path("."), seed=1)
    assert torch.equal(again.x_train, ds.x_train)  # same seed, same training set (whatever n_test)
    assert not torch.allclose(other.x_train, ds.x_train)
    angles = torch.atan2(ds.x_test[:, 1], ds.x_test[:, 0])
    assert angles.min() < -3.0 and angles.max() > 3.0  # spread around the whole circle


def test_quadratic_probe_separates_any_affine_image_of_the_circles():
    ds = spheres(Path("."), seed=0, n_train=200)
    a = torch.tensor([[3.0, 1.0], [0.5, -2.0]])
    assert quadratic_probe_accuracy(ds.x_train, ds.y_train) == 100.0
    assert quadratic_probe_accuracy(pca2(ds.x_train @ a.T + 7.0), ds.y_train) == 100.0
    # two different affine maps pooled are no longer one pair of concentric ellipses
    mixed = ds.x_train.clone()
    mixed[::2] *= 1.3  # half of each class: inner points land on the outer circle
    assert quadratic_probe_accuracy(mixed, ds.y_train) < 90.0


@pytest.mark.parametrize("bn", [False, True])
def test_deep_linear_representations_depend_on_the_batch_only_with_bn(bn):
    ds = spheres(Path("."), seed=0, n_train=500)
    torch.manual_seed(0)
    model = deep_linear(ds, depth=14, width=100, norm="bn" if bn else "none")
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules()) == bn
    ia, ib = two_minibatches(500, 100, seed=0)
    assert len(set(ia.tolist()) | set(ib.tolist())) == 200  # disjoint
    xa, xb = ds.x_train[ia], ds.x_train[ib]
    alone = batch_representations(model, xa, [2, 14])
    mixed = batch_representations(model, torch.cat([xa[:50], xb[50:]]), [2, 14])
    for a, m in zip(alone, mixed):
        diff = float((a[:50] - m[:50]).norm() / a.norm())
        assert (diff > 0.05) if bn else (diff < 1e-5), diff
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch_representations(model, xa, [14])  # runs a copy: the model's running stats are untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def _checks(report: str) -> dict[str, str]:
    return {text: ok for ok, text in re.findall(r"^- \[( |x)\] (.*)$", report, flags=re.M)}


def test_spheres_representations_quick_end_to_end(tmp_path):
    assert main(["run", "spheres-representations", "--out", str(tmp_path), "--seeds", "3"]) == 0
    folder = tmp_path / "spheres-representations" / "quick"
    report = (folder / "report.md").read_text()
    assert (folder / "fig8_spheres_representations.png").stat().st_size > 10000
    assert "](fig8_spheres_representations.png)" in report
    checks = _checks(report)
    assert len(checks) == 5 and set(checks.values()) == {"x"}, report
    summary = json.loads((folder / "results.json").read_text())["summary"]
    assert summary["no BN"]["Probe layer 14"]["mean"] == 100.0
    assert summary["no BN"]["Shift layer 14"]["mean"] < 1e-5 < summary["BN"]["Shift layer 14"]["mean"]


def test_adv_spheres_quick_end_to_end(tmp_path):
    # A tiny version of the quick scale (narrow net, few epochs, small test set): it checks the
    # plumbing, not the paper's claims (the full quick run does that).
    args = ["run", "adv-spheres", "--out", str(tmp_path), "--seeds", "2", "--set", "train.epochs=4",
            "--set", "model.width=32", "--set", "data.n_test_per_class=200"]
    assert main(args) == 0
    folder = tmp_path / "adv-spheres" / "quick"
    report = (folder / "report.md").read_text()
    assert (folder / "fig9_spheres_training.png").stat().st_size > 10000
    assert "](fig9_spheres_training.png)" in report
    for variant in ("lr=0.001", "lr=0.001 BN", "lr=0.01", "lr=0.01 BN", "lr=0.1", "lr=0.1 BN"):
        assert f"| {variant} | 2 |" in report
    assert "Noisy acc. (paper, reference)" in report and "94.83" in report
    checks = _checks(report)
    assert any(t.startswith("BN fails to train at lr 0.01") for t in checks)
    assert any(t.startswith("At lr 0.001 BN lowers the accuracy under noise") for t in checks)
    runs = sorted((tmp_path / "adv-spheres" / "runs").glob("lr-0-01-bn-s0-*"))
    record = json.loads((runs[0] / "record.json").read_text())
    assert len(record["history"]) == 4 and record["metrics"]["converged"]["flag"] in (0.0, 1.0)
    config = json.loads((runs[0] / "config.json").read_text())
    assert config["model"]["norm"]["name"] == "bn" and config["model"]["norm_layers"] == "all"
    assert config["eval"]["metrics"]["noise"]["sigma"] == pytest.approx(0.005 ** 0.5)
    assert config["eval"]["metrics"]["noise"]["clip"] is False and config["train"]["batch_size"] == 50
