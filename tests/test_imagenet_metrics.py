"""The `topk` and `transfer` metrics: top-1 agrees with the existing clean/awgn/pgd metrics on the
same model and data, and a transfer target identical to the source gives the white-box number."""
from __future__ import annotations

import pytest
import torch

from bnrobust.config import resolve_config
from bnrobust.errors import BnrobustError
from bnrobust.eval import EVALS, EvalContext
from bnrobust.models import build_model

PGD = {"name": "pgd", "eps": 0.2, "steps": 5, "step_size": 0.05}
MLP = {"name": "mlp", "depth": 1, "width": 16}


def _metric(spec, model, ds, seed=0, bs=100):
    return EVALS.build(spec, "eval.metrics.m", model=model, ds=ds, ctx=EvalContext(bs, seed, ds.clip, torch.device("cpu")))


@pytest.fixture
def model(blobs):
    torch.manual_seed(0)
    return build_model(MLP, blobs)


def test_topk_top1_matches_the_existing_metrics(model, blobs):
    clean, top = _metric({"name": "clean"}, model, blobs), _metric({"name": "topk", "k": [1, 2]}, model, blobs)
    assert top["top1"] == clean["acc"] and top["loss"] == pytest.approx(clean["loss"], rel=1e-6)
    assert top["top2"] == 100.0  # 2 classes
    noisy = _metric({"name": "topk", "sigma": 0.3}, model, blobs)
    assert noisy["top1"] == _metric({"name": "awgn", "sigma": 0.3}, model, blobs)["acc"]
    adv = _metric({"name": "topk", "attack": PGD}, model, blobs)
    assert adv["top1"] == _metric({"name": "pgd", **{k: v for k, v in PGD.items() if k != "name"}}, model, blobs)["acc"]
    assert adv["top1"] < top["top1"]
    assert _metric({"name": "topk", "n": 10}, model, blobs, bs=3)["top1"] == \
        _metric({"name": "clean"}, model, blobs.head(10), bs=3)["acc"]
    with pytest.raises(BnrobustError, match="takes sigma \\(noise\\) or attack, not both"):
        _metric({"name": "topk", "sigma": 0.3, "attack": PGD}, model, blobs)


def test_transfer_to_itself_is_white_box(model, blobs):
    out = _metric({"name": "transfer", "targets": {"self": MLP, "wider": {**MLP, "width": 32}}, "attack": PGD},
                  model, blobs)
    assert out["self"]["top1"] == _metric({"name": "topk", "attack": PGD}, model, blobs)["top1"]
    assert set(out) == {"self", "wider"} and set(out["wider"]) == {"top1", "top5", "loss"}


def test_transfer_targets_are_checked_with_the_config():
    cfg = {"data": {"name": "gaussian-2d"}, "model": MLP, "train": {"epochs": 0}, "seed": 0,
           "eval": {"metrics": {"t": {"name": "transfer", "targets": {"a": {"name": "nope"}}, "attack": PGD}}}}
    with pytest.raises(BnrobustError, match=r"^eval.metrics.t.targets: .*targets.a: unknown model 'nope'") as e:
        resolve_config(cfg)
    assert "\n" not in str(e.value)
    cfg["eval"]["metrics"]["t"]["targets"] = {"a.b": MLP}
    with pytest.raises(BnrobustError, match="target label 'a.b' must be non-empty and contain no '.'"):
        resolve_config(cfg)
    cfg["eval"]["metrics"]["t"]["targets"] = {"a": MLP}
    resolved = resolve_config(cfg)["eval"]["metrics"]["t"]
    assert resolved["targets"]["a"]["width"] == 16 and resolved["targets"]["a"]["norm"] == {"name": "none"}
