"""BagNets (Brendel & Bethge, 2019): ResNet-50-like networks whose 3x3 convolutions are mostly
1x1, so that each output sees only a q x q patch (q = 9, 17, 33); the image's class is the average
of the patch evidence. Written here with the parameter names of the authors' published PyTorch
weights (facts from github.com/wielandbrendel/bag-of-local-features-models, bagnets/pytorchnet.py):
unpadded convolutions, residuals cropped to the branch's size, no max pooling, global average
pooling of layer4. Their BN is our norm spec ("bn" by default, as published).
"""
from __future__ import annotations

import math
from typing import Annotated

import torch
from torch import nn

from ..registry import Spec
from . import MODELS
from .imagenet import Weights, build_imagenet_model
from .norms import NORMS, make_norm, norm_name

# q -> the number of leading blocks with a 3x3 convolution in layer1..4 (the rest are 1x1)
KERNEL3 = {9: (1, 1, 0, 0), 17: (1, 1, 1, 0), 33: (1, 1, 1, 1)}


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 kernel_size: int = 1, norm: Spec = "bn"):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = make_norm(norm, planes, dims=2)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=kernel_size, stride=stride, padding=0, bias=False)
        self.bn2 = make_norm(norm, planes, dims=2)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = make_norm(norm, planes * 4, dims=2)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        if residual.size(-1) != out.size(-1):  # the unpadded 3x3 convolution shrank the branch
            diff = residual.size(-1) - out.size(-1)
            residual = residual[:, :, :-diff, :-diff]
        return self.relu(out + residual)


class BagNet(nn.Module):
    """BagNet-q: conv 1x1 -> conv 3x3 (unpadded) -> norm -> ReLU, four bottleneck stages of
    [3, 4, 6, 3] blocks with strides [2, 2, 2, 1], global average pooling, linear classifier."""

    def __init__(self, q: int, num_classes: int = 1000, norm: Spec = "bn", init: bool = True):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=1, stride=1, padding=0, bias=False)
        self.conv2 = nn.Conv2d(64, 64, kernel_size=3, stride=1, padding=0, bias=False)
        # the published code gives this BN momentum 0.001 (it only matters in training)
        self.bn1 = make_norm({**NORMS.resolve(norm), "momentum": 0.001} if norm_name(norm) == "bn" else norm, 64, 2)
        self.relu = nn.ReLU(inplace=True)
        k3 = KERNEL3[q]
        self.layer1 = self._make_layer(64, 3, 2, k3[0], norm)
        self.layer2 = self._make_layer(128, 4, 2, k3[1], norm)
        self.layer3 = self._make_layer(256, 6, 2, k3[2], norm)
        self.layer4 = self._make_layer(512, 3, 1, k3[3], norm)
        self.fc = nn.Linear(512 * Bottleneck.expansion, num_classes)
        if init:
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                    nn.init.normal_(m.weight, 0, math.sqrt(2.0 / n))

    def _make_layer(self, planes: int, blocks: int, stride: int, kernel3: int, norm: Spec) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, kernel_size=1, stride=stride, bias=False),
                make_norm(norm, planes * Bottleneck.expansion, dims=2))
        layers = [Bottleneck(self.inplanes, planes, stride, downsample, 1 if kernel3 == 0 else 3, norm)]
        self.inplanes = planes * Bottleneck.expansion
        for i in range(1, blocks):
            layers.append(Bottleneck(self.inplanes, planes, kernel_size=1 if kernel3 <= i else 3, norm=norm))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv2(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean(dim=(2, 3)))


def _register_bagnet(q: int) -> None:
    @MODELS.register(f"bagnet{q}")
    def bagnet(dataset, norm: Annotated[Spec, NORMS] = "bn", weights: Weights = "published") -> BagNet:
        """BagNet-{q} (Brendel & Bethge, 2019), patches of {q}x{q} pixels; published ImageNet weights."""
        return build_imagenet_model(f"bagnet{q}", lambda init: BagNet(q, dataset.num_classes, norm, init), dataset,
                                    norm, weights, default_norm="bn")
    bagnet.__doc__ = bagnet.__doc__.replace("{q}", str(q))


for _q in KERNEL3:
    _register_bagnet(_q)
