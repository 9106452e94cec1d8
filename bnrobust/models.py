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


MODELS: dict[str, Callable[..., nn.Module]] = {
    "linear": linear,
    "nearest-centroid": nearest_centroid,
}


def build_model(spec: dict, dataset: Dataset) -> nn.Module:
    """Build a model from a config section {"name": ..., **kwargs} for `dataset`."""
    from .registry import call_registered
    return call_registered(MODELS, "model", spec, dataset=dataset)
