"""The one normalization factory every model uses.

A norm is a spec from `NORMS` (`"bn"`, or `{"name": "bn", "c": 1e-3, "affine": "fixed"}`),
built for a layer with `make_norm(spec, num_features, dims)`: dims=1 for feature vectors
[N, C], dims=2 for feature maps [N, C, H, W]. Input normalizations (per image, applied to the
model's input so that attacks and noise still act on pixels) are `INPUT_NORMS`.
"""
from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import nn

from ..data.transforms import per_image_standardize
from ..errors import BnrobustError
from ..registry import Registry, Spec

NORMS = Registry("norm", context=("num_features", "dims"), default="none")
INPUT_NORMS = Registry("input norm", default="none")

Positive = Annotated[float, Field(gt=0)]


def make_norm(spec: Spec, num_features: int, dims: int) -> nn.Module:
    return NORMS.build(spec, num_features=num_features, dims=dims)


def norm_name(spec: Spec) -> str:
    """The name of a (resolved or bare) norm spec."""
    return NORMS.resolve(spec)["name"]


@NORMS.register("none")
def no_norm(num_features: int, dims: int) -> nn.Module:
    """No normalization layer."""
    return nn.Identity()


@NORMS.register("bn")
def batch_norm(num_features: int, dims: int, c: Positive = 1e-5,
               affine: Literal["learned", "fixed"] = "learned",
               stats: Literal["tracked", "batch"] = "tracked",
               momentum: Annotated[float, Field(ge=0, le=1)] = 0.1,
               gamma_init: Literal["ones", "uniform"] = "ones") -> nn.Module:
    """Batch normalization (Ioffe & Szegedy, 2015); c is the stability constant (PyTorch's eps).

    affine="fixed" keeps gamma=1, beta=0 (the paper's BNGD); stats="batch" normalizes with the
    statistics of whatever batch the model is given, also at test time; gamma_init="uniform"
    draws gamma ~ U(0, 1), the 'randomly initialized' affine parameters of PyTorch < 1.2."""
    cls = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
    layer = cls(num_features, eps=float(c), momentum=momentum, affine=(affine == "learned"),
                track_running_stats=(stats == "tracked"))
    if affine == "learned" and gamma_init == "uniform":
        nn.init.uniform_(layer.weight)
    return layer


def _groups(num_features: int, groups: int) -> int:
    """The largest divisor of num_features that is <= groups (GroupNorm needs a divisor)."""
    return max(g for g in range(1, min(groups, num_features) + 1) if num_features % g == 0)


@NORMS.register("gn")
def group_norm(num_features: int, dims: int, groups: Annotated[int, Field(ge=1)] = 32, c: Positive = 1e-5,
               affine: Literal["learned", "fixed"] = "learned") -> nn.Module:
    """Group normalization (Wu & He, 2018): per sample, over groups of channels. Uses the largest
    divisor of the channel count that is <= groups."""
    return nn.GroupNorm(_groups(num_features, groups), num_features, eps=float(c), affine=(affine == "learned"))


@NORMS.register("ln")
def layer_norm(num_features: int, dims: int, c: Positive = 1e-5,
               affine: Literal["learned", "fixed"] = "learned") -> nn.Module:
    """Layer normalization (Ba et al., 2016): per sample over all features (for feature maps,
    over channels and positions, with a per-channel affine: GroupNorm with one group)."""
    if dims == 1:
        return nn.LayerNorm(num_features, eps=float(c), elementwise_affine=(affine == "learned"))
    return nn.GroupNorm(1, num_features, eps=float(c), affine=(affine == "learned"))


@NORMS.register("fixup")
def fixup(num_features: int, dims: int) -> nn.Module:
    """Fixup (Zhang et al., 2019): no normalization layer; a residual network built with it
    zero-initializes the last layer of each branch, rescales the inner ones and adds scalar
    biases and multipliers (`ScalarBias`, `ScalarScale`). Only residual models accept it."""
    raise BnrobustError("norm 'fixup' needs a residual model (it changes the initialization of residual "
                        "branches); this model has none")


class ScalarBias(nn.Module):
    """Fixup's scalar bias: x + b, b a learned scalar initialized to 0. b is cast to x's dtype, so
    under bf16 autocast the activations stay bf16 (float32 b would promote them to float32)."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias.to(x.dtype)


class ScalarScale(nn.Module):
    """Fixup's scalar multiplier: x * s, s a learned scalar initialized to 1 (cast like `ScalarBias`)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x.dtype)


def uses_batch_stats(model: nn.Module) -> bool:
    """Whether the model has a layer that normalizes with batch statistics in training."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


# ---------------------------------------------------------------------------
# Input normalizations


class PerImageStandardize(nn.Module):
    """Per-image standardization as a model layer, so attacks and noise act in pixel space."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return per_image_standardize(x)


class PerImageL2(nn.Module):
    """Scale each image to unit l2 norm (a per-image normalization that keeps the sign of pixels)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / x.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))


INPUT_NORMS.register("none")(nn.Identity)
INPUT_NORMS.register("image-std")(PerImageStandardize)
INPUT_NORMS.register("image-l2")(PerImageL2)


def make_input_norm(spec: Spec) -> nn.Module:
    return INPUT_NORMS.build(spec)
