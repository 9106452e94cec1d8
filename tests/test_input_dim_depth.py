"""Sections B and C building blocks: upscaled MNIST, noise before upscaling, the MLP and
deep linear models, LeNet-5, adversarial training, lr per example, ratio columns."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bnrobust.data import Dataset, NearestUpscale
from bnrobust.data.mnist import mnist
from bnrobust.data.synthetic import spheres
from bnrobust.experiments.base import Column, Experiment, Results
from bnrobust.runner.storage import Run
from bnrobust.errors import BnrobustError
from bnrobust.eval import EVALS, EvalContext, accuracy_and_loss
from bnrobust.models import build_model
from bnrobust.train import TrainConfig, train


def _img_ds(n=64, side=28, classes=10, seed=0, transform=None) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, side, side, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return Dataset("img", x, y, x.clone(), y.clone(), classes, (0.0, 1.0), transform)


def test_nearest_upscale_is_pixel_replication():
    x = torch.rand(3, 1, 28, 28)
    up = NearestUpscale(3)(x)
    assert up.shape == (3, 1, 84, 84)
    ref = np.kron(x.numpy(), np.ones((1, 1, 3, 3), dtype=np.float32))  # PIL NEAREST for integer factors
    assert np.array_equal(up.numpy(), ref)


def test_upscaled_mnist_keeps_28x28_in_memory(mnist_root):
    ds = mnist(mnist_root, 0, n_train=100, n_test=50, size=84)
    assert ds.x_train.shape == (100, 1, 28, 28) and ds.input_shape == (1, 84, 84)
    assert ds.name == "mnist84" and len(ds.x_test) == 50
    assert torch.equal(ds.prepare(ds.x_test[:2])[:, :, ::3, ::3], ds.x_test[:2])
    with pytest.raises(BnrobustError, match="multiple of 28"):
        mnist(mnist_root, 0, size=50)
    with pytest.raises(BnrobustError, match="n_test"):
        mnist(mnist_root, 0, n_test=0)


def test_noise_before_upscaling_is_blockwise():
    ds = _img_ds(n=8, transform=NearestUpscale(2))
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return torch.zeros(len(x), 10)

    ctx = EvalContext(0, 0, (0.0, 1.0), torch.device("cpu"))
    EVALS.get("awgn")(Spy(), ds, ctx, sigma=1.0, clip=False, before_transform=True)
    EVALS.get("awgn")(Spy(), ds, ctx, sigma=1.0, clip=False, before_transform=False)
    before, after = seen
    assert before.shape == after.shape == (8, 1, 56, 56)
    assert torch.equal(before[:, :, 0::2, 0::2], before[:, :, 1::2, 1::2])  # one noise value per 2x2 block
    assert not torch.equal(after[:, :, 0::2, 0::2], after[:, :, 1::2, 1::2])


def test_mlp_bn_placement_width_and_validation():
    ds = _img_ds(side=28)
    m = build_model({"name": "mlp", "depth": 2, "width_ratio": 0.5, "norm": "bn", "norm_layers": [1]}, ds)
    kinds = [type(layer).__name__ for layer in m]
    assert kinds == ["Flatten", "Linear", "BatchNorm1d", "ReLU", "Linear", "ReLU", "Linear"]
    assert m[1].out_features == 392
    deep = build_model({"name": "mlp", "depth": 5, "width": 16, "norm": {"name": "bn", "c": 1e-3},
                        "norm_layers": "all", "init": "he"}, ds)
    bns = [layer for layer in deep if isinstance(layer, torch.nn.BatchNorm1d)]
    assert len(bns) == 5 and all(b.eps == 1e-3 for b in bns)
    w = deep[4].weight.detach()  # second hidden Linear, He init: variance 2 / fan_in
    assert abs(float(w.var()) - 2 / 16) < 0.05
    for bad, msg in (({"depth": 2}, "exactly one of width"),
                     ({"width": 8, "norm": "bn", "norm_layers": [3]}, r"model\.norm_layers must be .* 1\.\.2, got \[3\]"),
                     ({"width": 8, "init": "xavier"}, r"^model\.init: Input should be 'default' or 'he'"),
                     ({"width": 8, "norm": {"name": "bn", "c": 0}}, r"^model\.norm\.c: Input should be greater than 0"),
                     ({"width": 8, "bn_layers": [1]},
                      r"^model\.bn_layers: model 'mlp' has no option 'bn_layers' \(did you mean norm_layers\?\)")):
        with pytest.raises(BnrobustError, match=msg):
            build_model({"name": "mlp", **bad}, ds)


def test_deep_linear_representations_depend_on_the_batch_only_with_bn():
    ds = spheres(Path("."), 0, n_train=200, n_test_per_class=10)
    a, b = ds.x_train[:50], ds.x_train[50:100]
    for bn in (False, True):
        torch.manual_seed(0)
        m = build_model({"name": "deep-linear", "depth": 14, "width": 32, "norm": "bn" if bn else "none"}, ds).train()
        reps = m.representations(a)
        assert len(reps) == 14 and reps[-1].shape == (50, 32)
        alone = m.representations(a[:25])[1]
        mixed = m.representations(torch.cat([a[:25], b[:25]]))[1][:25]
        assert torch.allclose(alone, mixed, atol=1e-5) != bn


def test_lenet5_shapes_bn_and_per_image():
    ds = _img_ds(n=8)
    for spec in ({}, {"norm": "bn"}, {"input_norm": "image-std"}):
        m = build_model({"name": "lenet5", **spec}, ds)
        assert m(ds.x_test).shape == (8, 10)
    assert sum(isinstance(x, torch.nn.BatchNorm2d) for x in build_model({"name": "lenet5", "norm": "bn"}, ds).modules()) == 2
    with pytest.raises(BnrobustError, match="square"):
        build_model({"name": "lenet5"}, Dataset("v", torch.zeros(4, 20), torch.zeros(4).long(), torch.zeros(4, 20),
                                                  torch.zeros(4).long(), 2, None))


def test_pgd_training_makes_a_model_more_robust(blobs):
    from bnrobust import attacks

    def robust_acc(adv_eps):
        torch.manual_seed(0)
        m = build_model({"name": "mlp", "depth": 2, "width": 64}, blobs)
        adversarial = {"name": "pgd", "eps": adv_eps, "steps": 5, "step_size": 0.02, "random_start": True}
        cfg = TrainConfig(lr=0.5, epochs=30, batch_size=100, momentum=0.9,
                          adversarial=adversarial if adv_eps > 0 else None)
        assert blobs.clip == (0.0, 1.0)  # adversarial examples stay in the data's range
        assert train(m, blobs, cfg, 0).status == "ok"
        return accuracy_and_loss(m, blobs.x_test, blobs.y_test, lambda x, y: attacks.pgd(
            m, x, y, 0.05, 10, 0.01, clip=(0.0, 1.0)))[0]
    assert robust_acc(0.05) > robust_acc(0.0) + 10
    with pytest.raises(BnrobustError, match=r"^train\.adversarial\.eps: Input should be greater than or equal to 0"):
        TrainConfig(adversarial={"name": "pgd", "eps": -1, "steps": 5, "step_size": 0.02})


def test_lr_per_example_scales_the_step_by_the_batch_size(blobs):
    def weights(cfg):
        torch.manual_seed(0)
        m = build_model({"name": "linear"}, blobs)
        train(m, blobs, cfg, 0)
        return m.linear.weight.detach()
    a = weights(TrainConfig(lr=1e-3, lr_per_example=True, epochs=1, batch_size=50))
    b = weights(TrainConfig(lr=0.05, epochs=1, batch_size=50))
    assert torch.allclose(a, b)


def test_ratio_columns_pair_seeds(tmp_path):
    exp = Experiment("t", "", "", "", {}, {"base": {}, "big": {}}, {"quick": 2}, ratio_to={"big": "base"})
    runs = []
    for v, vals in (("base", (2.0, 4.0)), ("big", (1.0, 1.0))):
        for seed, val in enumerate(vals):
            run = Run(v, seed, {}, tmp_path / f"{v}{seed}")
            run.__dict__["record"] = {"status": "ok", "metrics": {"m": val}}
            run.dir.mkdir()
            (run.dir / "record.json").write_text("{}")
            runs.append(run)
    r = Results(exp, "quick", runs)
    mean, sem, n = r.cell("big", Column("m", "m", relative=True))
    assert n == 2 and math.isclose(mean, (0.5 + 0.25) / 2) and math.isclose(sem, 0.125)
    assert r.cell("base", Column("m", "m", relative=True))[0] == 3.0  # the baseline row stays absolute
    assert r.cell("big", Column("m", "m"))[0] == 1.0
