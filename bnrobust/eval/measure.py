"""Measurements on a trained model: accuracy and loss under a perturbation, and the boundary
tilting angle of a linear model."""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

Perturb = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def accuracy_and_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, perturb: Perturb | None = None,
                      batch_size: int = 1000, device: torch.device | str = "cpu",
                      transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                      pre_perturb: Perturb | None = None) -> tuple[float, float]:
    """Accuracy (%) and mean cross-entropy of `model` on (optionally perturbed) batches.

    Each stored batch goes through pre_perturb, then transform (e.g. upscaling), then
    perturb: noise "before upscaling" is a pre_perturb, attacks on the model's input a perturb."""
    model.eval()
    bs = len(x) if batch_size in (0, None) else batch_size
    correct, loss_sum = 0, 0.0
    for i in range(0, len(x), bs):
        xb, yb = x[i:i + bs].to(device), y[i:i + bs].to(device)
        if pre_perturb is not None:
            xb = pre_perturb(xb, yb)
        if transform is not None:
            xb = transform(xb)
        if perturb is not None:
            xb = perturb(xb, yb)
        with torch.no_grad():
            out = model(xb)
        correct += int((out.argmax(1) == yb).sum())
        loss_sum += float(F.cross_entropy(out, yb, reduction="sum"))
    return 100.0 * correct / len(x), loss_sum / len(x)


def nearest_centroid_direction(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """w* = mean of class 1 minus mean of class 0 (flattened)."""
    x = x.flatten(1)
    return x[y == 1].mean(0) - x[y == 0].mean(0)


def tilt_angle(w: torch.Tensor, w_star: torch.Tensor) -> float:
    """Angle in degrees, in [0, 90], between the boundary normal w and w*: the boundary is
    a hyperplane, so the sign of w does not matter."""
    cos = torch.dot(w.flatten().double(), w_star.flatten().double()) / (
        w.double().norm() * w_star.double().norm())
    return math.degrees(math.acos(min(1.0, abs(float(cos)))))
