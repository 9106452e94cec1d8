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


class DecodeImages:
    """uint8 images -> float32 in [0, 1], then a preprocessing mode: "unit" (nothing more),
    "pixel-std" (per-pixel standardization with the training set's statistics) or "image-std"
    (per-image standardization). Applied batch by batch."""

    # x / 255 by table lookup: exact division for every uint8 value on any device (torch divides
    # by a scalar as a multiplication by its reciprocal, which differs in the last bit).
    LUT = torch.from_numpy(np.arange(256, dtype=np.uint8).astype(np.float32) / 255.0)

    def __init__(self, mode: str = "unit", mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        if mode not in PREPROCESS:
            raise BnrobustError(f"unknown preprocessing {mode!r}; choose from {', '.join(PREPROCESS)}")
        self.mode, self.mean, self.std = mode, mean, std
        self._on: dict[str, tuple] = {}  # (table, mean, std) per device, copied there once

    @classmethod
    def fit(cls, mode: str, x_train: torch.Tensor) -> tuple["DecodeImages", tuple[float, float]]:
        """The decoder for `mode` with statistics of the (uint8) training images, and the valid
        range of decoded inputs (the attacks' clip range)."""
        if mode == "unit":
            return cls(mode), (0.0, 1.0)
        x = cls("unit")(x_train)
        if mode == "pixel-std":  # statistics of the training set only
            dec = cls(mode, x.mean(0), x.std(0).clamp_min(1e-8))
        else:
            dec = cls(mode)
        x = dec(x_train)
        return dec, (float(x.min()), float(x.max()))

    def _tensors(self, device: torch.device) -> tuple:
        key = str(device)
        if key not in self._on:
            lut, mean, std = (t if t is None else t.to(device) for t in (self.LUT, self.mean, self.std))
            # Where this device's x / 255 is the correctly rounded quotient for all 256 values (true
            # division: the CPU), divide (~10x faster than a lookup); else (CUDA multiplies by 1/255) look up.
            values = torch.arange(256, device=device).to(torch.uint8)
            exact = torch.equal(values.float().div_(255), lut)
            self._on[key] = (lut, mean, std, exact)
        return self._on[key]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        lut, mean, std, exact = self._tensors(x.device)
        x = x.float().div_(255) if exact else lut[x.long()]
        if self.mode == "pixel-std":
            return (x - mean) / std
        if self.mode == "image-std":
            return per_image_standardize(x)
        return x

    def __repr__(self) -> str:
        return f"DecodeImages({self.mode!r})"


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
