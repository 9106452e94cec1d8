"""The normalization factory: every model family takes every norm the same way."""
import pytest
import torch
from torch import nn

from bnrobust.data import Dataset
from bnrobust.errors import BnrobustError
from bnrobust.models import MODELS, build_model
from bnrobust.models.norms import NORMS, make_norm, uses_batch_stats
from bnrobust.train import TrainConfig, train

NORM_LAYERS = {"none": (), "bn": (nn.BatchNorm1d, nn.BatchNorm2d), "gn": (nn.GroupNorm,),
               "ln": (nn.LayerNorm, nn.GroupNorm)}


def _images(n=64, side=8):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, side, side, generator=g)
    y = (x.mean((1, 2, 3)) > 0.5).long()
    return Dataset("imgs", x, y, x, y, 2, (0.0, 1.0))


FAMILIES = {
    "linear": {"name": "linear"},
    "mlp": {"name": "mlp", "depth": 2, "width": 16},
    "deep-linear": {"name": "deep-linear", "depth": 3, "width": 8},
    "lenet5": {"name": "lenet5"},
}


# Families whose every-norm tests live in their own file (they need other inputs than _images).
TESTED_ELSEWHERE = {f"vgg{d}" for d in (8, 11, 13, 16, 19)}  # tests/test_vgg.py: 32x32, every depth x norm
# tests/test_resnets.py: the CIFAR ResNets and WideResNets (bn, gn, ln, none, fixup), Table 15's CNN
TESTED_ELSEWHERE |= {f"resnet{d}" for d in (20, 32, 44, 56, 110)} | {"wrn", "simple-cnn"}
# tests/test_imagenet_models.py: the ImageNet architectures (224x224, published weights), every norm
TESTED_ELSEWHERE |= {f"imagenet-vgg{d}" for d in (11, 13, 16, 19)} | {"imagenet-alexnet", "imagenet-resnet18"} \
    | {f"bagnet{q}" for q in (9, 17, 33)}


def test_every_model_family_is_covered():
    assert set(FAMILIES) | {"nearest-centroid"} | TESTED_ELSEWHERE == set(MODELS.names())


@pytest.mark.parametrize("norm", ["none", "bn", "gn", "ln"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_takes_every_norm(family, norm):
    ds = _images()
    model = build_model({**FAMILIES[family], "norm": norm}, ds)
    kinds = {type(m) for m in model.modules()}
    if norm == "none":
        assert not kinds & {nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm}
    else:
        assert kinds & set(NORM_LAYERS[norm])
    assert uses_batch_stats(model) == (norm == "bn")
    res = train(model, ds, TrainConfig(lr=0.05, epochs=2, batch_size=16), seed=0)
    assert res.status == "ok" and len(res.history) == 2
    assert model(ds.x_test).shape == (len(ds.x_test), 2)


def test_bn_options_map_to_the_layer():
    bn = make_norm({"name": "bn", "c": 0.5, "affine": "fixed", "stats": "batch", "momentum": 0.3}, 7, dims=1)
    assert isinstance(bn, nn.BatchNorm1d) and bn.eps == 0.5 and bn.weight is None
    assert not bn.track_running_stats and bn.momentum == 0.3
    torch.manual_seed(0)
    learned = make_norm({"name": "bn", "gamma_init": "uniform"}, 50, dims=2)
    assert isinstance(learned, nn.BatchNorm2d) and 0 < float(learned.weight.detach().min()) < float(learned.weight.detach().max()) < 1


def test_group_norm_uses_a_divisor_of_the_channels():
    assert make_norm({"name": "gn", "groups": 32}, 48, dims=2).num_groups == 24
    assert make_norm({"name": "gn", "groups": 4}, 10, dims=1).num_groups == 2


def test_layer_norm_on_feature_maps_is_one_group():
    ln = make_norm("ln", 6, dims=2)
    assert isinstance(ln, nn.GroupNorm) and ln.num_groups == 1


@pytest.mark.parametrize("spec, msg", [
    ("weird", "unknown norm 'weird'"),
    ({"name": "bn", "c": 0}, "c: Input should be greater than 0"),
    ({"name": "bn", "affine": "yes"}, "affine: Input should be 'learned' or 'fixed'"),
    ({"name": "gn", "eps": 1e-5}, "has no option 'eps'"),
])
def test_bad_norm_specs_are_one_line(spec, msg):
    with pytest.raises(BnrobustError, match=msg):
        NORMS.resolve(spec, "model.norm")


def test_fixup_needs_a_residual_model():
    with pytest.raises(BnrobustError, match="fixup.*residual"):
        build_model({"name": "mlp", "width": 4, "norm": "fixup"}, _images())
