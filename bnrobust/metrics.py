"""What we measure on a trained model: accuracy and loss (clean, noisy, attacked), the
boundary tilting angle, gradient-masking checks, and mean +- SEM over seeds.

Each named evaluation in EVALS is `fn(model, dataset, ctx, **params) -> dict` and is
selected by an experiment's `eval.metrics` section.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import attacks
from .data import Dataset
from .errors import BnrobustError


@dataclass
class EvalContext:
    batch_size: int          # 0 = the whole test set as one batch (BN without tracked stats)
    seed: int
    clip: tuple[float, float] | None
    device: torch.device


Perturb = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def accuracy_and_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, perturb: Perturb | None = None,
                      batch_size: int = 1000, device: torch.device | str = "cpu") -> tuple[float, float]:
    """Accuracy (%) and mean cross-entropy of `model` on (optionally perturbed) batches."""
    model.eval()
    bs = len(x) if batch_size in (0, None) else batch_size
    correct, loss_sum = 0, 0.0
    for i in range(0, len(x), bs):
        xb, yb = x[i:i + bs].to(device), y[i:i + bs].to(device)
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


def mean_sem(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, standard error of the mean (ddof=1; nan for one value), count; ignores None."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if len(v) == 0:
        return math.nan, math.nan, 0
    sem = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan
    return float(v.mean()), sem, len(v)


# ---------------------------------------------------------------------------
# Named evaluations


def _acc_loss(model, ds: Dataset, ctx: EvalContext, perturb=None) -> dict:
    acc, loss = accuracy_and_loss(model, ds.x_test, ds.y_test, perturb, ctx.batch_size, ctx.device)
    return {"acc": acc, "loss": loss}


def eval_clean(model, ds, ctx) -> dict:
    return _acc_loss(model, ds, ctx)


def eval_awgn(model, ds, ctx, sigma: float = 1.0, clip: bool = True) -> dict:
    """Accuracy under x + N(0, sigma^2); clip=False leaves noisy inputs outside the valid range."""
    g = torch.Generator().manual_seed(ctx.seed + 12345)  # same noise for every model of a seed
    return _acc_loss(model, ds, ctx, lambda xb, yb: attacks.awgn(xb, sigma, ctx.clip if clip else None, g))


def eval_fgsm(model, ds, ctx, eps: float = 0.1, norm: str = "linf", target: str = "none") -> dict:
    return _acc_loss(model, ds, ctx, lambda xb, yb: attacks.fgsm(model, xb, yb, eps, norm, ctx.clip, target))


def eval_pgd(model, ds, ctx, eps: float, steps: int = 20, step_size: float | None = None,
             norm: str = "linf", random_start: bool = False, target: str = "none") -> dict:
    step = eps / 10 if step_size is None else step_size
    g = torch.Generator().manual_seed(ctx.seed + 54321)
    return _acc_loss(model, ds, ctx, lambda xb, yb: attacks.pgd(
        model, xb, yb, eps, steps, step, norm, random_start, ctx.clip, target, g))


def eval_tilt(model, ds, ctx) -> dict:
    """Tilting angle theta of a binary linear model w.r.t. the nearest-centroid classifier,
    with BN folded into w (w * gamma / sqrt(var + c)), both in the space the linear
    layer's input lives in (after any fixed input normalization)."""
    if ds.num_classes != 2 or not hasattr(model, "input_space_weights"):
        raise BnrobustError("the 'tilt' metric needs a binary task and a linear model")
    with torch.no_grad():
        x_test = ds.x_test.to(ctx.device)
        w = model.input_space_weights(x_test).cpu()
        w_star = nearest_centroid_direction(model.features(ds.x_train.to(ctx.device)).cpu(), ds.y_train)
    return {"deg": tilt_angle(w[1] - w[0], w_star)}


def masking_problems(clean: float, eps: Sequence[float], fgsm_acc: Sequence[float],
                     pgd_acc: Sequence[float], tol: float = 0.5, floor: float = 5.0,
                     fgsm_curve: bool = True) -> list[str]:
    """The gradient-masking checks: eps=0 gives clean accuracy, accuracy does not rise
    with eps, reaches ~0 (<= floor %) at the largest eps, and PGD <= FGSM everywhere.

    fgsm_curve=False skips the last two for FGSM: on a nonlinear model one large signed
    step overshoots, so FGSM accuracy can rise again at large eps without any masking
    (PGD, which keeps the monotone and reaches-zero checks, is the attack that must not).
    """
    problems = []
    for name, accs in (("FGSM", fgsm_acc), ("PGD", pgd_acc)):
        if eps[0] == 0 and abs(accs[0] - clean) > 1e-9:
            problems.append(f"{name} at eps=0 gives {accs[0]:.2f}% != clean {clean:.2f}%")
        if name == "FGSM" and not fgsm_curve:
            continue
        for e0, e1, a0, a1 in zip(eps, eps[1:], accs, accs[1:]):
            if a1 > a0 + tol:
                problems.append(f"{name} accuracy rises from {a0:.2f}% (eps={e0}) to {a1:.2f}% (eps={e1})")
        if accs[-1] > floor:
            problems.append(f"{name} accuracy at eps={eps[-1]} is {accs[-1]:.2f}% (> {floor}%)")
    for e, f, p in zip(eps, fgsm_acc, pgd_acc):
        if p > f + tol:
            problems.append(f"PGD {p:.2f}% > FGSM {f:.2f}% at eps={e}")
    return problems


def eval_masking(model, ds, ctx, eps: Sequence[float] = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0),
                 steps: int = 20, n: int = 500, norm: str = "linf") -> dict:
    """Accuracy-vs-eps curves of FGSM and PGD (step eps/10, no random start) on the first
    n test points, and the gradient-masking checks on them."""
    sub = Dataset(ds.name, ds.x_train, ds.y_train, ds.x_test[:n], ds.y_test[:n], ds.num_classes, ds.clip)
    if ctx.batch_size == 0:  # batch statistics: use the same batch as the other metrics
        sub = ds
    clean = _acc_loss(model, sub, ctx)["acc"]
    f = [_acc_loss(model, sub, ctx, lambda xb, yb: attacks.fgsm(model, xb, yb, e, norm, ctx.clip))["acc"]
         for e in eps]
    p = [_acc_loss(model, sub, ctx, lambda xb, yb: attacks.pgd(model, xb, yb, e, steps, max(e, 1e-12) / 10,
                                                               norm, False, ctx.clip))["acc"] for e in eps]
    problems = masking_problems(clean, list(eps), f, p)
    return {"eps": list(eps), "fgsm": f, "pgd": p, "passed": not problems, "problems": problems}


EVALS: dict[str, Callable[..., dict]] = {
    "clean": eval_clean,
    "awgn": eval_awgn,
    "fgsm": eval_fgsm,
    "pgd": eval_pgd,
    "tilt": eval_tilt,
    "masking": eval_masking,
}
