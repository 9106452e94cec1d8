"""Inside a run: checkpoints and resume, best-validation-epoch selection, curves, schedules."""
import pytest
import torch

from bnrobust.data import Dataset
from bnrobust.errors import BnrobustError
from bnrobust.models import build_model
from bnrobust.train import TrainConfig, train
from bnrobust.train.trainer import param_groups


def _task(n=300, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n + 100, d, generator=g)
    y = (x[:, :3].sum(1) * x[:, 3:6].sum(1) > 0).long()
    return Dataset("t", x[:n], y[:n], x[n:n + 50], y[n:n + 50], 2, None, x_val=x[n + 50:], y_val=y[n + 50:])


def _model(ds, seed=0):
    torch.manual_seed(seed)
    return build_model({"name": "mlp", "depth": 2, "width": 32, "norm": "bn"}, ds)


CFG = TrainConfig(lr=0.05, epochs=6, batch_size=32, momentum=0.9, nesterov=True, weight_decay=5e-4,
                  decay="weights", schedule="step", milestones=[3, 5], select="best-val")


class Killed(Exception):
    pass


def test_killed_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("BNROBUST_CHECKPOINT_SECONDS", "0")
    ds = _task()
    ref_model = _model(ds)
    ref = train(ref_model, ds, CFG, seed=3, on_epoch=lambda e, m: {"e": e})
    ckpt = tmp_path / "run.ckpt"

    def die_at_4(epoch, model):
        if epoch == 4:
            raise Killed
        return {"e": epoch}
    with pytest.raises(Killed):
        train(_model(ds), ds, CFG, seed=3, checkpoint=ckpt, on_epoch=die_at_4)
    assert ckpt.exists()
    resumed_model = _model(ds, seed=99)  # a fresh process would start from other weights
    res = train(resumed_model, ds, CFG, seed=3, checkpoint=ckpt, on_epoch=lambda e, m: {"e": e})
    for (k, a), b in zip(ref_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), k
    assert res.history == ref.history and res.curves == ref.curves and res.best_epoch == ref.best_epoch


def test_damaged_checkpoint_trains_from_scratch(tmp_path, monkeypatch):
    ckpt = tmp_path / "run.ckpt"
    ckpt.write_bytes(b"not a checkpoint")
    ds = _task()
    a, b = _model(ds), _model(ds)
    train(a, ds, CFG, seed=1)
    train(b, ds, CFG, seed=1, checkpoint=ckpt)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_best_val_epoch_is_kept():
    ds = _task()
    res = train(_model(ds), ds, CFG, seed=0)
    vals = [h["val_acc"] for h in res.history]
    assert res.best_epoch == 1 + vals.index(max(vals))


def test_best_val_needs_a_validation_split():
    ds = _task()
    ds.x_val = ds.y_val = None
    with pytest.raises(BnrobustError, match="validation split"):
        train(_model(ds), ds, CFG, seed=0)


def test_weight_decay_on_weights_only():
    ds = _task()
    model = _model(ds)
    groups = param_groups(model, CFG)
    assert groups[0]["weight_decay"] == 5e-4 and all(p.dim() > 1 for p in groups[0]["params"])
    assert groups[1]["weight_decay"] == 0 and all(p.dim() == 1 for p in groups[1]["params"])
    assert len(param_groups(model, TrainConfig(weight_decay=5e-4))) == 1


def test_bf16_autocast_trains_on_cpu():
    ds = _task()
    res = train(_model(ds), ds, TrainConfig(lr=0.05, epochs=2, batch_size=32, precision="bf16"), seed=0)
    assert res.status == "ok" and res.history[-1]["acc"] > 50


def test_sweep_killed_mid_run_resumes_from_its_checkpoint(tmp_path):
    """SIGKILL `bnrobust run` while a run is training; the re-run continues that run from its
    last checkpoint (not from scratch) and gives the same table as an uninterrupted sweep."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    args = [sys.executable, "-m", "bnrobust", "run", "toy-tilting", "--seeds", "1", "--set", "train.epochs=2000",
            "--set", "data.n_test=200"]
    env = dict(os.environ, PYTHONPATH=str(repo), OMP_NUM_THREADS="1")
    out = tmp_path / "killed"  # this process checkpoints after every epoch; the others at the default pace
    proc = subprocess.Popen(args + ["--out", str(out)], env=dict(env, BNROBUST_CHECKPOINT_SECONDS="0"), cwd=repo,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    runs = out / "toy-tilting" / "runs"
    deadline = time.time() + 120
    while time.time() < deadline and not list(runs.glob(".ckpt-*.pt")):
        time.sleep(0.02)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(runs.glob(".ckpt-*.pt")), "the kill should land mid-run"
    done = subprocess.run(args + ["--out", str(out)], env=env, cwd=repo, check=True, capture_output=True, text=True)
    assert "resuming" in done.stderr and "from epoch" in done.stderr
    assert not list(runs.glob(".ckpt-*"))  # removed once the run is saved
    clean = tmp_path / "clean"
    subprocess.run(args + ["--out", str(clean)], env=env, cwd=repo, check=True, capture_output=True)
    table = lambda o: [line for line in (o / "toy-tilting" / "quick" / "report.md").read_text().splitlines()  # noqa: E731
                       if line.startswith("| ")]
    assert table(out) == table(clean)


def test_lr_scale_attribute_gets_its_own_group_and_rate():
    """Fixup's scalars train at lr/10: a parameter's `lr_scale` sets its group's learning rate."""
    ds = _task()
    model = _model(ds)
    scalar = model.net[0].bias if hasattr(model, "net") else next(p for p in model.parameters() if p.dim() == 1)
    scalar.lr_scale = 0.1
    before = scalar.detach().clone()
    other = next(p for p in model.parameters() if p is not scalar)
    cfg = TrainConfig(lr=0.05, epochs=1, batch_size=32)
    groups = param_groups(model, cfg)
    assert sorted(g["lr_scale"] for g in groups) == [0.1, 1.0]
    assert [g["params"] for g in groups if g["lr_scale"] == 0.1] == [[scalar]]
    # one plain SGD step: the scaled parameter moves by exactly a tenth of lr * grad
    ds1 = Dataset("t", ds.x_train[:32], ds.y_train[:32], ds.x_test, ds.y_test, 2, None)
    model.train()
    torch.nn.functional.cross_entropy(model(ds1.x_train), ds1.y_train).backward()
    grad = scalar.grad.clone()
    model.zero_grad()
    train(model, ds1, cfg, seed=0)
    assert torch.allclose(scalar.detach(), before - 0.005 * grad, atol=1e-6)
    assert other.requires_grad


def test_inverse_frequency_class_weights():
    from bnrobust.train.trainer import class_weights
    y = torch.tensor([0, 0, 0, 1])
    w = class_weights(y, 3)
    assert torch.allclose(w, torch.tensor([4 / 9, 4 / 3, 0.0]))  # N / (K n_c), N=4, K=3
    ds = _task()
    res = train(_model(ds), ds, TrainConfig(lr=0.05, epochs=1, batch_size=32, class_weights="inverse-frequency"), 0)
    assert res.status == "ok"
    with pytest.raises(BnrobustError):
        TrainConfig.from_dict({"class_weights": "balanced"})
