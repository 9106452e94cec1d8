"""Wide residual networks (Zagoruyko & Komodakis, 2016): `wrn`, WRN-depth-widen, default 28-10
(Tables 2, 11: WideResNet-28-10 with BN vs Fixup; Fig. 5b).

A 3x3 stem convolution to 16 channels, three stages of n = (depth - 4) / 6 pre-activation blocks
of 16k, 32k, 64k channels (k = widen; stages 2 and 3 start with stride 2), then norm - ReLU -
global average pooling - linear. The paper trained both variants with valilenk/fixup (its
footnote 8), which builds on xternalz/WideResNet-pytorch and Andy Brock's Fixup WRN
(ajbrock/BoilerPlate, Models/fixup.py); we follow that design:

- norm "bn" (also "gn", "ln", "none"): block = norm - ReLU - conv3x3 (stride) - norm - ReLU -
  conv3x3, plus the input, or, where the width or resolution changes, a 1x1 convolution of the
  pre-activated input. Convolutions have no bias and are He-normal with fan_out; the classifier's
  bias is zero.
- norm "fixup" (Zhang et al., 2019): the blocks have no norm: ReLU(x + b0) - conv3x3 - + b1 - ReLU
  - + b2 - conv3x3 - * s - + b3 (scalar biases `ScalarBias`, one multiplier `ScalarScale`), the
  1x1 shortcut reads ReLU(x + b0). fixup_init="fixup" (default): the first convolution of each
  branch is He-normal rescaled by L^(-1/2) (L = 3n branches, m = 2 layers per branch), the second is
  zero (each block starts as the identity), the stem and shortcut convolutions are He-normal, the
  classifier's weight and bias are zero (0 logits at initialization). final_bn (default True): the
  paper's Fixup variant "still contains one BN layer before the classification layer" (appendix
  E.1): BN - ReLU before the pooling, as in Brock's implementation and in valilenk/fixup until
  commit a202211 (27 May 2019), which removed it; final_bn=False is the current valilenk/fixup.
- fixup_init="paper-code": the Fixup network exactly as that pre-a202211 code built it, which is
  what the paper's numbers come from: its model constructor re-drew *every* convolution He-normal
  after the blocks' Fixup init (so no branch starts at zero or is rescaled), and the four scalar
  biases of a block were one shared parameter (`[Parameter] * 4`). Commit a202211 ("separate
  biases, conv init fix") corrected both.

No dropout: the paper names none, valilenk/fixup trains with droprate 0 by default, and dropout
would add a second source of train/test mismatch to the BN comparison. Depth 16 or 10 with widen
2-4 gives a small network of the same design for CPU runs (WRN-16-4: 2.7M parameters).

Training note (not the model's business): valilenk/fixup trains with SGD, Nesterov momentum 0.9,
weight decay 5e-4 on every parameter, lr 0.1 divided by 5 at epochs 60, 120 and 160 of 200 (the
paper stopped at 150).
"""
from __future__ import annotations

from typing import Annotated, Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..errors import BnrobustError
from ..registry import Spec
from . import MODELS
from .norms import INPUT_NORMS, NORMS, ScalarBias, ScalarScale, make_input_norm, make_norm, norm_name
from .resnet import conv3x3, fixup_scale


def _he(conv: nn.Conv2d) -> None:
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")


class WideBlock(nn.Module):
    """Pre-activation block: norm - ReLU - conv - norm - ReLU - conv, plus the (projected) input."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: Spec):
        super().__init__()
        self.norm1, self.conv1 = make_norm(norm, c_in, dims=2), conv3x3(c_in, c_out, stride)
        self.norm2, self.conv2 = make_norm(norm, c_out, dims=2), conv3x3(c_out, c_out)
        self.shortcut = None if stride == 1 and c_in == c_out else nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.norm1(x))  # not in place: with norm "none" it is x itself
        out = self.conv2(F.relu(self.norm2(self.conv1(a))))
        return out + (x if self.shortcut is None else self.shortcut(a))


class FixupWideBlock(nn.Module):
    """Fixup's wide block: ReLU(x + b0) - conv - + b1 - ReLU - + b2 - conv - * s - + b3, plus the
    (projected) input. shared_bias: b0..b3 are one parameter (the paper's code)."""

    def __init__(self, c_in: int, c_out: int, stride: int, shared_bias: bool = False):
        super().__init__()
        b = [ScalarBias()] * 4 if shared_bias else [ScalarBias() for _ in range(4)]
        self.bias0, self.conv1, self.bias1 = b[0], conv3x3(c_in, c_out, stride), b[1]
        self.bias2, self.conv2, self.scale, self.bias3 = b[2], conv3x3(c_out, c_out), ScalarScale(), b[3]
        self.shortcut = None if stride == 1 and c_in == c_out else nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def skip(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.shortcut is None else self.shortcut(F.relu(self.bias0(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.bias0(x))
        out = self.bias2(F.relu(self.bias1(self.conv1(a))))
        out = self.bias3(self.scale(self.conv2(out)))
        return out + (x if self.shortcut is None else self.shortcut(a))


class WideResNet(nn.Module):
    """input norm -> stem conv -> 3 stages of n blocks -> [norm] -> ReLU -> pooling -> linear."""

    def __init__(self, depth: int = 28, widen: int = 10, in_channels: int = 3, num_classes: int = 10,
                 norm: Spec = "bn", final_bn: bool = True, fixup_init: str = "fixup", input_norm: Spec = "none"):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise BnrobustError(f"model.depth: a WideResNet has 6n+4 layers, n >= 1 (10, 16, 22, 28, 34, 40, ...), "
                                f"got {depth}")
        n = (depth - 4) // 6
        fixup = norm_name(norm) == "fixup"
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        self.input_norm = make_input_norm(input_norm)
        self.stem = conv3x3(in_channels, widths[0])
        stages, c_in = [], widths[0]
        for i, c_out in enumerate(widths[1:]):
            blocks = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(FixupWideBlock(c_in, c_out, stride, shared_bias=fixup_init == "paper-code") if fixup
                              else WideBlock(c_in, c_out, stride, norm))
                c_in = c_out
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        if fixup:
            self.final_norm = make_norm("bn", c_in, dims=2) if final_bn else nn.Identity()
        else:
            self.final_norm = make_norm(norm, c_in, dims=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                _he(m)
        nn.init.zeros_(self.fc.bias)
        if fixup:
            nn.init.zeros_(self.fc.weight)
            if fixup_init == "fixup":
                factor = fixup_scale(3 * n)
                for b in (b for stage in self.stages for b in stage):
                    with torch.no_grad():
                        b.conv1.weight.mul_(factor)
                    nn.init.zeros_(b.conv2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.final_norm(self.stages(self.stem(self.input_norm(x)))))
        return self.fc(self.pool(x).flatten(1))


@MODELS.register("wrn")
def wrn(dataset, depth: Annotated[int, Field(ge=1)] = 28, widen: Annotated[int, Field(ge=1)] = 10,
        norm: Annotated[Spec, NORMS] = "bn", final_bn: Optional[bool] = None,
        fixup_init: Literal["fixup", "paper-code"] = "fixup",
        input_norm: Annotated[Spec, INPUT_NORMS] = "none") -> WideResNet:
    """WideResNet-depth-widen (Zagoruyko & Komodakis, 2016; default 28-10, depth 6n+4) with
    pre-activation blocks; norm 'bn' (default; also gn, ln, none) or 'fixup'.

    final_bn (fixup only; default True, the paper's variant): one BatchNorm2d before the classifier.
    fixup_init: 'fixup' (Zhang et al.'s init) or 'paper-code' (the valilenk/fixup code the paper used:
    every convolution He-normal, the four scalar biases of a block shared). Small CPU variants:
    depth=16 widen=4, or depth=10 widen=2."""
    shape = dataset.input_shape
    if len(shape) != 3:
        raise BnrobustError(f"wrn needs [C, H, W] images, got inputs of shape {list(shape)}")
    fixup = norm_name(norm) == "fixup"
    if not fixup and (final_bn is not None or fixup_init != "fixup"):
        raise BnrobustError("model.final_bn and model.fixup_init apply to norm 'fixup' only (the other norms "
                            "normalize before the classifier already)")
    return WideResNet(depth, widen, shape[0], dataset.num_classes, norm, final_bn is not False, fixup_init,
                      input_norm)
