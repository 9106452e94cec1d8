"""The simple CNN of the paper's Table 15 (appendix J.2, SVHN fooling images, Figs. 14 and 15).

"CNN architecture adapted from the CleverHans library" (its `ModelBasicCNN`, nb_filters = 32):

| layer | kernel | c_in | c_out | stride | padding | parameters (1 x 32 x 32 input) |
|---|---|---|---|---|---|---|
| Conv1 | 8 x 8 | C | 32 | 2 | "same" (3 on each side for 32 or 28 pixels) | 2,080 |
| Conv2 | 6 x 6 | 32 | 64 | 2 | "valid" | 73,792 |
| Conv3 | 5 x 5 | 64 | 64 | 1 | "valid" | 102,464 |
| Fc | - | 256 | classes | - | - | 2,570 |

ReLU after each convolution; for the BN variant "BN with default meta-parameters after Conv1 and
Conv2" (conv - norm - ReLU; `norm` takes any spec of the norm factory). A 32 x 32 input leaves
Conv3 as 64 x 2 x 2 = 256 features, the table's Fc input; with biases the total is 180,906, the
table's "180.9k" (the table's c_in = 1 means gray-scale SVHN; the model reads C from the data).
Initialization as CleverHans's `HeReLuNormalInitializer`, which despite its name draws weights from
N(0, 1/fan_in); biases are zero. The paper's no-BN baseline adds per-image standardization
(`input_norm="image-std"`) and weight decay 0.01 (the trainer's business).
"""
from __future__ import annotations

import math
from typing import Annotated

import torch
from torch import nn

from ..errors import BnrobustError
from ..registry import Spec
from . import MODELS
from .norms import INPUT_NORMS, NORMS, make_input_norm, make_norm


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "same" padding (before, after) of one side."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SimpleCNN(nn.Module):
    """input norm -> conv 8x8/2 (same) -> norm -> ReLU -> conv 6x6/2 -> norm -> ReLU -> conv 5x5 ->
    ReLU -> linear."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: tuple[int, int] = (32, 32),
                 norm: Spec = "none", input_norm: Spec = "none"):
        super().__init__()
        (top, bottom), (left, right) = (_same_padding(s, 8, 2) for s in image_size)
        sizes = [math.ceil(s / 2) for s in image_size]
        sizes = [(s - 6) // 2 + 1 for s in sizes]
        sizes = [s - 5 + 1 for s in sizes]
        if min(sizes) < 1:
            raise BnrobustError(f"simple-cnn needs images of at least 27 x 27 pixels (three strided convolutions), "
                                f"got {image_size[0]} x {image_size[1]}")
        self.input_norm = make_input_norm(input_norm)
        self.features = nn.Sequential(
            nn.ZeroPad2d((left, right, top, bottom)), nn.Conv2d(in_channels, 32, 8, stride=2),
            make_norm(norm, 32, dims=2), nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 6, stride=2), make_norm(norm, 64, dims=2), nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, 5), nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * sizes[0] * sizes[1], num_classes))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, std=1 / math.sqrt(m.weight[0].numel()))
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.input_norm(x)))


@MODELS.register("simple-cnn")
def simple_cnn(dataset, norm: Annotated[Spec, NORMS] = "none",
               input_norm: Annotated[Spec, INPUT_NORMS] = "none") -> SimpleCNN:
    """The paper's simple CNN for SVHN (Table 15, from CleverHans): conv 8x8/2 (32), conv 6x6/2 (64),
    conv 5x5 (64), linear; the norm after the first two convolutions."""
    shape = dataset.input_shape
    if len(shape) != 3:
        raise BnrobustError(f"simple-cnn needs [C, H, W] images, got inputs of shape {list(shape)}")
    return SimpleCNN(shape[0], dataset.num_classes, (shape[1], shape[2]), norm, input_norm)
