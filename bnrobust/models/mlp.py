"""Fully connected networks: the ReLU MLP of sections 4-5 and the deep linear net of Fig. 8."""
from __future__ import annotations

import math
from typing import Annotated, Literal, Optional, Union

import torch
from pydantic import Field
from torch import nn

from ..errors import BnrobustError
from ..registry import Spec
from . import MODELS
from .norms import NORMS, make_norm, norm_name

NonNegInt = Annotated[int, Field(ge=0)]
PosInt = Annotated[int, Field(ge=1)]


class MLP(nn.Sequential):
    """[Linear -> norm -> ReLU] x depth, then a Linear classifier.

    norm_layers lists the hidden layers (1-based) that get the norm, placed between the
    linear map and the ReLU as in Ioffe & Szegedy (2015); "all" means every hidden layer."""

    def __init__(self, in_features: int, num_classes: int, depth: int, width: int, norm: Spec = "none",
                 norm_layers: list[int] | str = "all", init: str = "default"):
        layers: list[nn.Module] = [nn.Flatten()]
        normed = set(range(1, depth + 1)) if norm_layers == "all" else set(norm_layers)
        for i in range(1, depth + 1):
            layers.append(nn.Linear(in_features if i == 1 else width, width))
            if i in normed and norm_name(norm) != "none":
                layers.append(make_norm(norm, width, dims=1))
            layers.append(nn.ReLU())
        layers.append(nn.Linear(width if depth else in_features, num_classes))
        super().__init__(*layers)
        if init == "he":  # N(0, 2 / fan_in), zero bias: keeps ReLU signals from vanishing with depth
            for m in self:
                if isinstance(m, nn.Linear):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                    nn.init.zeros_(m.bias)


@MODELS.register("mlp")
def mlp(dataset, depth: NonNegInt = 2, width: Optional[PosInt] = None,
        width_ratio: Optional[Annotated[float, Field(gt=0)]] = None,
        norm: Annotated[Spec, NORMS] = "none", norm_layers: Union[Literal["all"], list[PosInt]] = "all",
        init: Literal["default", "he"] = "default") -> MLP:
    """ReLU MLP; hidden width given directly (width) or relative to the input dimension d
    (width_ratio: 0.5 is the paper's 'half the input dimension').

    init: "default" (PyTorch's) or "he" (Gaussian, variance 2 / fan_in, as in Yang et al.'s
    deep-net experiments; PyTorch's default shrinks signals with depth in deep ReLU nets)."""
    d = math.prod(dataset.input_shape)
    if (width is None) == (width_ratio is None):
        raise BnrobustError("model needs exactly one of width or width_ratio")
    if norm_layers != "all" and any(i > depth for i in norm_layers):
        raise BnrobustError(f"model.norm_layers must be 'all' or hidden layers in 1..{depth}, got {norm_layers!r}")
    w = width if width is not None else max(1, int(round(d * width_ratio)))
    return MLP(d, dataset.num_classes, depth, w, norm, norm_layers, init)


class DeepLinear(nn.Module):
    """A deep *linear* net (no activations) with a norm after every linear map: the Fig. 8 model
    whose representations show how BN mixes the samples of a mini-batch."""

    def __init__(self, in_features: int, num_classes: int, depth: int, width: int, norm: Spec = "none"):
        super().__init__()
        with_norm = norm_name(norm) != "none"
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Linear(in_features if i == 0 else width, width),
                          *([make_norm(norm, width, dims=1)] if with_norm else []))
            for i in range(depth))
        self.head = nn.Linear(width, num_classes)

    def representations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every hidden layer (after its norm, if any); index 0 is layer 1."""
        reps, h = [], x.flatten(1)
        for layer in self.layers:
            h = layer(h)
            reps.append(h)
        return reps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.representations(x)[-1])


@MODELS.register("deep-linear")
def deep_linear(dataset, depth: PosInt = 14, width: PosInt = 100,
                norm: Annotated[Spec, NORMS] = "none") -> DeepLinear:
    """Deep linear net with an optional norm after every linear map (Fig. 8)."""
    return DeepLinear(math.prod(dataset.input_shape), dataset.num_classes, depth, width, norm)
