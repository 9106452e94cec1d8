"""VGG networks (Simonyan & Zisserman, 2015) for 32x32 inputs: `vgg8`, `vgg11`, `vgg13`, `vgg16`,
`vgg19` (section 4, appendices E and K of the paper).

Convolutions: 3x3, padding 1, with bias; after each the norm (none|bn|gn|ln|{...} via
`make_norm`), then ReLU; 2x2 max pooling after each stage ("M" below), so a 32x32 input leaves
the fifth stage as 512 x 1 x 1. VGG11/13/16/19 are configurations A, B, D and E of the VGG paper
(8, 10, 13 and 16 convolutions), as in kuangliu/pytorch-cifar and chengyangfu/pytorch-vgg-cifar10.

VGG8. The paper does not define it, and its authors' released code (AngusG/bn-advex-zhang-fixup,
the Fixup WRN/ResNet experiments; its CIFAR preprocessing is kuangliu/pytorch-cifar's, as the
paper's footnote 7 says) holds no VGG. The VGG8 found in public CIFAR code is the one that extends
kuangliu/pytorch-cifar's VGG table with "VGG8": [64, M, 128, M, 256, M, 512, M, 512, M] (e.g. the
otfusion and photonic-NN model zoos; RepDistiller's vgg8 has the same one-convolution-per-stage
64-128-256-512-512 layout): 5 convolutions. Keeping the original VGG's 3 fully connected layers
makes the name count literal (5 + 3 = 8 weight layers, as VGG11 = 8 + 3 in Simonyan & Zisserman)
and matches the reference the project measured ("plain VGG8, 5 convolutions + 3 linear layers"),
so classifier="3fc" is the default for every depth: Linear(512, 512) - ReLU - Linear(512, 512) -
ReLU - Linear(512, classes), chengyangfu's CIFAR VGG classifier without its dropout (the paper
mentions none). classifier="1fc" is kuangliu's single Linear(512, classes). The classifier has no
norm layers (as torchvision's vgg*_bn).

Initialization (init): "kaiming" (default) = He et al. (2015) normal init, convolutions with
fan_out (std sqrt(2 / (9 * out_channels)), as torchvision's VGG and chengyangfu's code) and
linear layers with fan_in, all biases 0; the paper: "the deepest model that could be trained
without BN using this procedure and He et al. (2015) initialization was VGG13". "default" =
PyTorch's layer defaults (Kaiming-uniform with a=sqrt(5), i.e. weight variance 1/(3 fan_in)):
without BN the activations' second moment shrinks about 6-fold per layer, and VGG8 stays near
chance for the first epochs (measured in the issue: 3 epochs).

"BN on the input layer only" (Fig. 3b, appendix A: "As for BNGD, for this particular experiment we
apply BN only to the input layer"): BNGD batch-normalizes the input of the classifier, so we read
it as BN on the network's input, norm_layers=[0] (a BatchNorm2d over the 3 standardized image
channels, before the first convolution, whose c then thresholds the input variances as in
section 3). The other reading, BN after the first convolution only, is norm_layers=[1].
"""
from __future__ import annotations

from typing import Annotated, Literal, Union

import torch
from pydantic import Field
from torch import nn

from ..errors import BnrobustError
from ..registry import Spec
from . import MODELS
from .norms import INPUT_NORMS, NORMS, make_input_norm, make_norm, norm_name

CONFIGS: dict[int, list] = {
    8: [64, "M", 128, "M", 256, "M", 512, "M", 512, "M"],
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
NonNegInt = Annotated[int, Field(ge=0)]


def num_convs(depth: int) -> int:
    return sum(1 for v in CONFIGS[depth] if v != "M")


class VGG(nn.Module):
    """input norm -> [norm at layer 0] -> [conv -> norm -> ReLU (-> max pool)] x stages ->
    flatten -> classifier. `norm_layers` ("all" or a list) says where the norm goes: k >= 1 is
    after convolution k, 0 is on the network's input (a BatchNorm2d over the 3 input channels,
    before the first convolution). "all" = after every convolution (not on the input)."""

    def __init__(self, depth: int, in_channels: int = 3, num_classes: int = 10, image_size: int = 32,
                 norm: Spec = "none", norm_layers: Union[str, list[int]] = "all", init: str = "kaiming",
                 classifier: str = "3fc", width_factor: float = 1.0, input_norm: Spec = "none"):
        super().__init__()
        if depth not in CONFIGS:
            raise BnrobustError(f"VGG depth must be one of {', '.join(map(str, CONFIGS))}, got {depth}")
        k = num_convs(depth)
        normed = set(range(1, k + 1)) if norm_layers == "all" else set(norm_layers)
        if not normed <= set(range(k + 1)):
            raise BnrobustError(f"model.norm_layers must be 'all' or layers in 0..{k} (0 = the input, "
                                f"1..{k} = after convolution 1..{k}), got {norm_layers!r}")
        use = norm_name(norm) != "none"
        self.input_norm = make_input_norm(input_norm)
        layers: list[nn.Module] = []
        if use and 0 in normed:
            layers.append(make_norm(norm, in_channels, dims=2))
        c_in, i = in_channels, 0
        for v in CONFIGS[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            i += 1
            c_out = max(1, round(v * width_factor))
            layers.append(nn.Conv2d(c_in, c_out, 3, padding=1))
            if use and i in normed:
                layers.append(make_norm(norm, c_out, dims=2))
            layers.append(nn.ReLU(inplace=True))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        flat = c_in * (image_size // 32) ** 2
        hidden = max(1, round(512 * width_factor))
        head: list[nn.Module] = [nn.Flatten()]
        if classifier == "3fc":
            head += [nn.Linear(flat, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
                     nn.Linear(hidden, num_classes)]
        else:
            head.append(nn.Linear(flat, num_classes))
        self.classifier = nn.Sequential(*head)
        if init == "kaiming":
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    nn.init.zeros_(m.bias)
                elif isinstance(m, nn.Linear):
                    nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.input_norm(x)))


def _register(depth: int) -> None:
    k = num_convs(depth)

    def build(dataset, norm: Annotated[Spec, NORMS] = "none",
              norm_layers: Union[Literal["all"], list[NonNegInt]] = "all",
              init: Literal["kaiming", "default"] = "kaiming", classifier: Literal["3fc", "1fc"] = "3fc",
              width_factor: Annotated[float, Field(gt=0)] = 1.0,
              input_norm: Annotated[Spec, INPUT_NORMS] = "none") -> VGG:
        shape = dataset.input_shape
        if len(shape) != 3 or shape[1] != shape[2] or shape[1] % 32:
            raise BnrobustError(f"vgg{depth} needs square [C, H, W] images with a side divisible by 32 (five 2x2 "
                                f"poolings), got inputs of shape {list(shape)}")
        return VGG(depth, shape[0], dataset.num_classes, shape[1], norm, norm_layers, init, classifier, width_factor,
                   input_norm)

    build.__name__ = f"vgg{depth}"
    build.__doc__ = (
        f"VGG{depth} for 32x32 images: {k} 3x3 convolutions ({'/'.join(str(v) for v in CONFIGS[depth] if v != 'M')} "
        f"channels, max pooling after each stage) with the norm after each, then the classifier.\n\n"
        f"norm_layers: 'all' (after every convolution) or a list of layers in 0..{k} (0 = the network's input, "
        f"e.g. [0] for Fig. 3b's 'BN on the input layer only'; k = after convolution k). init: 'kaiming' (He "
        f"normal, zero biases) or 'default' (PyTorch's). classifier: '3fc' (512-512-classes) or '1fc'. width_factor: "
        f"multiplies every channel count and the hidden width (1.0 = the standard network).")
    MODELS.register(f"vgg{depth}")(build)


for _depth in CONFIGS:
    _register(_depth)
