"""Seed-stacked training (bnrobust/train/stacked.py): a stack of runs gives each run what it
gives alone (weights within 1e-4, the same accuracies), is stored as the runs themselves, and
falls back to single runs where it cannot stack."""
import json
import math

import pytest
import torch

from bnrobust.attacks.gradient import draw
from bnrobust.config import resolve_config
from bnrobust.experiments import get_experiment
from bnrobust.models import build_model
from bnrobust.runner import execute as execute_mod
from bnrobust.runner import sweep as sweep_mod
from bnrobust.runner.execute import get_dataset, run_config, run_stacked
from bnrobust.runner.executors import LocalExecutor
from bnrobust.runner.sweep import plan, sweep, units
from bnrobust.train import TrainConfig
from bnrobust.train import stacked
from bnrobust.train.stacked import NotStackable, stack_key, stack_models, train_stacked

SPHERES = {"name": "spheres", "n_train": 192, "n_test_per_class": 48, "dim": 12}
EVAL = {"batch_size": 32, "metrics": {  # small batches: these stack in evaluation too (stacked.eval_chunk)
    "clean": {"name": "clean"}, "train": {"name": "train"}, "conv": {"name": "converged"},
    "awgn": {"name": "awgn", "sigma": 0.3},
    "fgsm": {"name": "fgsm", "eps": 0.1},
    "pgd": {"name": "pgd", "eps": 0.1, "steps": 3, "random_start": True},
    "masking": {"name": "masking", "eps": [0.0, 0.1, 0.6], "steps": 3, "n": 40},
    "damage": {"name": "adv-damage", "eps": 0.1}}}
TRAIN = {"lr": 0.3, "epochs": 3, "batch_size": 32}
APPROX = ("loss", "damage", "deg")  # sums of floats: equal up to rounding; everything else exactly


def _cfg(model, train=None, seed=0, data=SPHERES, ev=EVAL):
    return resolve_config({"data": data, "model": model, "train": {**TRAIN, **(train or {})}, "eval": ev,
                           "seed": seed})


def _same_metric(a, b, key=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _same_metric(a[k], b[k], k)
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same_metric(x, y, key)
    elif isinstance(a, float) and key in APPROX:
        assert math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6), (key, a, b)
    else:
        assert a == b, (key, a, b)


def _assert_same(cfgs, root=None):
    singles = [run_config(c, root) for c in cfgs]
    together = run_stacked(cfgs, root)
    for (r1, m1), (r2, m2) in zip(singles, together):
        assert r2["status"] == r1["status"] == "ok"
        assert r2["stacked"] == len(cfgs)
        s1, s2 = m1.state_dict(), m2.state_dict()
        assert s1.keys() == s2.keys()
        for k in s1:
            assert s1[k].shape == s2[k].shape
            if s1[k].is_floating_point():
                assert torch.allclose(s1[k], s2[k], rtol=0, atol=1e-4), (k, float((s1[k] - s2[k]).abs().max()))
            else:
                assert torch.equal(s1[k], s2[k]), k
        assert [h["acc"] for h in r1["history"]] == [h["acc"] for h in r2["history"]]
        _same_metric(r1["metrics"], r2["metrics"])
    return together


BNGD = {"name": "bn", "affine": "fixed", "c": 1e-3}

CASES = {
    # plain logistic regression, three seeds: each its own init, data and batch order
    "linear": [_cfg({"name": "linear"}, seed=s) for s in range(3)],
    # linear models that differ in weight decay and norm (none, fixed/learned/batch-stats BN, c) stack
    # together, with momentum; two seeds, so five models read each batch (shared batches)
    "linear-mixed": [_cfg({"name": "linear", "norm": norm}, {"momentum": 0.9, "weight_decay": wd}, seed=s)
                     for s in (0, 1) for norm, wd in (("none", 0.0), ("none", 0.05), (BNGD, 0.0),
                                                      ({"name": "bn", "gamma_init": "uniform"}, 0.01),
                                                      ({**BNGD, "stats": "batch"}, 0.0))],
    # an MLP with BN: per-model running statistics and c, weight decay on weights only, momentum
    "mlp-bn": [_cfg({"name": "mlp", "depth": 2, "width": 16, "norm": {"name": "bn", "c": c}},
                    {"momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "decay": "weights"}, seed=s)
               for c in (1e-5, 1e-2) for s in range(3)],
    "deep-linear-ln": [_cfg({"name": "deep-linear", "depth": 3, "width": 8, "norm": "ln"}, seed=s) for s in range(2)],
    "mlp-gn-full-batch": [_cfg({"name": "mlp", "depth": 1, "width": 8, "norm": {"name": "gn", "groups": 2}},
                               {"batch_size": 0, "epochs": 5}, seed=s) for s in range(2)],
    "mlp-pgd-training": [_cfg({"name": "mlp", "depth": 1, "width": 16},
                              {"adversarial": {"name": "pgd", "eps": 0.1, "steps": 2, "step_size": 0.05,
                                               "random_start": True}}, seed=s) for s in range(2)],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_stacked_runs_equal_single_runs(case):
    _assert_same(CASES[case])


def test_bngd_on_mnist_equals_single_runs(mnist_root):
    """The paper's models on real MNIST 3 vs 7 (dead pixels, c = 1e-5), evaluated one by one."""
    data = {"name": "mnist-binary", "classes": [3, 7], "n_per_class": 150}
    ev = {"batch_size": 500, "metrics": {"clean": {"name": "clean"}, "fgsm": {"name": "fgsm", "eps": 0.1},
                                         "theta": {"name": "tilt"}}}
    norms = ["none", {"name": "bn", "affine": "fixed"}, {"name": "bn", "affine": "learned", "gamma_init": "uniform"}]
    cfgs = [_cfg({"name": "linear", "norm": n}, {"lr": 0.1, "epochs": 2, "batch_size": 64}, s, data, ev)
            for n in norms for s in (0, 1)]
    _assert_same(cfgs, mnist_root)


def test_upscaled_mnist_equals_single_runs(mnist_root):
    """Linear models on MNIST upscaled to 56 x 56 (input-dim-linear) train on the 28 x 28 images
    with the upscaling folded into the weights; the same weights as single runs on 56 x 56."""
    data = {"name": "mnist", "size": 56, "n_train": 300, "n_test": 200}
    ev = {"batch_size": 100, "metrics": {"clean": {"name": "clean"}, "fgsm": {"name": "fgsm", "eps": 0.1}}}
    cfgs = [_cfg({"name": "linear"}, {"lr": 0.01, "epochs": 2, "batch_size": 64, "weight_decay": wd}, s, data, ev)
            for wd in (0.0, 0.01) for s in (0, 1)]
    _assert_same(cfgs, mnist_root)


def test_a_diverging_model_fails_alone():
    """A loss that turns non-finite fails its own run, at the epoch it would alone; the others train on."""
    cfgs = [_cfg({"name": "linear"}, {"weight_decay": wd, "lr": 1.0}, seed=0) for wd in (0.0, 1e30)]
    single = run_config(cfgs[1])[0]
    (ok, _), (failed, _) = run_stacked(cfgs)
    assert single["status"] == failed["status"] == "failed" and failed["reason"] == single["reason"]
    assert ok["status"] == "ok"
    _same_metric(ok["metrics"], run_config(cfgs[0])[0]["metrics"])


def test_generators_per_model_draw_each_models_numbers():
    gens = [torch.Generator().manual_seed(s) for s in (3, 4)]
    both = draw(torch.randn, (6, 2), gens, torch.float32)
    assert torch.equal(both[3:], torch.randn(3, 2, generator=torch.Generator().manual_seed(4)))
    assert not torch.equal(both[:3], both[3:])


def test_stack_keys():
    base = _cfg({"name": "mlp", "depth": 1, "width": 8, "norm": "bn"})
    assert stack_key(base) == stack_key(dict(base, seed=5))
    assert stack_key(base) == stack_key(_cfg({"name": "mlp", "depth": 1, "width": 8, "norm": {"name": "bn", "c": 0.1}},
                                             {"weight_decay": 0.1}))
    assert stack_key(base) != stack_key(_cfg({"name": "mlp", "depth": 1, "width": 8}))  # other layers
    assert stack_key(base) != stack_key(_cfg({"name": "mlp", "depth": 1, "width": 8, "norm": "bn"}, {"lr": 0.2}))
    lin = stack_key(_cfg({"name": "linear"}))
    assert lin == stack_key(_cfg({"name": "linear", "norm": BNGD}))  # folded into one matmul
    for cfg in (_cfg({"name": "linear"}, {"epochs": 0}), _cfg({"name": "lenet5"}, data={"name": "mnist"}),
                _cfg({"name": "linear"}, {"select": "best-val"}),
                _cfg({"name": "linear"}, ev={**EVAL, "curve_every": 1, "curve_metrics": ["clean"]})):
        assert stack_key(cfg) is None


def test_units_group_seeds_and_variants(tmp_path, monkeypatch):
    exp = get_experiment("toy-tilting")
    runs = plan(exp, tmp_path, "quick")
    assert [len(u) for u in units(runs)] == [len(runs)]  # GD and BNGD, every seed: one linear stack
    assert [len(u) for u in units(runs, stack=False)] == [1] * len(runs)
    monkeypatch.setattr(stacked, "STEP_ELEMENTS", 1)  # one seed per stack: its models stay together
    for unit in units(runs):
        assert len({r.seed for r in unit}) == 1 and len(unit) == 2
    monkeypatch.setenv("BNROBUST_STACK", "0")
    assert not stacked.enabled() and stacked.enabled(True)


def test_sweep_stores_each_run_as_a_single_run_would(tmp_path, monkeypatch):
    """Same run folders (hash), reusable by a --no-stack sweep, and the same table."""
    exp = get_experiment("toy-tilting")
    over = {"train.epochs": 30, "data.n_test": 200}
    a = sweep(exp, tmp_path / "a", "quick", seeds=2, overrides=over, progress=False)
    b = sweep(exp, tmp_path / "b", "quick", seeds=2, overrides=over, progress=False, stack=False)
    assert [r.dir.name for r in a.runs] == [r.dir.name for r in b.runs]
    for ra, rb in zip(a.runs, b.runs):
        assert ra.record["stacked"] == 4 and "stacked" not in rb.record
        _same_metric(rb.record["metrics"], ra.record["metrics"])
        assert ra.model().state_dict().keys() == rb.model().state_dict().keys()
    calls = []
    compute = sweep_mod.compute_unit
    monkeypatch.setattr(sweep_mod, "compute_unit", lambda unit, *args: calls.append(unit) or compute(unit, *args))
    sweep(exp, tmp_path / "a", "quick", seeds=2, overrides=over, progress=False, stack=False)
    assert calls == []  # every stacked run is reused as it is
    for r in a.runs[:2]:  # two runs lost: the others are reused, these two stack again
        for f in r.dir.iterdir():
            f.unlink()
        r.dir.rmdir()
    sweep(exp, tmp_path / "a", "quick", seeds=2, overrides=over, progress=False)
    assert [len(u) for u in calls] == [2]


def test_runs_that_turn_out_not_to_stack_run_one_by_one(tmp_path):
    cfgs = [_cfg({"name": "linear"}, seed=0), _cfg({"name": "linear"}, seed=1, data={**SPHERES, "n_train": 100})]
    with pytest.raises(NotStackable, match="different sizes"):
        run_stacked(cfgs)
    from bnrobust.runner.storage import Run
    unit = [Run("v", c["seed"], c, tmp_path / f"r{c['seed']}") for c in cfgs]
    out = sweep_mod.compute_unit(unit, None, torch.device("cpu"), False)
    assert [r["status"] for r, _ in out] == ["ok", "ok"] and all("stacked" not in r for r, _ in out)


def test_local_executor_maps_units():
    out = list(LocalExecutor().map(iter([[1, 2], [3]]), lambda unit: [(u * 10, None) for u in unit]))
    assert out == [([1, 2], [(10, None), (20, None)]), ([3], [(30, None)])]


def test_killed_stack_resumes_to_the_same_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("BNROBUST_CHECKPOINT_SECONDS", "0")
    cfgs = [_cfg({"name": "mlp", "depth": 1, "width": 8, "norm": "bn"}, {"momentum": 0.9, "epochs": 4}, seed=s)
            for s in range(2)]
    dss = [get_dataset(c) for c in cfgs]
    tcs = [TrainConfig.from_dict(c["train"]) for c in cfgs]

    def models():
        out = []
        for c, ds in zip(cfgs, dss):
            torch.manual_seed(c["seed"])
            out.append(build_model(c["model"], ds))
        return out
    ref = models()
    ref_results = train_stacked(ref, dss, tcs, [0, 1])
    ckpt = tmp_path / "stack.ckpt"
    lr_at = stacked._lr_at

    def die_at_3(cfg, epoch):
        if epoch == 3:
            raise KeyboardInterrupt
        return lr_at(cfg, epoch)
    monkeypatch.setattr(stacked, "_lr_at", die_at_3)
    with pytest.raises(KeyboardInterrupt):
        train_stacked(models(), dss, tcs, [0, 1], checkpoint=ckpt)
    monkeypatch.setattr(stacked, "_lr_at", lr_at)
    assert ckpt.exists()
    resumed = models()
    results = train_stacked(resumed, dss, tcs, [0, 1], checkpoint=ckpt)
    for a, b in zip(ref, resumed):
        for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), k
    assert [r.history for r in results] == [r.history for r in ref_results]


def test_stacked_model_refuses_what_it_cannot_reproduce():
    ds = get_dataset(_cfg({"name": "linear"}))
    with pytest.raises(NotStackable):
        stack_models([build_model({"name": "mlp", "depth": 1, "width": 4}, ds),
                      build_model({"name": "mlp", "depth": 1, "width": 5}, ds)])

    class Mixer(torch.nn.Module):  # mixes the samples of a batch: must not stack
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(12, 2)

        def forward(self, x):
            return self.linear(x - x.mean(0))
    probe = ds.prepare(ds.take("train", slice(0, 4)))
    with pytest.raises(NotStackable):
        stack_models([Mixer(), Mixer()], probe)


def test_no_stack_flag(tmp_path, capsys):
    from bnrobust.cli.main import main
    assert main(["run", "toy-tilting", "--seeds", "1", "--set", "train.epochs=5", "--set", "data.n_test=50",
                 "--out", str(tmp_path), "--no-stack", "--no-report"]) == 0
    records = [json.loads(p.read_text()) for p in tmp_path.glob("toy-tilting/runs/*/record.json")]
    assert len(records) == 2 and all("stacked" not in r for r in records)


def test_two_sweeps_share_stacks_and_compute_each_run_once(tmp_path, monkeypatch):
    """Claims hold for stacks: a concurrent sweep skips the runs of a stack another one computes,
    then waits for them; an interrupted stack saves none of its runs and the next sweep resumes."""
    import threading
    import time
    monkeypatch.setattr(sweep_mod, "POLL_S", 0.05)
    real, computed, lock = execute_mod.run_stacked, [], threading.Lock()

    def slow(cfgs, *args):
        with lock:
            computed.extend(c["seed"] for c in cfgs)
        time.sleep(0.3)
        return real(cfgs, *args)
    monkeypatch.setattr(execute_mod, "run_stacked", slow)
    exp, results, over = get_experiment("toy-tilting"), [], {"train.epochs": 5, "data.n_test": 50}
    threads = [threading.Thread(target=lambda: results.append(sweep(exp, tmp_path, "quick", 2, over, progress=False)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(computed) == [0, 0, 1, 1] and len(results) == 2
    assert all(r.ok for res in results for r in res.runs)
    runs = tmp_path / "toy-tilting" / "runs"
    assert not list(runs.glob(".claim-*")) and not list(runs.glob(".ckpt-*"))

    def interrupted(cfgs, *args):
        raise KeyboardInterrupt
    monkeypatch.setattr(execute_mod, "run_stacked", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sweep(exp, tmp_path / "b", "quick", 2, over, progress=False)
    assert not list((tmp_path / "b" / "toy-tilting" / "runs").glob("*-s*"))  # nothing half-saved
    assert not list((tmp_path / "b" / "toy-tilting" / "runs").glob(".claim-*"))
    monkeypatch.setattr(execute_mod, "run_stacked", real)
    assert all(r.ok for r in sweep(exp, tmp_path / "b", "quick", 2, over, progress=False).runs)
