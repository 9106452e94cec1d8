"""VGG 8/11/13/16/19 for 32x32 inputs (bnrobust.models.vgg): every depth x norm builds and runs,
parameter counts match the architecture, where the norms go (norm_layers, including the input),
initialization, one training step, bf16 autocast on the CPU and channels_last."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnrobust.data import Dataset
from bnrobust.errors import BnrobustError
from bnrobust.models import MODELS, build_model
from bnrobust.models.norms import uses_batch_stats
from bnrobust.models.vgg import CONFIGS, num_convs

DEPTHS = (8, 11, 13, 16, 19)
NORMS = ("none", "bn", "gn", "ln")
NORM_TYPES = (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)


def images(n: int = 4, side: int = 32, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, side, side, generator=g)
    y = torch.arange(n) % 10
    return Dataset("img", x, y, x, y, 10, (-2.0, 2.0))


DS = images()


def norms_of(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, NORM_TYPES)]


def expected_params(depth: int, classifier: str = "3fc", norm_affine: bool = False) -> int:
    n, c_in = 0, 3
    for v in CONFIGS[depth]:
        if v != "M":
            n += 9 * c_in * v + v + (2 * v if norm_affine else 0)
            c_in = v
    return n + (512 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10 if classifier == "3fc" else 512 * 10 + 10)


def test_registered_names_and_convolution_counts():
    assert [f"vgg{d}" for d in DEPTHS] == [n for n in MODELS.names() if n.startswith("vgg")]
    assert [num_convs(d) for d in DEPTHS] == [5, 8, 10, 13, 16]
    assert MODELS.resolve("vgg8") == {"name": "vgg8", "norm": {"name": "none"}, "norm_layers": "all",
                                      "init": "kaiming", "classifier": "3fc", "width_factor": 1.0,
                                      "input_norm": {"name": "none"}}
    assert MODELS.describe("vgg8").startswith("VGG8 for 32x32 images: 5 3x3 convolutions (64/128/256/512/512")


@pytest.mark.parametrize("depth", DEPTHS)
def test_every_depth_and_norm_builds_and_runs(depth):
    x = DS.x_train[:2]
    for norm in NORMS:
        torch.manual_seed(0)
        model = build_model({"name": f"vgg{depth}", "norm": norm}, DS)
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        assert len(convs) == num_convs(depth) and [c.out_channels for c in convs] == [v for v in CONFIGS[depth]
                                                                                        if v != "M"]
        assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 3
        found = norms_of(model)
        assert uses_batch_stats(model) == (norm == "bn")
        if norm == "none":
            assert found == []
        else:
            assert len(found) == num_convs(depth)
            kind = {"bn": nn.BatchNorm2d, "gn": nn.GroupNorm, "ln": nn.GroupNorm}[norm]
            assert all(type(m) is kind for m in found)
            if norm == "ln":
                assert all(m.num_groups == 1 for m in found)
            if norm == "gn":
                assert all(m.num_groups == 32 for m in found)
        n_params = sum(p.numel() for p in model.parameters())
        assert n_params == expected_params(depth, norm_affine=norm != "none")
        model.eval()
        with torch.no_grad():
            out = model(x)
        assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_parameter_counts_match_the_known_cifar_vggs():
    """kuangliu/pytorch-cifar's VGG11 / VGG16 (BN after every convolution, one Linear(512, 10)) have
    9,231,114 / 14,728,266 parameters; the 3-layer classifier adds 2 x (512 x 512 + 512)."""
    for name, count in (("vgg11", 9231114), ("vgg16", 14728266)):
        model = build_model({"name": name, "norm": "bn", "classifier": "1fc"}, DS)
        assert sum(p.numel() for p in model.parameters()) == count
    assert expected_params(16) - expected_params(16, "1fc") == 2 * (512 * 512 + 512)
    assert sum(p.numel() for p in build_model("vgg8", DS).parameters()) == 4441226  # 3.9M convs + 0.53M fc


def test_norm_layers_and_the_input_layer():
    m = build_model({"name": "vgg8", "norm": "bn", "norm_layers": [0]}, DS)
    found = norms_of(m)
    assert len(found) == 1 and found[0].num_features == 3 and m.features[0] is found[0]  # before conv 1
    m = build_model({"name": "vgg8", "norm": {"name": "bn", "c": 1e3}, "norm_layers": [1, 5]}, DS)
    found = norms_of(m)
    assert [f.num_features for f in found] == [64, 512] and all(f.eps == 1e3 for f in found)
    assert isinstance(m.features[1], nn.BatchNorm2d) and isinstance(m.features[0], nn.Conv2d)
    assert norms_of(build_model({"name": "vgg8", "norm_layers": [0, 1]}, DS)) == []  # norm none: nothing
    with pytest.raises(BnrobustError, match=r"model\.norm_layers must be 'all' or layers in 0\.\.5 "):
        build_model({"name": "vgg8", "norm": "bn", "norm_layers": [6]}, DS)
    with pytest.raises(BnrobustError, match=r"^model\.norm_layers"):
        build_model({"name": "vgg8", "norm": "bn", "norm_layers": [-1]}, DS)
    assert len(norms_of(build_model({"name": "vgg19", "norm": "gn", "norm_layers": [0, 16]}, DS))) == 2


def test_initialization():
    torch.manual_seed(0)
    m = build_model("vgg13", DS)  # kaiming (default): He normal, fan_out for convs, fan_in for linears
    for mod in m.modules():
        if isinstance(mod, nn.Conv2d):
            want = math.sqrt(2.0 / (9 * mod.out_channels))
            assert abs(mod.weight.std().item() / want - 1) < 0.1 and mod.bias.abs().max() == 0
        elif isinstance(mod, nn.Linear):
            assert abs(mod.weight.std().item() / math.sqrt(2.0 / mod.in_features) - 1) < 0.1
            assert mod.bias.abs().max() == 0
    torch.manual_seed(0)
    d = build_model({"name": "vgg13", "init": "default"}, DS)
    conv = next(mod for mod in d.modules() if isinstance(mod, nn.Conv2d) and mod.in_channels == 64)
    assert abs(conv.weight.std().item() / math.sqrt(1.0 / (3 * 9 * 64)) - 1) < 0.1 and conv.bias.abs().max() > 0
    # without a norm, PyTorch's default init leaves a far smaller signal at the logits than He's
    x = images(64).x_train
    with torch.no_grad():
        assert d(x).std() < 0.2 * m(x).std()


@pytest.mark.parametrize("norm", NORMS)
def test_one_training_step(norm):
    torch.manual_seed(0)
    model = build_model({"name": "vgg8", "norm": norm}, DS)
    ds = images(16, seed=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    model.train()
    before = [p.detach().clone() for p in model.parameters()]
    losses = []
    for _ in range(3):
        loss = F.cross_entropy(model(ds.x_train), ds.y_train)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


@pytest.mark.parametrize("norm", NORMS)
def test_bf16_autocast_on_cpu(norm):
    torch.manual_seed(0)
    model = build_model({"name": "vgg11", "norm": norm}, DS).train()
    x = DS.x_train
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.shape == (4, 10) and out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    F.cross_entropy(out.float(), DS.y_train).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_channels_last_gives_the_same_outputs():
    torch.manual_seed(0)
    model = build_model({"name": "vgg8", "norm": "bn"}, DS).eval()
    x = DS.x_train
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-4)


def test_width_factor_classifier_and_image_sizes():
    m = build_model({"name": "vgg8", "width_factor": 0.25, "classifier": "1fc"}, DS)
    assert [c.out_channels for c in m.modules() if isinstance(c, nn.Conv2d)] == [16, 32, 64, 128, 128]
    assert [(lin.in_features, lin.out_features) for lin in m.modules() if isinstance(lin, nn.Linear)] == [(128, 10)]
    m = build_model({"name": "vgg8", "width_factor": 0.5}, DS)
    assert [lin.out_features for lin in m.modules() if isinstance(lin, nn.Linear)] == [256, 256, 10]
    big = images(2, side=64)
    assert build_model("vgg11", big)(big.x_train).shape == (2, 10)  # 64x64: 512 x 2 x 2 features
    with pytest.raises(BnrobustError, match=r"vgg8 needs square \[C, H, W\] images with a side divisible by 32"):
        build_model("vgg8", images(2, side=28))
    with pytest.raises(BnrobustError, match=r"^model\.width_factor: Input should be greater than 0"):
        build_model({"name": "vgg8", "width_factor": 0}, DS)
    with pytest.raises(BnrobustError, match=r"^model\.depth: model 'vgg8' has no option 'depth'"):
        build_model({"name": "vgg8", "depth": 8}, DS)


def test_input_norm_is_the_first_layer():
    m = build_model({"name": "vgg8", "input_norm": "image-std"}, DS).eval()
    x = DS.x_train
    with torch.no_grad():
        assert torch.allclose(m(x), m(3 * x + 1), atol=1e-4)  # per-image standardization removes affine changes
