"""Residual networks and Table 15's CNN (bnrobust.models.{resnet,wrn,simple_cnn}): registry names,
output shapes, parameter counts against the published ones, Fixup's structure and initialization
(no norm layer, identity blocks, zero logits), training steps and gradient flow, bad options."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnrobust.data import Dataset
from bnrobust.errors import BnrobustError
from bnrobust.models import MODELS, build_model
from bnrobust.models.norms import ScalarBias, ScalarScale, uses_batch_stats
from bnrobust.models.resnet import BasicBlock, FixupBlock
from bnrobust.models.wrn import FixupWideBlock, WideBlock

RESNETS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")
NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
SMALL_WRN = {"name": "wrn", "depth": 10, "widen": 2}


def images(n: int = 4, channels: int = 3, side: int = 32, classes: int = 10, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, side, side, generator=g)
    y = torch.arange(n) % classes
    return Dataset("img", x, y, x, y, classes, (-2.0, 2.0))


DS = images()


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def norms_of(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, NORM_TYPES)]


def build_meta(spec: dict, ds: Dataset = DS) -> nn.Module:
    """Build without allocating or initializing weights (for counting the big networks)."""
    with torch.device("meta"):
        return build_model(spec, ds)


# -- expected sizes, computed from the architectures' definitions ------------------------------


def resnet_size(depth: int, norm: str = "bn", shortcut_norm: bool = True, classes: int = 10) -> int:
    n, c_in = (depth - 2) // 6, 16
    weights, normed = 9 * 3 * 16, 16  # stem
    for w in (16, 32, 64):
        for _ in range(n):
            weights += 9 * c_in * w + 9 * w * w
            normed += 2 * w + (c_in if c_in != w and shortcut_norm else 0)
            c_in = w
    weights += 64 * classes + classes
    return weights + {"bn": 2 * normed, "none": 0, "fixup": 5 * 3 * n + 2}[norm]


def wrn_size(depth: int, widen: int, norm: str = "bn", final_bn: bool = True, classes: int = 10) -> int:
    n, c_in = (depth - 4) // 6, 16
    weights, normed = 9 * 3 * 16, 0
    for w in (16 * widen, 32 * widen, 64 * widen):
        for _ in range(n):
            weights += 9 * c_in * w + 9 * w * w + (c_in * w if c_in != w else 0)
            normed += c_in + w
            c_in = w
    weights += c_in * classes + classes
    if norm == "fixup":
        return weights + 5 * 3 * n + (2 * c_in if final_bn else 0)
    return weights + (0 if norm == "none" else 2 * (normed + c_in))


# -- names, shapes, sizes ----------------------------------------------------------------------


def test_registered_names_and_defaults():
    names = MODELS.names()
    assert all(name in names for name in (*RESNETS, "wrn", "simple-cnn"))
    assert MODELS.resolve("resnet20") == {"name": "resnet20", "norm": {"name": "bn", "c": 1e-5, "affine": "learned",
                                                                      "stats": "tracked", "momentum": 0.1,
                                                                      "gamma_init": "ones"},
                                          "shortcut_norm": True, "zero_init_residual": True, "final_bn": None,
                                          "input_norm": {"name": "none"}, "bias_lr": 0.1}
    wrn = MODELS.resolve("wrn")
    assert (wrn["depth"], wrn["widen"], wrn["norm"]["name"], wrn["final_bn"], wrn["fixup_init"]) == (28, 10, "bn", None,
                                                                                                    "fixup")
    assert MODELS.describe("resnet110").startswith("ResNet-110 for CIFAR (He et al., 2016): 3 stages of 18 basic")
    assert MODELS.describe("wrn").startswith("WideResNet-depth-widen")
    assert MODELS.describe("simple-cnn").startswith("The paper's simple CNN for SVHN (Table 15")


@pytest.mark.parametrize("name", RESNETS)
def test_resnets_build_run_and_have_the_published_size(name):
    """He et al. (2016), Table 6: 0.27M, 0.46M, 0.66M, 0.85M, 1.7M parameters."""
    depth = int(name[6:])
    x = DS.x_train[:2]
    for norm in ("bn", "fixup", "none"):
        torch.manual_seed(0)
        model = build_model({"name": name, "norm": norm}, DS).eval()
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        assert len(convs) + 1 == depth  # 6n + 1 convolutions and the classifier
        assert n_params(model) == resnet_size(depth, norm)
        with torch.no_grad():
            out = model(x)
        assert out.shape == (2, 10) and torch.isfinite(out).all()
    published = {20: 0.27e6, 32: 0.46e6, 44: 0.66e6, 56: 0.85e6, 110: 1.7e6}[depth]
    digits = 1 if depth == 110 else 2
    assert round(resnet_size(depth, shortcut_norm=False) / 1e6, digits) * 1e6 == pytest.approx(published)
    assert n_params(build_meta({"name": name, "shortcut_norm": False})) == resnet_size(depth, shortcut_norm=False)


def test_wrn_sizes_match_the_published_ones():
    """Zagoruyko & Komodakis (2016): WRN-40-4 8.9M, WRN-16-8 11.0M, WRN-28-10 36.5M parameters."""
    for depth, widen, published in ((40, 4, 8.9), (16, 8, 11.0), (28, 10, 36.5)):
        model = build_meta({"name": "wrn", "depth": depth, "widen": widen})
        assert n_params(model) == wrn_size(depth, widen)
        assert round(n_params(model) / 1e6, 1) == published
        assert sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in model.modules()) + 1 == depth - 2
    assert wrn_size(28, 10) == 36479194  # the count xternalz/WideResNet-pytorch prints
    for spec, size in (({"norm": "fixup"}, wrn_size(28, 10, "fixup")),
                       ({"norm": "fixup", "final_bn": False}, wrn_size(28, 10, "fixup", final_bn=False)),
                       ({"norm": "fixup", "fixup_init": "paper-code"}, wrn_size(28, 10, "fixup") - 3 * 3 * 4)):
        assert n_params(build_meta({"name": "wrn", **spec})) == size  # paper-code: one bias per block, not four


def test_small_wrns_run_on_other_inputs():
    for depth, widen in ((10, 2), (16, 4)):
        for norm in ("bn", "fixup", "gn", "ln", "none"):
            model = build_model({"name": "wrn", "depth": depth, "widen": widen, "norm": norm}, DS)
            assert n_params(model) == wrn_size(depth, widen, {"gn": "bn", "ln": "bn"}.get(norm, norm))
            with torch.no_grad():
                assert model.eval()(DS.x_train[:2]).shape == (2, 10)
    gray = images(2, channels=1, side=28, classes=7)
    for spec in (SMALL_WRN, {"name": "resnet20", "norm": "fixup"}, {"name": "simple-cnn", "norm": "bn"}):
        with torch.no_grad():
            assert build_model(spec, gray).eval()(gray.x_train).shape == (2, 7)


def test_other_norms_are_where_bn_is():
    for norm, kind, groups in (("gn", nn.GroupNorm, 16), ("ln", nn.GroupNorm, 1)):
        r = build_model({"name": "resnet20", "norm": norm}, DS)
        found = norms_of(r)
        assert len(found) == 1 + 2 * 9 + 2 and all(type(m) is kind for m in found)  # stem, 2 per block, 2 shortcuts
        assert found[0].num_groups == groups and not uses_batch_stats(r)
        w = build_model({**SMALL_WRN, "norm": norm}, DS)
        assert len(norms_of(w)) == 2 * 3 + 1 and all(type(m) is kind for m in norms_of(w))
    assert norms_of(build_model({"name": "resnet20", "norm": "none"}, DS)) == []
    assert len(norms_of(build_model({"name": "resnet20", "shortcut_norm": False}, DS))) == 1 + 2 * 9
    assert norms_of(build_model({**SMALL_WRN, "norm": "none"}, DS)) == []


# -- Fixup -------------------------------------------------------------------------------------


def test_fixup_networks_have_no_norm_layer_but_the_optional_final_bn():
    r = build_model({"name": "resnet56", "norm": "fixup"}, DS)
    assert norms_of(r) == [] and not uses_batch_stats(r)
    r = build_model({"name": "resnet32", "norm": "fixup", "final_bn": True}, DS)
    assert [type(m) for m in norms_of(r)] == [nn.BatchNorm2d] and r.final_norm.num_features == 64
    w = build_model({**SMALL_WRN, "norm": "fixup"}, DS)  # default: the paper's one BN before the classifier
    assert [type(m) for m in norms_of(w)] == [nn.BatchNorm2d] and w.final_norm is norms_of(w)[0]
    assert norms_of(build_model({**SMALL_WRN, "norm": "fixup", "final_bn": False}, DS)) == []
    n_scalars = sum(isinstance(m, (ScalarBias, ScalarScale)) for m in r.modules())
    assert n_scalars == 5 * 15 + 2  # 4 biases + 1 multiplier per block, the stem's and the classifier's bias


def _block_io(model: nn.Module, kinds: tuple, x: torch.Tensor) -> list[tuple[nn.Module, torch.Tensor, torch.Tensor]]:
    seen = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append((mod, inp[0].detach(), out.detach())))
             for m in model.modules() if isinstance(m, kinds)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("spec", [{"name": "resnet20", "norm": "fixup"}, {"name": "resnet20", "norm": "bn"},
                                  {**SMALL_WRN, "norm": "fixup"}])
def test_every_residual_block_is_the_identity_at_init(spec):
    """Fixup: the last convolution of each branch is zero; BN: the last gamma is zero."""
    torch.manual_seed(0)
    model = build_model(spec, DS).eval()
    seen = _block_io(model, (FixupBlock, BasicBlock, FixupWideBlock), DS.x_train)
    assert len(seen) == (9 if spec["name"] == "resnet20" else 3)
    downsampling = 0
    for block, x, out in seen:
        with torch.no_grad():
            skip = block.skip(x)
        if isinstance(block, FixupWideBlock):
            assert torch.equal(out, skip)
        else:
            assert torch.equal(out, F.relu(skip))
        if out.shape != x.shape and spec["name"] == "resnet20" and spec["norm"] == "fixup":
            c = x.shape[1]  # option A as in Zhang et al.'s code: subsample, then zero channels after the input's
            assert torch.equal(skip[:, :c], x[:, :, ::2, ::2]) and skip[:, c:].abs().max() == 0 and skip.shape[1] == 2 * c
        downsampling += out.shape != x.shape
        if spec["norm"] == "fixup":
            assert block.conv2.weight.abs().max() == 0
        else:
            assert block.norm2.weight.abs().max() == 0
    assert downsampling == 2 + (spec["name"] == "wrn")  # the WRN's first block widens 16 -> 16k


def test_fixup_init_constants():
    torch.manual_seed(0)
    model = build_model({"name": "resnet110", "norm": "fixup"}, DS)
    blocks = [b for b in model.modules() if isinstance(b, FixupBlock)]
    assert len(blocks) == 54
    conv = blocks[-1].conv1  # 64 x 64 x 3 x 3: He (fan_out) times L^(-1/(2m-2)) = 54^(-1/2)
    want = math.sqrt(2 / (9 * 64)) / math.sqrt(54)
    assert abs(conv.weight.std().item() / want - 1) < 0.05
    stem = model.stem[0]  # PyTorch's default init, as in Zhang et al.'s code: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert stem.weight.abs().max() <= 1 / math.sqrt(27) and abs(stem.weight.std().item() * math.sqrt(81) - 1) < 0.2
    assert model.fc.weight.abs().max() == 0 and model.fc.bias.abs().max() == 0
    w = build_model({"name": "wrn", "depth": 16, "widen": 4, "norm": "fixup"}, DS)
    b = [m for m in w.modules() if isinstance(m, FixupWideBlock)]
    assert abs(b[-1].conv1.weight.std().item() / (math.sqrt(2 / (9 * 256)) / math.sqrt(6)) - 1) < 0.05
    assert b[-1].conv2.weight.abs().max() == 0 and b[2].shortcut is not None  # b[2]: the first block of stage 2
    assert abs(b[2].shortcut.weight.std().item() / math.sqrt(2 / 128) - 1) < 0.05  # He, not rescaled
    # the paper's code: every convolution He-normal (so no identity branch), one shared bias per block
    torch.manual_seed(0)
    p = build_model({"name": "wrn", "depth": 16, "widen": 4, "norm": "fixup", "fixup_init": "paper-code"}, DS)
    b = [m for m in p.modules() if isinstance(m, FixupWideBlock)]
    assert abs(b[-1].conv2.weight.std().item() / math.sqrt(2 / (9 * 256)) - 1) < 0.05
    assert abs(b[-1].conv1.weight.std().item() / math.sqrt(2 / (9 * 256)) - 1) < 0.05
    assert b[0].bias0 is b[0].bias3 and b[0].bias0 is not b[1].bias0 and p.fc.weight.abs().max() == 0


def test_fixup_networks_output_zero_logits_at_init():
    x = DS.x_train
    for spec in ({"name": "resnet32", "norm": "fixup"}, {**SMALL_WRN, "norm": "fixup"},
                 {**SMALL_WRN, "norm": "fixup", "fixup_init": "paper-code"}):
        model = build_model(spec, DS).train()
        assert torch.equal(model(x), torch.zeros(4, 10))
    assert build_model("resnet20", DS)(x).abs().max() > 0  # the BN networks' classifier is not zero


# -- training ----------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [{"name": "resnet20", "norm": "bn"}, {"name": "resnet20", "norm": "fixup"},
                                  {**SMALL_WRN, "norm": "bn"}, {**SMALL_WRN, "norm": "fixup"},
                                  {**SMALL_WRN, "norm": "fixup", "fixup_init": "paper-code"},
                                  {"name": "simple-cnn", "norm": "bn"}])
def test_sgd_steps_reduce_the_loss_and_reach_every_parameter(spec):
    g = torch.Generator().manual_seed(1)  # 4 classes, each a noisy copy of its own random image
    y = torch.arange(16) % 4
    x = torch.randn(4, 3, 32, 32, generator=g)[y] + 0.5 * torch.randn(16, 3, 32, 32, generator=g)
    torch.manual_seed(0)
    model = build_model(spec, DS).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(6):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0] - 0.3, losses
    if spec.get("norm") == "fixup":
        assert losses[0] == pytest.approx(math.log(10), abs=1e-6)  # zero logits
        scalars = [m for m in model.modules() if isinstance(m, (ScalarBias, ScalarScale))]
        assert scalars and all(p.grad is not None and p.grad.abs().max() > 0 for m in scalars for p in m.parameters())
    assert all(p.grad is not None and p.grad.abs().max() > 0 for p in model.parameters())


def test_bf16_autocast_keeps_fixup_activations_in_bf16():
    model = build_model({"name": "resnet20", "norm": "fixup"}, DS)
    dtypes = []
    for conv in (m for m in model.modules() if isinstance(m, nn.Conv2d)):
        conv.register_forward_pre_hook(lambda mod, inp: dtypes.append(inp[0].dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(DS.x_train)
    assert out.dtype == torch.bfloat16 and set(dtypes[1:]) == {torch.bfloat16}  # the stem reads the fp32 input


def test_channels_last_and_input_norm():
    torch.manual_seed(0)
    model = build_model({"name": "resnet20", "norm": "bn", "zero_init_residual": False}, DS).eval()
    x = DS.x_train
    with torch.no_grad():
        ref = model(x)
        out = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-4)
    m = build_model({**SMALL_WRN, "input_norm": "image-std"}, DS).eval()
    with torch.no_grad():
        assert torch.allclose(m(x), m(3 * x + 1), atol=1e-4)


# -- Table 15's CNN ----------------------------------------------------------------------------


def test_simple_cnn_is_table_15():
    """Conv1 2.0k, Conv2 73.8k, Conv3 102.4k, Fc 2.6k, total 180.9k parameters for 1 x 32 x 32 inputs."""
    gray = images(2, channels=1)
    model = build_model("simple-cnn", gray)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    sizes = [n_params(m) for m in layers]
    assert sizes == [8 * 8 * 32 + 32, 6 * 6 * 32 * 64 + 64, 5 * 5 * 64 * 64 + 64, 256 * 10 + 10]
    assert all(abs(s - t) < 100 for s, t in zip(sizes, (2.0e3, 73.8e3, 102.4e3, 2.6e3)))
    assert sum(sizes) == n_params(model) == 180906 and round(n_params(model) / 1e3, 1) == 180.9
    assert [(c.kernel_size[0], c.stride[0]) for c in layers[:3]] == [(8, 2), (6, 2), (5, 1)]
    assert abs(layers[1].weight.std().item() * math.sqrt(6 * 6 * 32) - 1) < 0.05  # CleverHans: N(0, 1/fan_in)
    bn = build_model({"name": "simple-cnn", "norm": "bn"}, gray)
    assert [(type(m), m.num_features) for m in norms_of(bn)] == [(nn.BatchNorm2d, 32), (nn.BatchNorm2d, 64)]
    assert isinstance(bn.features[2], nn.BatchNorm2d) and isinstance(bn.features[5], nn.BatchNorm2d)  # after conv1, 2
    assert n_params(bn) == 180906 + 2 * (32 + 64)
    with torch.no_grad():  # 28 x 28: "same" 14, then 5, then 1 -> 64 features
        assert build_model("simple-cnn", images(2, 1, 28)).classifier[1].in_features == 64
        assert build_model("simple-cnn", DS)(DS.x_train).shape == (4, 10)


# -- bad options -------------------------------------------------------------------------------


@pytest.mark.parametrize("spec, ds, match", [
    ({"name": "wrn", "depth": 27}, DS, r"^model\.depth: a WideResNet has 6n\+4 layers, n >= 1 .*got 27$"),
    ({"name": "wrn", "depth": 4}, DS, r"^model\.depth: a WideResNet has 6n\+4 layers"),
    ({"name": "wrn", "widen": 0}, DS, r"^model\.widen: Input should be greater than or equal to 1"),
    ({"name": "wrn", "final_bn": True}, DS, r"^model\.final_bn and model\.fixup_init apply to norm 'fixup' only"),
    ({"name": "wrn", "fixup_init": "paper-code"}, DS, r"^model\.final_bn and model\.fixup_init apply to norm 'fixup'"),
    ({"name": "wrn", "norm": "fixup", "fixup_init": "zero"}, DS, r"^model\.fixup_init: Input should be 'fixup' or"),
    ({"name": "resnet20", "final_bn": False}, DS, r"^model\.final_bn applies to norm 'fixup' only"),
    ({"name": "resnet20", "depth": 20}, DS, r"^model\.depth: model 'resnet20' has no option 'depth'"),
    ({"name": "resnet21"}, DS, r"^model: unknown model 'resnet21' \(did you mean .*resnet20"),
    ({"name": "simple-cnn", "norm": "fixup"}, DS, r"fixup.*residual"),
    ({"name": "simple-cnn"}, images(2, 1, 24), r"^simple-cnn needs images of at least 27 x 27 pixels"),
    ({"name": "resnet20"}, Dataset("flat", torch.zeros(2, 5), torch.zeros(2).long(), torch.zeros(2, 5),
                                   torch.zeros(2).long(), 2, (0.0, 1.0)), r"^resnet20 needs \[C, H, W\] images"),
])
def test_bad_options_are_one_line(spec, ds, match):
    with pytest.raises(BnrobustError, match=match) as e:
        build_model(spec, ds)
    assert "\n" not in str(e.value)


def test_resnet_biases_and_scales_train_at_a_tenth_of_the_lr():
    """The authors' cifar_train.py: every parameter named *bias or *scale at lr/10 (bias_lr)."""
    from bnrobust.train import TrainConfig
    from bnrobust.train.trainer import param_groups
    for norm in ("fixup", "bn"):
        model = build_model({"name": "resnet20", "norm": norm}, DS)
        scaled = {n for n, p in model.named_parameters() if getattr(p, "lr_scale", 1.0) == 0.1}
        assert scaled and scaled == {n for n, _ in model.named_parameters() if "bias" in n or "scale" in n}
        groups = param_groups(model, TrainConfig())
        assert sorted(g["lr_scale"] for g in groups) == [0.1, 1.0]
    plain = build_model({"name": "resnet20", "norm": "fixup", "bias_lr": 1.0}, DS)
    assert len(param_groups(plain, TrainConfig())) == 1
