"""Same numbers as before the architecture change: small configs of every model family, trained
and evaluated by today's code, must give bit-identical metrics (CPU, same seed) to the values
stored in tests/data/regression_before.json by the code before the change (commit d05b0c5).

The stored configs use the old option names; NEW says how each is written now. Both sides run
with one intra-op thread: reductions split over threads round differently. A case whose stored
values were recorded again after a deliberate change of arithmetic says so, and why, in its
"rerecorded" field."""
import json
import math
from pathlib import Path

import pytest
import torch

from bnrobust.config import resolve_config
from bnrobust.runner.execute import run_config

BEFORE = json.loads((Path(__file__).parent / "data" / "regression_before.json").read_text())
BNGD = {"name": "bn", "affine": "fixed"}
PGD = {"name": "pgd", "eps": 0.3, "steps": 3, "step_size": 0.1, "random_start": True}
NEW = {  # case -> the sections that changed names
    "mnist37-none": {"model": {"name": "linear"}},
    "mnist37-wd": {"model": {"name": "linear"}},
    "mnist37-fixed": {"model": {"name": "linear", "norm": {**BNGD, "c": 1e-3}}},
    "mnist37-learned-std": {"model": {"name": "linear", "norm": {"name": "bn", "gamma_init": "uniform"},
                                      "input_norm": "image-std"}},
    "mnist37-batchstats": {"model": {"name": "linear", "norm": {**BNGD, "stats": "batch"}}},
    "centroid": {},
    "toy-bngd": {"model": {"name": "linear", "norm": BNGD, "init": "zeros"}},
    "mlp-bn": {"model": {"name": "mlp", "depth": 2, "width": 64, "norm": "bn", "norm_layers": [1]}},
    "mlp-all-he-56": {"model": {"name": "mlp", "depth": 3, "width_ratio": 0.02, "norm": BNGD, "init": "he"}},
    "lenet-bn-adv": {"model": {"name": "lenet5", "norm": "bn"},
                     "train": {"lr": 0.01, "epochs": 1, "batch_size": 50, "momentum": 0.9, "adversarial": PGD}},
    "lenet-std": {"model": {"name": "lenet5", "input_norm": "image-std"}},
    "deep-linear-bn": {"model": {"name": "deep-linear", "depth": 4, "width": 20, "norm": "bn"}},
}


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_every_case_is_converted():
    assert set(NEW) == set(BEFORE)


@pytest.mark.parametrize("case", sorted(BEFORE))
def test_same_metrics_as_before(case, mnist_root, one_thread):
    old = BEFORE[case]
    cfg = resolve_config({**old["config"], **NEW[case]})
    record, model = run_config(cfg, mnist_root)
    assert record["status"] == old["status"]
    assert record["metrics"] == old["metrics"]
    weight_sum = float(sum(p.double().abs().sum() for p in model.state_dict().values() if p.is_floating_point()))
    assert math.isclose(weight_sum, old["weight_sum"], rel_tol=0, abs_tol=0)
