"""torchvision's ImageNet classifiers (VGG 11/13/16/19, AlexNet, ResNet-18), written here with
torchvision's parameter names, so that its published checkpoint files load with strict=True
and without torchvision (facts from torchvision/models/{vgg,alexnet,resnet}.py).

Normalization is our norm spec, as in every other model: VGG with `norm="none"` is torchvision's
`vgg16`, with `norm="bn"` (BatchNorm2d after every convolution, c = 1e-5, momentum 0.1) its
`vgg16_bn`; ResNet-18's default is "bn". Registered as `imagenet-vgg11` ... `imagenet-vgg19`,
`imagenet-alexnet`, `imagenet-resnet18` (`vgg11` ... are the CIFAR VGGs of `vgg.py`). `weights="published"` (default) loads the published
checkpoint (see `weights.py`; only the published architecture has one), `weights="random"` gives
torchvision's random initialization, with any norm.
"""
from __future__ import annotations

from typing import Annotated, Callable, Literal

import torch
from torch import nn

from ..errors import BnrobustError
from ..registry import Spec
from . import MODELS
from .norms import NORMS, make_norm, norm_name
from .weights import load_published

Weights = Literal["published", "random"]
VGG_CFGS: dict[int, list] = {  # torchvision's configurations "A", "B", "D", "E"
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def _conv_block(in_ch: int, out_ch: int, norm: Spec, **conv) -> list[nn.Module]:
    """conv [-> norm] -> ReLU. No layer at all for norm "none", so that the indices inside
    `features` are torchvision's (vgg16: conv, relu; vgg16_bn: conv, bn, relu)."""
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, **conv)]
    if norm_name(norm) != "none":
        layers.append(make_norm(norm, out_ch, dims=2))
    return layers + [nn.ReLU(inplace=True)]


class VGG(nn.Module):
    """VGG (Simonyan & Zisserman, 2015) as torchvision builds it: features, 7x7 adaptive average
    pooling, a 3-layer classifier with dropout."""

    def __init__(self, depth: int, num_classes: int = 1000, norm: Spec = "none", init: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for v in VGG_CFGS[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += _conv_block(c, v, norm, kernel_size=3, padding=1)
                c = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(),
            nn.Linear(4096, num_classes))
        if init:
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    nn.init.zeros_(m.bias)
                elif isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, 0, 0.01)
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class AlexNet(nn.Module):
    """AlexNet, torchvision's version ("one weird trick", Krizhevsky 2014); a norm, if any, after
    each convolution."""

    def __init__(self, num_classes: int = 1000, norm: Spec = "none"):
        super().__init__()
        self.features = nn.Sequential(
            *_conv_block(3, 64, norm, kernel_size=11, stride=4, padding=2), nn.MaxPool2d(kernel_size=3, stride=2),
            *_conv_block(64, 192, norm, kernel_size=5, padding=2), nn.MaxPool2d(kernel_size=3, stride=2),
            *_conv_block(192, 384, norm, kernel_size=3, padding=1),
            *_conv_block(384, 256, norm, kernel_size=3, padding=1),
            *_conv_block(256, 256, norm, kernel_size=3, padding=1), nn.MaxPool2d(kernel_size=3, stride=2))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
            nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class BasicBlock(nn.Module):
    """ResNet's two-convolution residual block (torchvision's BasicBlock)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, norm: Spec = "bn"):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = make_norm(norm, planes, dims=2)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = make_norm(norm, planes, dims=2)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                            make_norm(norm, planes, dims=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet-18 (He et al., 2016) as torchvision builds it; its norm layers are named bn*."""

    def __init__(self, num_classes: int = 1000, norm: Spec = "bn", init: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = make_norm(norm, 64, dims=2)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        layers, c = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(BasicBlock(c, planes, stride, norm), BasicBlock(planes, planes, 1, norm)))
            c = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        if init:
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ---------------------------------------------------------------------------
# Registration


def published_key(arch: str, norm: Spec, default_norm: str) -> str:
    """The PUBLISHED key of (arch, norm): the norm must be the published one, with its options."""
    name = norm_name(norm)
    if arch.startswith("vgg") and NORMS.resolve(norm) == NORMS.resolve("bn"):
        return f"{arch}_bn"
    if NORMS.resolve(norm) == NORMS.resolve(default_norm):
        return arch
    published = "none or bn" if arch.startswith("vgg") else default_norm
    raise BnrobustError(f"model.norm: no published {arch} weights with norm {name!r} and these options "
                        f"(published: norm {published} with default options); use model.weights=random "
                        "for other norms")


def build_imagenet_model(arch: str, make: Callable[[bool], nn.Module], dataset, norm: Spec, weights: str,
                         default_norm: str = "none") -> nn.Module:
    """`make(init)` builds the architecture. With published weights it is built without memory
    or initialization (on the meta device) and the checkpoint's tensors become its parameters."""
    shape = tuple(dataset.input_shape)
    if len(shape) != 3 or shape[0] != 3:
        raise BnrobustError(f"{arch} needs RGB images [3, H, W], got inputs of shape {list(shape)}")
    if weights == "random":
        return make(True)
    key = published_key(arch, norm, default_norm)
    if dataset.num_classes != 1000:
        raise BnrobustError(f"model.weights=published: the published {arch} classifies the 1,000 ImageNet "
                            f"classes, but dataset {dataset.name} has {dataset.num_classes}")
    with torch.device("meta"):
        model = make(False)
    return load_published(model, key)


def _register_vgg(depth: int) -> None:
    @MODELS.register(f"imagenet-vgg{depth}")
    def vgg(dataset, norm: Annotated[Spec, NORMS] = "none", weights: Weights = "published") -> VGG:
        """VGG as torchvision's ImageNet model: norm "none" is vgg{d}, "bn" vgg{d}_bn; published weights."""
        return build_imagenet_model(f"vgg{depth}", lambda init: VGG(depth, dataset.num_classes, norm, init),
                                    dataset, norm, weights)
    vgg.__doc__ = vgg.__doc__.replace("{d}", str(depth))


for _d in VGG_CFGS:
    _register_vgg(_d)


@MODELS.register("imagenet-alexnet")
def alexnet(dataset, norm: Annotated[Spec, NORMS] = "none", weights: Weights = "published") -> AlexNet:
    """AlexNet as torchvision's ImageNet model (published weights without BN)."""
    return build_imagenet_model("alexnet", lambda init: AlexNet(dataset.num_classes, norm), dataset, norm, weights)


@MODELS.register("imagenet-resnet18")
def resnet18(dataset, norm: Annotated[Spec, NORMS] = "bn", weights: Weights = "published") -> ResNet18:
    """ResNet-18 as torchvision's ImageNet model (published weights with BN)."""
    return build_imagenet_model("resnet18", lambda init: ResNet18(dataset.num_classes, norm, init), dataset, norm,
                                weights, default_norm="bn")
