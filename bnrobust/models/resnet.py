"""CIFAR ResNets (He et al., 2016, section 4.2): `resnet20`, `resnet32`, `resnet44`, `resnet56`,
`resnet110` (appendix C, Fig. 4: batch-normalized vs Fixup ResNets of every depth; Fig. 5a).

A 3x3 stem convolution to 16 channels, then three stages of n basic blocks (16, 32, 64 channels,
the first block of stages 2 and 3 halves the resolution), global average pooling and one linear
layer: 6n + 2 weight layers. We follow the code the paper's authors trained these networks with,
AngusG/bn-advex-zhang-fixup (a fork of hongyi-zhang/Fixup, `cifar/models/{resnet,fixup_resnet}_cifar.py`,
whose models it leaves unchanged):

- Shortcuts are He et al.'s option A, parameter-free: subsample by the stride and append zero
  channels (Zhang's code appends them after the input's channels). The batch-normalized network
  of that code also batch-normalizes the subsampled input of the two downsampling shortcuts;
  `shortcut_norm=False` drops that norm (He et al.'s plain option A).
- norm "bn" (also "gn", "ln", "none", any spec of the norm factory): conv - norm - ReLU - conv -
  norm, add the shortcut, ReLU. Every convolution (no bias) is He-normal with fan_out; the last
  norm of each branch starts with gamma = 0 (`zero_init_residual`, Goyal et al., 2017, as in
  Zhang's code), so each block starts as the identity; the classifier keeps PyTorch's default init.
- norm "fixup" (Zhang et al., 2019, "Fixup Initialization: Residual Learning Without
  Normalization"): no normalization layer. Scalar biases (`ScalarBias`, zero) before each
  convolution, before each ReLU of the branch and before the classifier (`bias1a` conv1 `bias1b`
  ReLU `bias2a` conv2 `scale` `bias2b` in each block; `bias1` after the stem convolution, `bias2`
  before the linear layer); the downsampling shortcut reads the input plus `bias1a`. A scalar
  multiplier (`ScalarScale`, one) per branch. The first convolution of each branch is He-normal
  (fan_out) rescaled by L^(-1/(2m-2)) = L^(-1/2) (L = 3n residual branches, m = 2 layers per branch),
  the last one is zero, so every block starts as the identity; the classifier's weight and bias
  are zero, so the network outputs 0 logits at initialization. The stem convolution keeps
  PyTorch's default init, as in Zhang's code. `final_bn=True` adds one BatchNorm2d after the last
  stage (AngusG's `fixup_resnet32bn`, "one BN layer to match Andy Brock's implementation"); the
  paper's unnormalized ResNets (Fig. 4) have none, so the default is False.

Learning rates: Zhang's and the authors' training script (cifar_train.py) give every parameter whose
name contains "bias" or "scale" a tenth of the learning rate (in the batch-normalized network that
includes the norms' biases and the classifier's bias). `bias_lr` (default 0.1) marks those
parameters with `lr_scale`, which the trainer turns into their own SGD group; 1.0 turns it off.
"""
from __future__ import annotations

from typing import Annotated, Optional

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..errors import BnrobustError
from ..registry import Spec
from . import MODELS
from .norms import INPUT_NORMS, NORMS, ScalarBias, ScalarScale, make_input_norm, make_norm, norm_name

DEPTHS = (20, 32, 44, 56, 110)
WIDTHS = (16, 32, 64)
BRANCH_LAYERS = 2  # m: convolutions per residual branch (basic blocks)


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


def fixup_scale(num_branches: int, branch_layers: int = BRANCH_LAYERS) -> float:
    """Fixup's factor for the inner layers of a branch: L^(-1/(2m-2))."""
    return num_branches ** (-1.0 / (2 * branch_layers - 2))


class PadShortcut(nn.Module):
    """He et al.'s option A: keep every stride-th pixel, optionally normalize, append zero channels."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: nn.Module | None = None):
        super().__init__()
        self.stride, self.extra = stride, c_out - c_in
        self.norm = norm if norm is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x[:, :, ::self.stride, ::self.stride])
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))


class BasicBlock(nn.Module):
    """conv - norm - ReLU - conv - norm, plus the shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: Spec, shortcut_norm: bool):
        super().__init__()
        self.conv1, self.norm1 = conv3x3(c_in, c_out, stride), make_norm(norm, c_out, dims=2)
        self.conv2, self.norm2 = conv3x3(c_out, c_out), make_norm(norm, c_out, dims=2)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = PadShortcut(c_in, c_out, stride, make_norm(norm, c_in, dims=2) if shortcut_norm else None)

    def skip(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm2(self.conv2(self.relu(self.norm1(self.conv1(x)))))
        return self.relu(out + self.skip(x))


class FixupBlock(nn.Module):
    """Fixup's basic block: x + b1a -> conv -> + b1b -> ReLU -> + b2a -> conv -> * s -> + b2b,
    plus the shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bias1a, self.conv1, self.bias1b = ScalarBias(), conv3x3(c_in, c_out, stride), ScalarBias()
        self.bias2a, self.conv2 = ScalarBias(), conv3x3(c_out, c_out)
        self.scale, self.bias2b = ScalarScale(), ScalarBias()
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = PadShortcut(c_in, c_out, stride) if stride != 1 or c_in != c_out else None

    def skip(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.shortcut is None else self.shortcut(self.bias1a(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bias1b(self.conv1(self.bias1a(x))))
        out = self.bias2b(self.scale(self.conv2(self.bias2a(out))))
        return self.relu(out + self.skip(x))


class CifarResNet(nn.Module):
    """input norm -> stem (conv, norm or scalar bias, ReLU) -> 3 stages of n blocks -> [final BN]
    -> global average pooling -> [scalar bias] -> linear."""

    def __init__(self, depth: int, in_channels: int = 3, num_classes: int = 10, norm: Spec = "bn",
                 shortcut_norm: bool = True, zero_init_residual: bool = True, final_bn: bool = False,
                 input_norm: Spec = "none"):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise BnrobustError(f"model.depth: a CIFAR ResNet has 6n+2 layers (20, 32, 44, 56, 110, ...), got {depth}")
        n = (depth - 2) // 6
        self.fixup = norm_name(norm) == "fixup"
        self.input_norm = make_input_norm(input_norm)
        stem_conv = conv3x3(in_channels, WIDTHS[0])
        self.stem = nn.Sequential(stem_conv, ScalarBias() if self.fixup else make_norm(norm, WIDTHS[0], dims=2),
                                  nn.ReLU(inplace=True))
        stages, c_in = [], WIDTHS[0]
        for i, c_out in enumerate(WIDTHS):
            blocks = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(FixupBlock(c_in, c_out, stride) if self.fixup
                              else BasicBlock(c_in, c_out, stride, norm, shortcut_norm))
                c_in = c_out
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.final_norm = make_norm("bn", c_in, dims=2) if final_bn else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.pre_fc = ScalarBias() if self.fixup else nn.Identity()
        self.fc = nn.Linear(c_in, num_classes)

        blocks = [b for stage in self.stages for b in stage]
        if self.fixup:  # Zhang et al.: the stem keeps PyTorch's default init
            factor = fixup_scale(len(blocks))
            for b in blocks:
                nn.init.kaiming_normal_(b.conv1.weight, mode="fan_out", nonlinearity="relu")
                with torch.no_grad():
                    b.conv1.weight.mul_(factor)
                nn.init.zeros_(b.conv2.weight)
            nn.init.zeros_(self.fc.weight)
            nn.init.zeros_(self.fc.bias)
        else:
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if zero_init_residual:
                for b in blocks:
                    if getattr(b.norm2, "weight", None) is not None:
                        nn.init.zeros_(b.norm2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.final_norm(self.stages(self.stem(self.input_norm(x))))
        return self.fc(self.pre_fc(self.pool(x).flatten(1)))


def _register(depth: int) -> None:
    n = (depth - 2) // 6

    def build(dataset, norm: Annotated[Spec, NORMS] = "bn", shortcut_norm: bool = True,
              zero_init_residual: bool = True, final_bn: Optional[bool] = None,
              input_norm: Annotated[Spec, INPUT_NORMS] = "none",
              bias_lr: Annotated[float, Field(gt=0)] = 0.1) -> CifarResNet:
        shape = dataset.input_shape
        if len(shape) != 3:
            raise BnrobustError(f"resnet{depth} needs [C, H, W] images, got inputs of shape {list(shape)}")
        fixup = norm_name(norm) == "fixup"
        if final_bn is not None and not fixup:
            raise BnrobustError("model.final_bn applies to norm 'fixup' only (the other norms normalize every "
                                "block already)")
        model = CifarResNet(depth, shape[0], dataset.num_classes, norm, shortcut_norm, zero_init_residual,
                            bool(final_bn), input_norm)
        for name, p in model.named_parameters():
            if "bias" in name or "scale" in name:
                p.lr_scale = bias_lr
        return model

    build.__name__ = f"resnet{depth}"
    build.__doc__ = (
        f"ResNet-{depth} for CIFAR (He et al., 2016): 3 stages of {n} basic blocks (16/32/64 channels), "
        f"zero-padding shortcuts; norm 'bn' (default; also gn, ln, none) or 'fixup'.\n\n"
        f"shortcut_norm: normalize the subsampled input of the downsampling shortcuts (the authors' BN code). "
        f"zero_init_residual: start the last norm of each branch at gamma = 0. final_bn (fixup only, default "
        f"False): one BatchNorm2d after the last stage. bias_lr: learning-rate multiplier of every parameter named "
        f"*bias or *scale (0.1, as the authors' training script). See bnrobust/models/resnet.py for the sources.")
    MODELS.register(f"resnet{depth}")(build)


for _depth in DEPTHS:
    _register(_depth)
