"""Measurements on a trained model: accuracy and loss under a perturbation, and the boundary
tilting angle of a linear model."""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Perturb = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], perturb: Perturb | None = None,
             transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
             pre_perturb: Perturb | None = None, device: torch.device | str | None = None,
             models: int = 1) -> tuple[Any, Any]:
    """Accuracy (%) and mean cross-entropy of `model` over (x, y) batches, each optionally perturbed.

    Each batch goes through pre_perturb, then transform (e.g. upscaling), then perturb: noise
    "before upscaling" is a pre_perturb, attacks on the model's input a perturb.

    The sums stay on the model's device until the end (no host sync per batch); the loss is
    summed in float64, as Python floats would be, so the result does not depend on the device
    the sum lives on. models > 1: `model` is a stacked model (bnrobust.train.stacked) and each
    batch holds that many models' batches one after the other; then both values are numpy
    arrays, one entry per model."""
    model.eval()
    if models > 1:
        return _evaluate_stacked(model, batches, perturb, transform, pre_perturb, device, models)
    correct: torch.Tensor | int = 0
    loss_sum: torch.Tensor | float = 0.0
    n = 0
    for xb, yb in _prepared(batches, perturb, transform, pre_perturb, device):
        with torch.no_grad():
            out = model(xb)
            correct = correct + (out.argmax(1) == yb).sum()
            loss_sum = loss_sum + F.cross_entropy(out, yb, reduction="sum").double()
        n += len(yb)
    return 100.0 * int(correct) / n, float(loss_sum) / n


def _prepared(batches, perturb, transform, pre_perturb, device):
    """The batches as the model sees them: on `device`, pre_perturb, transform, then perturb."""
    for xb, yb in batches:
        if device is not None:
            xb, yb = xb.to(device), yb.to(device)
        if pre_perturb is not None:
            xb = pre_perturb(xb, yb)
        if transform is not None:
            xb = transform(xb)
        if perturb is not None:
            xb = perturb(xb, yb)
        yield xb, yb


def _evaluate_stacked(model, batches, perturb, transform, pre_perturb, device, s: int):
    """`evaluate` of S stacked models at once, each model's sums kept apart."""
    correct, loss_sum, n = [0] * s, [0.0] * s, 0
    for xb, yb in _prepared(batches, perturb, transform, pre_perturb, device):
        with torch.no_grad():
            out = model(xb)
        hits = (out.argmax(1) == yb).view(s, -1).sum(1).tolist()
        losses = F.cross_entropy(out, yb, reduction="none").view(s, -1).sum(1).tolist()
        for k in range(s):
            correct[k] += hits[k]
            loss_sum[k] += losses[k]
        n += len(yb) // s
    return np.array([100.0 * c / n for c in correct]), np.array([x / n for x in loss_sum])


def accuracy_and_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, perturb: Perturb | None = None,
                      batch_size: int = 1000, device: torch.device | str = "cpu",
                      transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                      pre_perturb: Perturb | None = None) -> tuple[float, float]:
    """`evaluate` on in-memory tensors (model inputs before `transform`), batch_size at a time
    (0 = all at once)."""
    bs = len(x) if batch_size in (0, None) else batch_size
    batches = ((x[i:i + bs], y[i:i + bs]) for i in range(0, len(x), bs))
    return evaluate(model, batches, perturb, transform, pre_perturb, device)


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
