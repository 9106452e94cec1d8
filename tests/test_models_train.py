import math

import pytest
import torch

from bnrobust.data import Dataset
from bnrobust.errors import BnrobustError
from bnrobust.models import build_model
from bnrobust.models.linear import LinearClassifier
from bnrobust.train import TrainConfig, train


def test_bn_modes(toy):
    fixed = build_model({"name": "linear", "norm": {"name": "bn", "affine": "fixed"}}, toy)
    assert fixed.norm.weight is None and fixed.norm.eps == 1e-5
    learned = build_model({"name": "linear", "norm": {"name": "bn", "gamma_init": "uniform", "c": 0.5}}, toy)
    g = learned.norm.weight.detach()
    assert learned.norm.eps == 0.5 and bool(((g >= 0) & (g <= 1)).all()) and not torch.allclose(g, torch.ones_like(g))
    untracked = build_model({"name": "linear", "norm": {"name": "bn", "affine": "fixed", "stats": "batch"}}, toy)
    assert untracked.norm.running_var is None
    assert isinstance(build_model({"name": "linear"}, toy).norm, torch.nn.Identity)


@pytest.mark.parametrize("spec, match", [
    ({"name": "linear", "norm": "maybe"}, r"^model\.norm: unknown norm 'maybe'"),
    ({"name": "linear", "norm": {"name": "bn", "c": -1}}, r"^model\.norm\.c: Input should be greater than 0 \(got -1\)"),
    ({"name": "linear", "bn": "fixed"}, r"^model\.bn: model 'linear' has no option 'bn'"),  # the old option name
    ({"name": "linear", "c": 1e-3}, r"^model\.c: model 'linear' has no option 'c'"),   # c lives in the norm spec now
    ({"name": "linear", "depth": 3}, r"^model\.depth: model 'linear' has no option 'depth'"),
    ({"name": "resnet9000"}, "unknown model"),
])
def test_bad_model_options(toy, spec, match):
    with pytest.raises(BnrobustError, match=match):
        build_model(spec, toy)


@pytest.mark.parametrize("track", [True, False])
def test_input_space_weights_are_the_input_gradient(toy, track):
    """w * gamma / sqrt(var + c) must be exactly how the logit difference responds to x."""
    torch.manual_seed(0)
    norm = {"name": "bn", "gamma_init": "uniform", "c": 0.3, "stats": "tracked" if track else "batch"}
    model = LinearClassifier(2, 2, norm=norm)
    assert model.norm.track_running_stats == track
    train(model, toy, TrainConfig(lr=0.1, epochs=3, batch_size=50), seed=0)
    model.eval()
    x = toy.x_test[:500]
    w = model.input_space_weights(x)
    if track:  # per-example gradient of the logit difference
        xg = x.clone().requires_grad_(True)
        out = model(xg)
        (grad,) = torch.autograd.grad((out[:, 1] - out[:, 0]).sum(), xg)
        assert torch.allclose(grad, (w[1] - w[0]).expand_as(grad), atol=1e-5)
    else:  # batch statistics: logits are affine in x with the batch's (biased) variance
        mu = x.mean(0)
        expected = (x - mu) @ w.T + model.linear.bias + model.norm.bias @ model.linear.weight.T
        assert torch.allclose(model(x), expected, atol=1e-4)


def test_nearest_centroid_predicts_the_closer_mean(toy):
    model = build_model({"name": "nearest-centroid"}, toy)
    x = toy.x_test
    m0, m1 = toy.x_train[toy.y_train == 0].mean(0), toy.x_train[toy.y_train == 1].mean(0)
    expect = ((x - m1).norm(dim=1) < (x - m0).norm(dim=1)).long()
    assert torch.equal(model(x).argmax(1), expect)


def test_training_is_deterministic_and_learns(toy):
    def fit(seed):
        torch.manual_seed(seed)
        m = LinearClassifier(2, 2, norm={"name": "bn", "affine": "fixed"})
        res = train(m, toy, TrainConfig(lr=0.1, epochs=5, batch_size=32), seed)
        return m, res
    a, ra = fit(0)
    b, _ = fit(0)
    c, _ = fit(1)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.linear.weight, c.linear.weight)
    assert ra.status == "ok" and ra.history[-1]["loss"] < ra.history[0]["loss"] and ra.history[-1]["acc"] > 95


def test_divergence_is_recorded_as_failed(toy):
    torch.manual_seed(0)
    model = LinearClassifier(2, 2)
    x = toy.x_train * 1e20  # logits overflow to inf/nan at once
    res = train(model, Dataset.from_tensors(x, toy.y_train, 2), TrainConfig(lr=1e10, epochs=5, batch_size=0), seed=0)
    assert res.status == "failed" and "non-finite" in res.reason and len(res.history) <= 2


@pytest.mark.parametrize("bad, match", [
    ({"lr": 0}, r"^train\.lr: Input should be greater than 0"),
    ({"lr": float("nan")}, r"^train\.lr: Input should be a finite number"),
    ({"epochs": -1}, r"^train\.epochs: Input should be greater than or equal to 0"),
    ({"batch_size": 1.5}, r"^train\.batch_size: Input should be a valid integer"),
    ({"momentum": 1.0}, r"^train\.momentum: Input should be less than 1"),
    ({"schedule": "warp"}, r"^train\.schedule: Input should be 'constant', 'step' or 'cosine'"),
    ({"learning_rate": 0.1}, r"^train\.learning_rate: trainer 'sgd' has no option 'learning_rate'"),
])
def test_bad_train_config(bad, match):
    with pytest.raises(BnrobustError, match=match):
        TrainConfig.from_dict(bad)
    if "no option" not in match:  # built in Python, a bad value is checked the same way
        with pytest.raises(BnrobustError, match=match):
            TrainConfig(**bad)


def test_step_schedule():
    from bnrobust.train.trainer import _lr_at
    cfg = TrainConfig(lr=0.1, epochs=10, schedule="step", milestones=[3, 6], gamma=0.1)
    assert [round(_lr_at(cfg, e), 6) for e in (0, 3, 6)] == [0.1, 0.01, 0.001]
    assert math.isclose(_lr_at(TrainConfig(lr=1.0, epochs=4, schedule="cosine"), 2), 0.5)
