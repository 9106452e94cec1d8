"""Preprocessing and per-batch transforms of images."""
from __future__ import annotations

import numpy as np
import torch

from ..errors import BnrobustError


def per_image_standardize(x: torch.Tensor) -> torch.Tensor:
    """(x - mean) / max(std, 1/sqrt(D)) per image, as tf.image.per_image_standardization."""
    flat = x.flatten(1)
    std = flat.std(dim=1, unbiased=False).clamp_min(flat.shape[1] ** -0.5)
    return ((flat - flat.mean(dim=1, keepdim=True)) / std[:, None]).view_as(x)


PREPROCESS = ("unit", "pixel-std", "image-std")


def apply_preprocess(x_train: torch.Tensor, x_test: torch.Tensor, mode: str):
    """Apply a preprocessing mode to [0,1] images; returns (train, test, clip range)."""
    if mode == "unit":
        return x_train, x_test, (0.0, 1.0)
    if mode == "pixel-std":  # statistics of the training set only
        mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-8)
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    elif mode == "image-std":
        x_train, x_test = per_image_standardize(x_train), per_image_standardize(x_test)
    else:
        raise BnrobustError(f"unknown preprocessing {mode!r}; choose from {', '.join(PREPROCESS)}")
    return x_train, x_test, (float(x_train.min()), float(x_train.max()))


class NearestUpscale:
    """Upscale [N, C, H, W] images by an integer factor with nearest-neighbour interpolation.

    For integer factors this is exactly PIL's Image.NEAREST resize (each pixel becomes a
    factor x factor block). Applied per batch, so a 112x112 MNIST never sits in memory.
    """

    def __init__(self, factor: int):
        self.factor = factor

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        k = self.factor
        n, c, h, w = x.shape
        return x[:, :, :, None, :, None].expand(n, c, h, k, w, k).reshape(n, c, h * k, w * k)

    def __repr__(self) -> str:
        return f"NearestUpscale({self.factor})"


def _subset(n: int | None, size: int, rng: np.random.Generator, what: str) -> np.ndarray | None:
    if n is None:
        return None
    if not (isinstance(n, int) and 0 < n <= size):
        raise BnrobustError(f"data.{what} must be an integer in 1..{size}, got {n!r}")
    return np.sort(rng.choice(size, size=n, replace=False))
