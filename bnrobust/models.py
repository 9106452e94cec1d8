"""Models as plain `nn.Module`s, built by name from a config section (a timm-like registry)."""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from .data import Dataset, per_image_standardize
from .errors import BnrobustError

INPUT_NORMS = ("none", "image-std", "image-l2")
BN_MODES = ("none", "fixed", "learned")


class PerImageStandardize(nn.Module):
    """Per-image standardization as a model layer, so attacks and noise act in pixel space."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return per_image_standardize(x)


class PerImageL2(nn.Module):
    """Scale each image to unit l2 norm (a per-image normalization that keeps the sign of pixels)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / x.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))


class LinearClassifier(nn.Module):
    """Logistic regression w^T x + b with an optional BatchNorm layer on its input.

    bn="fixed" keeps gamma=1, beta=0 (the paper's BNGD); bn="learned" trains gamma and
    beta. c is BN's stability constant (PyTorch's eps). With track_running_stats=False the
    model always normalizes with the statistics of the batch it is given.
    """

    def __init__(self, in_features: int, num_classes: int, bn: str = "none", c: float = 1e-5,
                 track_running_stats: bool = True, gamma_init: str = "uniform",
                 input_norm: str = "none", init: str = "default"):
        super().__init__()
        if bn not in BN_MODES:
            raise BnrobustError(f"model.bn must be one of {', '.join(BN_MODES)}, got {bn!r}")
        if not (isinstance(c, (int, float)) and c > 0 and math.isfinite(c)):
            raise BnrobustError(f"model.c must be a positive number, got {c!r}")
        if gamma_init not in ("ones", "uniform"):
            raise BnrobustError(f"model.gamma_init must be 'ones' or 'uniform', got {gamma_init!r}")
        if init not in ("default", "zeros"):
            raise BnrobustError(f"model.init must be 'default' or 'zeros', got {init!r}")
        if input_norm not in INPUT_NORMS:
            raise BnrobustError(f"model.input_norm must be one of {', '.join(INPUT_NORMS)}, got {input_norm!r}")
        self.input_norm = {"none": nn.Identity, "image-std": PerImageStandardize, "image-l2": PerImageL2}[input_norm]()
        self.bn = None
        if bn != "none":
            self.bn = nn.BatchNorm1d(in_features, eps=float(c), affine=(bn == "learned"),
                                     track_running_stats=track_running_stats)
            if bn == "learned" and gamma_init == "uniform":
                # "randomly initialized" affine parameters, as PyTorch < 1.2 did (gamma ~ U(0,1)).
                nn.init.uniform_(self.bn.weight)
        self.linear = nn.Linear(in_features, num_classes)
        if init == "zeros":  # the usual start in analyses of GD on logistic regression
            nn.init.zeros_(self.linear.weight), nn.init.zeros_(self.linear.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """What the linear layer sees (before BN): the flattened, input-normalized image."""
        return self.input_norm(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        if self.bn is not None:
            h = self.bn(h)
        return self.linear(h)

    @torch.no_grad()
    def input_space_weights(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """Class weights in the space of `features(x)`, with BN folded in: W * gamma / sqrt(var + c).

        var is the tracked running variance when BN evaluates with it, otherwise the
        (biased) variance of the batch `x` that BN would normalize with.
        """
        w = self.linear.weight.detach().clone()
        if self.bn is None:
            return w
        if self.bn.track_running_stats and self.bn.running_var is not None and not self.training:
            var = self.bn.running_var
        elif x is not None:
            var = self.features(x).var(dim=0, unbiased=False)
        else:
            raise ValueError("a BN model without tracked statistics needs the batch x")
        scale = 1.0 / torch.sqrt(var + self.bn.eps)
        if self.bn.weight is not None:
            scale = scale * self.bn.weight.detach()
        return w * scale


def linear(dataset: Dataset, bn: str = "none", c: float = 1e-5, track_running_stats: bool = True,
           gamma_init: str = "uniform", input_norm: str = "none", init: str = "default") -> LinearClassifier:
    d = math.prod(dataset.input_shape)
    return LinearClassifier(d, dataset.num_classes, bn, c, track_running_stats, gamma_init, input_norm,
                            init)


def nearest_centroid(dataset: Dataset, input_norm: str = "none") -> LinearClassifier:
    """argmin_k ||x - m_k||^2 written as a linear model: W_k = m_k, b_k = -||m_k||^2 / 2.

    For two classes the boundary normal W_1 - W_0 is the paper's w* (mean of class 1
    minus mean of class 0 over the training set). It needs no training (epochs: 0).
    """
    model = linear(dataset, input_norm=input_norm)
    with torch.no_grad():
        feats = model.features(dataset.x_train)
        means = torch.stack([feats[dataset.y_train == k].mean(0) for k in range(dataset.num_classes)])
        model.linear.weight.copy_(means)
        model.linear.bias.copy_(-0.5 * (means ** 2).sum(1))
    return model


def _check_c(c) -> float:
    if not (isinstance(c, (int, float)) and not isinstance(c, bool) and c > 0 and math.isfinite(c)):
        raise BnrobustError(f"model.c must be a positive number, got {c!r}")
    return float(c)


class MLP(nn.Sequential):
    """Fully connected ReLU net: [Linear -> (BN) -> ReLU] x depth, then a Linear classifier.

    bn_layers lists the hidden layers (1-based) that get BatchNorm1d, placed between the
    linear map and the ReLU as in Ioffe & Szegedy (2015); "all" means every hidden layer.
    """

    def __init__(self, in_features: int, num_classes: int, depth: int, width: int,
                 bn_layers: list[int] | str = (), c: float = 1e-5, affine: bool = True, init: str = "default"):
        layers: list[nn.Module] = [nn.Flatten()]
        bn = set(range(1, depth + 1)) if bn_layers == "all" else set(bn_layers)
        for i in range(1, depth + 1):
            layers.append(nn.Linear(in_features if i == 1 else width, width))
            if i in bn:
                layers.append(nn.BatchNorm1d(width, eps=c, affine=affine))
            layers.append(nn.ReLU())
        layers.append(nn.Linear(width if depth else in_features, num_classes))
        super().__init__(*layers)
        if init == "he":  # N(0, 2 / fan_in), zero bias: keeps ReLU signals from vanishing with depth
            for m in self:
                if isinstance(m, nn.Linear):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                    nn.init.zeros_(m.bias)


def mlp(dataset: Dataset, depth: int = 2, width: int | None = None, width_ratio: float | None = None,
        bn_layers: list[int] | str = (), c: float = 1e-5, affine: bool = True, init: str = "default") -> MLP:
    """An MLP for `dataset`. Give the hidden width either directly (width) or relative to the
    input dimension d (width_ratio: 0.5 gives the paper's "half the input dimension").
    init: "default" (PyTorch's) or "he" (Gaussian, variance 2 / fan_in, as in Yang et al.'s
    deep-net experiments; PyTorch's default shrinks signals with depth in deep ReLU nets)."""
    if init not in ("default", "he"):
        raise BnrobustError(f"model.init must be 'default' or 'he', got {init!r}")
    d = math.prod(dataset.input_shape)
    if not (isinstance(depth, int) and depth >= 0):
        raise BnrobustError(f"model.depth must be an integer >= 0, got {depth!r}")
    if (width is None) == (width_ratio is None):
        raise BnrobustError("model needs exactly one of width or width_ratio")
    w = int(width) if width is not None else max(1, int(round(d * float(width_ratio))))
    if w < 1:
        raise BnrobustError(f"model.width must be >= 1, got {width!r}")
    if bn_layers != "all":
        if not (isinstance(bn_layers, (list, tuple)) and all(isinstance(i, int) and 1 <= i <= depth
                                                              for i in bn_layers)):
            raise BnrobustError(f"model.bn_layers must be 'all' or a list of hidden layers in 1..{depth}, "
                                f"got {bn_layers!r}")
    return MLP(d, dataset.num_classes, depth, w, list(bn_layers) if bn_layers != "all" else "all",
               _check_c(c), bool(affine), init)


class DeepLinear(nn.Module):
    """A deep *linear* net (no activations), optionally with BN after every linear map: the
    Fig. 8 model whose representations show how BN mixes the samples of a mini-batch."""

    def __init__(self, in_features: int, num_classes: int, depth: int, width: int, bn: bool,
                 c: float = 1e-5):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Linear(in_features if i == 0 else width, width),
                          *([nn.BatchNorm1d(width, eps=c)] if bn else []))
            for i in range(depth))
        self.head = nn.Linear(width, num_classes)

    def representations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every hidden layer (after its BN, if any); index 0 is layer 1."""
        reps, h = [], x.flatten(1)
        for layer in self.layers:
            h = layer(h)
            reps.append(h)
        return reps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.representations(x)[-1])


def deep_linear(dataset: Dataset, depth: int = 14, width: int = 100, bn: bool = False,
                c: float = 1e-5) -> DeepLinear:
    if not (isinstance(depth, int) and depth >= 1 and isinstance(width, int) and width >= 1):
        raise BnrobustError(f"model.depth and model.width must be integers >= 1, got {depth!r}, {width!r}")
    return DeepLinear(math.prod(dataset.input_shape), dataset.num_classes, depth, width, bool(bn), _check_c(c))


class LeNet5(nn.Module):
    """The LeNet-5 variant of AdverTorch's test utilities (conv 3x3 32 -> pool -> conv 3x3 64
    -> pool -> fc 200 -> fc 10, ReLU), with optional BN after both convolutions and optional
    per-image standardization as the first layer (so attacks still act on pixels)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28, bn: bool = False,
                 c: float = 1e-5, input_norm: str = "none"):
        super().__init__()
        norm = {"none": nn.Identity, "image-std": PerImageStandardize, "image-l2": PerImageL2}
        self.input_norm = norm[input_norm]()
        bn_or_id = (lambda ch: nn.BatchNorm2d(ch, eps=c)) if bn else (lambda ch: nn.Identity())
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), bn_or_id(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), bn_or_id(64), nn.ReLU(), nn.MaxPool2d(2))
        side = image_size // 4
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * side * side, 200), nn.ReLU(),
                                        nn.Linear(200, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.input_norm(x)))


def lenet5(dataset: Dataset, bn: bool = False, c: float = 1e-5, input_norm: str = "none") -> LeNet5:
    shape = dataset.input_shape
    if len(shape) != 3 or shape[1] != shape[2]:
        raise BnrobustError(f"lenet5 needs square [C, H, W] images, got inputs of shape {list(shape)}")
    if input_norm not in INPUT_NORMS:
        raise BnrobustError(f"model.input_norm must be one of {', '.join(INPUT_NORMS)}, got {input_norm!r}")
    return LeNet5(shape[0], dataset.num_classes, shape[1], bool(bn), _check_c(c), input_norm)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "linear": linear,
    "nearest-centroid": nearest_centroid,
    "mlp": mlp,
    "deep-linear": deep_linear,
    "lenet5": lenet5,
}


def build_model(spec: dict, dataset: Dataset) -> nn.Module:
    """Build a model from a config section {"name": ..., **kwargs} for `dataset`."""
    from .registry import call_registered
    return call_registered(MODELS, "model", spec, dataset=dataset)
