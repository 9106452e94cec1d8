"""Linear classifiers: logistic regression with an optional normalization layer on its input
(the paper's BNGD), and the nearest-centroid classifier written as one."""
from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from torch import nn

from ..registry import Spec
from . import MODELS
from .norms import INPUT_NORMS, NORMS, make_input_norm, make_norm


class LinearClassifier(nn.Module):
    """w^T x + b on the flattened, input-normalized image, with `norm` applied to that vector
    first: norm="bn" with affine "fixed" is the paper's BNGD."""

    def __init__(self, in_features: int, num_classes: int, norm: Spec = "none", input_norm: Spec = "none",
                 init: str = "default"):
        super().__init__()
        self.input_norm = make_input_norm(input_norm)
        self.norm = make_norm(norm, in_features, dims=1)
        self.linear = nn.Linear(in_features, num_classes)
        if init == "zeros":  # the usual start in analyses of GD on logistic regression
            nn.init.zeros_(self.linear.weight), nn.init.zeros_(self.linear.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """What the normalization layer sees: the flattened, input-normalized image."""
        return self.input_norm(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(self.features(x)))

    @torch.no_grad()
    def input_space_weights(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """Class weights in the space of `features(x)`, with BN folded in: W * gamma / sqrt(var + c).

        var is the tracked running variance when BN evaluates with it, otherwise the
        (biased) variance of the batch `x` that BN would normalize with. Per-sample norms
        (GroupNorm, LayerNorm) have no such fixed linear map: a ValueError."""
        w = self.linear.weight.detach().clone()
        bn = self.norm
        if isinstance(bn, nn.Identity):
            return w
        if not isinstance(bn, nn.BatchNorm1d):
            raise ValueError(f"a {type(bn).__name__} layer is not a fixed linear map: no input-space weights")
        if bn.track_running_stats and bn.running_var is not None and not self.training:
            var = bn.running_var
        elif x is not None:
            var = self.features(x).var(dim=0, unbiased=False)
        else:
            raise ValueError("a BN model without tracked statistics needs the batch x")
        scale = 1.0 / torch.sqrt(var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.detach()
        return w * scale


@MODELS.register("linear")
def linear(dataset, norm: Annotated[Spec, NORMS] = "none", input_norm: Annotated[Spec, INPUT_NORMS] = "none",
           init: Literal["default", "zeros"] = "default") -> LinearClassifier:
    """Logistic regression (softmax over classes) with an optional norm layer on its input."""
    return LinearClassifier(math.prod(dataset.input_shape), dataset.num_classes, norm, input_norm, init)


@MODELS.register("nearest-centroid")
def nearest_centroid(dataset, input_norm: Annotated[Spec, INPUT_NORMS] = "none") -> LinearClassifier:
    """argmin_k ||x - m_k||^2 as a linear model: W_k = m_k, b_k = -||m_k||^2 / 2 (no training).

    For two classes the boundary normal W_1 - W_0 is the paper's w* (mean of class 1
    minus mean of class 0 over the training set). It needs no training (epochs: 0)."""
    model = LinearClassifier(math.prod(dataset.input_shape), dataset.num_classes, input_norm=input_norm)
    with torch.no_grad():
        feats = model.features(dataset.inputs("train"))
        means = torch.stack([feats[dataset.y_train == k].mean(0) for k in range(dataset.num_classes)])
        model.linear.weight.copy_(means)
        model.linear.bias.copy_(-0.5 * (means ** 2).sum(1))
    return model
