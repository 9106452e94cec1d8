"""LeNet-5 as in AdverTorch's test utilities (appendices D and J)."""
from __future__ import annotations

from typing import Annotated

import torch
from torch import nn

from ..errors import BnrobustError
from ..registry import Spec
from . import MODELS
from .norms import INPUT_NORMS, NORMS, make_input_norm, make_norm


class LeNet5(nn.Module):
    """conv 3x3 32 -> norm -> pool -> conv 3x3 64 -> norm -> pool -> fc 200 -> fc 10, ReLU, with
    an optional input normalization as the first layer (so attacks still act on pixels)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28, norm: Spec = "none",
                 input_norm: Spec = "none"):
        super().__init__()
        self.input_norm = make_input_norm(input_norm)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), make_norm(norm, 32, dims=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), make_norm(norm, 64, dims=2), nn.ReLU(), nn.MaxPool2d(2))
        side = image_size // 4
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * side * side, 200), nn.ReLU(),
                                        nn.Linear(200, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.input_norm(x)))


@MODELS.register("lenet5")
def lenet5(dataset, norm: Annotated[Spec, NORMS] = "none",
           input_norm: Annotated[Spec, INPUT_NORMS] = "none") -> LeNet5:
    """AdverTorch's LeNet-5 variant with a norm after both convolutions."""
    shape = dataset.input_shape
    if len(shape) != 3 or shape[1] != shape[2]:
        raise BnrobustError(f"lenet5 needs square [C, H, W] images, got inputs of shape {list(shape)}")
    return LeNet5(shape[0], dataset.num_classes, shape[1], norm, input_norm)
