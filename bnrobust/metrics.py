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


def mean_sem(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, standard error of the mean (ddof=1; nan for one value), count; ignores None."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if len(v) == 0:
        return math.nan, math.nan, 0
    sem = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan
    return float(v.mean()), sem, len(v)


# ---------------------------------------------------------------------------
# Named evaluations


def _acc_loss(model, ds: Dataset, ctx: EvalContext, perturb=None, pre_perturb=None) -> dict:
    acc, loss = accuracy_and_loss(model, ds.x_test, ds.y_test, perturb, ctx.batch_size, ctx.device,
                                  ds.transform, pre_perturb)
    return {"acc": acc, "loss": loss}


def eval_clean(model, ds, ctx) -> dict:
    return _acc_loss(model, ds, ctx)


def eval_train(model, ds, ctx) -> dict:
    """Accuracy and loss on the training set (in eval mode): did the model fit its data?"""
    acc, loss = accuracy_and_loss(model, ds.x_train, ds.y_train, None, ctx.batch_size, ctx.device, ds.transform)
    return {"acc": acc, "loss": loss}


def eval_awgn(model, ds, ctx, sigma: float = 1.0, clip: bool = True, before_transform: bool = False) -> dict:
    """Accuracy under x + N(0, sigma^2); clip=False leaves noisy inputs outside the valid range.
    before_transform=True adds the noise to the stored image (e.g. 28x28 before upscaling)."""
    g = torch.Generator().manual_seed(ctx.seed + 12345)  # same noise for every model of a seed
    noise = lambda xb, yb: attacks.awgn(xb, sigma, ctx.clip if clip else None, g)  # noqa: E731
    if before_transform:
        return _acc_loss(model, ds, ctx, pre_perturb=noise)
    return _acc_loss(model, ds, ctx, noise)


def eval_fgsm(model, ds, ctx, eps: float = 0.1, norm: str = "linf", target: str = "none") -> dict:
    return _acc_loss(model, ds, ctx, lambda xb, yb: attacks.fgsm(model, xb, yb, eps, norm, ctx.clip, target))


def eval_pgd(model, ds, ctx, eps: float, steps: int = 20, step_size: float | None = None,
             norm: str = "linf", random_start: bool = False, target: str = "none") -> dict:
    step = eps / 10 if step_size is None else step_size
    g = torch.Generator().manual_seed(ctx.seed + 54321)
    return _acc_loss(model, ds, ctx, lambda xb, yb: attacks.pgd(
        model, xb, yb, eps, steps, step, norm, random_start, ctx.clip, target, g))


def eval_adv_damage(model, ds, ctx, eps: float = 0.1) -> dict:
    """Adversarial damage: mean cross-entropy after an FGSM attack minus before it, and its
    growth predicted by Simon-Gabriel et al. (2019, Thm. 4), sqrt(d / d0), for inputs upscaled
    from d0 (the stored images) to d dimensions."""
    clean = _acc_loss(model, ds, ctx)["loss"]
    adv = _acc_loss(model, ds, ctx, lambda xb, yb: attacks.fgsm(model, xb, yb, eps, "linf", ctx.clip))["loss"]
    d, d0 = math.prod(ds.input_shape), math.prod(ds.x_test.shape[1:])
    return {"damage": adv - clean, "pred": math.sqrt(d / d0)}


_CORRUPTED: dict[tuple, torch.Tensor] = {}  # the corrupted test sets of the current dataset objects


def _corrupted_test_set(ds: Dataset, suite: str, name: str, severity: int, seed: int) -> torch.Tensor:
    """The test images under one corruption, computed once per (dataset, corruption, seed) and
    shared by every model of a sweep that uses the same dataset object."""
    from .corruptions import corrupt
    key = (id(ds.x_test), suite, name, severity, seed)
    if key not in _CORRUPTED:
        if len(_CORRUPTED) > 64:
            _CORRUPTED.clear()
        lo, hi = ds.clip if ds.clip is not None else (0.0, 1.0)
        if (lo, hi) != (0.0, 1.0):
            raise BnrobustError("the 'corruptions' metric needs images in [0, 1] (data preprocess 'unit'); "
                                "put per-image standardization in the model (model.input_norm) instead")
        x = ds.x_test.permute(0, 2, 3, 1).numpy()  # [N, H, W, C] in [0, 1]
        if x.shape[-1] == 1:
            x = x[..., 0]
        out = corrupt(np.round(x * 255.0).astype(np.uint8), name, severity, seed, suite)
        t = torch.from_numpy(out.astype(np.float32) / 255.0)
        _CORRUPTED[key] = (t.unsqueeze(1) if t.dim() == 3 else t.permute(0, 3, 1, 2)).contiguous()
    return _CORRUPTED[key]


def eval_corruptions(model, ds, ctx, suite: str = "mnist", names: Sequence[str] | None = None,
                     severities: Sequence[int] | None = None) -> dict:
    """Accuracy under each common corruption of `suite` (MNIST-C or CIFAR-10-C, computed by
    bnrobust.corruptions with the run's seed), averaged over severities, and "overall", the
    mean over corruptions."""
    from .corruptions import SEVERITIES, corruption_names
    names = list(names) if names is not None else corruption_names(suite)
    severities = list(severities) if severities is not None else list(SEVERITIES[suite])
    out: dict = {}
    for name in names:
        accs = []
        for sev in severities:
            x = _corrupted_test_set(ds, suite, name, sev, ctx.seed)
            accs.append(accuracy_and_loss(model, x, ds.y_test, None, ctx.batch_size, ctx.device, ds.transform)[0])
        out[name] = float(np.mean(accs))
    out["overall"] = float(np.mean([out[n] for n in names]))
    return out


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
    sub = Dataset(ds.name, ds.x_train, ds.y_train, ds.x_test[:n], ds.y_test[:n], ds.num_classes, ds.clip,
                  ds.transform)
    if ctx.batch_size == 0:  # batch statistics: use the same batch as the other metrics
        sub = ds
    clean = _acc_loss(model, sub, ctx)["acc"]
    f = [_acc_loss(model, sub, ctx, lambda xb, yb: attacks.fgsm(model, xb, yb, e, norm, ctx.clip))["acc"]
         for e in eps]
    p = [_acc_loss(model, sub, ctx, lambda xb, yb: attacks.pgd(model, xb, yb, e, steps, max(e, 1e-12) / 10,
                                                               norm, False, ctx.clip))["acc"] for e in eps]
    problems = masking_problems(clean, list(eps), f, p)
    return {"eps": list(eps), "fgsm": f, "pgd": p, "passed": not problems, "problems": problems}


def eval_converged(model, ds, ctx) -> dict:
    """flag = 1.0 if the model (in eval mode) classifies every training point correctly, else 0.0:
    'trained to 100% training accuracy'. Its mean over seeds is the fraction that converged."""
    acc, _ = accuracy_and_loss(model, ds.x_train, ds.y_train, None, ctx.batch_size, ctx.device, ds.transform)
    return {"flag": float(acc == 100.0)}


def two_minibatches(n: int, batch_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of two disjoint random mini-batches of a training set of n points (seeded)."""
    if not (isinstance(batch_size, int) and 2 <= batch_size <= n // 2):
        raise BnrobustError(f"batch_size must be an integer in 2..{n // 2} (two disjoint batches), got {batch_size!r}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 777))
    return perm[:batch_size], perm[batch_size:2 * batch_size]


@torch.no_grad()
def batch_representations(model, x: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
    """Representations at `layers` (1-based hidden layers; 0 = the input) of ONE mini-batch passed
    through a copy of `model` in train mode, so BN normalizes it with that batch's own statistics."""
    import copy
    if not hasattr(model, "representations"):
        raise BnrobustError("this metric needs a model with .representations (e.g. deep-linear)")
    reps = [x.flatten(1)] + copy.deepcopy(model).train().representations(x)
    if max(layers) >= len(reps):
        raise BnrobustError(f"layers {list(layers)} exceed the model's {len(reps) - 1} hidden layers")
    return [reps[i] for i in layers]


def pca2(z: torch.Tensor) -> torch.Tensor:
    """The rows of z (float64) projected on their two principal components."""
    z = z.double() - z.double().mean(0)
    return z @ torch.linalg.svd(z, full_matrices=False)[2][:2].T


def quadratic_probe_accuracy(z: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy (%) on its own data of a least-squares fit of +-1 class targets on the quadratic
    features (1, z1, z2, z1^2, z2^2, z1 z2) of 2-D points. Two concentric circles, or any one
    affine image of them (concentric ellipses), are fitted exactly, so it gives 100% there."""
    z = z.double() / z.double().std().clamp_min(1e-300)
    f = torch.stack([torch.ones_like(z[:, 0]), z[:, 0], z[:, 1], z[:, 0] ** 2, z[:, 1] ** 2, z[:, 0] * z[:, 1]], 1)
    w = torch.linalg.lstsq(f, (2.0 * y.double() - 1)[:, None], driver="gelsd").solution
    return 100.0 * float(((f @ w)[:, 0] > 0).eq(y.bool()).double().mean())


def eval_batch_mixing(model, ds, ctx, batch_size: int = 100, layers: Sequence[int] = (2, 14)) -> dict:
    """Fig. 8 in numbers, for a model with `.representations` (deep-linear): two disjoint random
    mini-batches A, B of training points, each passed through the model on its own in train mode.
    Per layer l (`input`, `layer<l>`):
    probe: accuracy of `quadratic_probe_accuracy` on the 2-D PCA projection of A and B pooled
      (100% whenever the network maps both batches by the same affine map, as without BN);
    shift: mean distance between the representations of A's first half computed within A and
      within a batch whose other half is from B, over the RMS spread of A's representation
      (0 when a point's representation does not depend on the rest of its batch)."""
    ia, ib = two_minibatches(len(ds.x_train), batch_size, ctx.seed)
    xa, xb = (ds.prepare(ds.x_train[i]).to(ctx.device) for i in (ia, ib))
    y = torch.cat([ds.y_train[ia], ds.y_train[ib]])
    h, ls = batch_size // 2, [0, *layers]
    ra, rb = batch_representations(model, xa, ls), batch_representations(model, xb, ls)
    rm = batch_representations(model, torch.cat([xa[:h], xb[h:]]), ls)
    out = {}
    for layer, a, b, m in zip(ls, ra, rb, rm):
        a, b, m = a.double().cpu(), b.double().cpu(), m.double().cpu()
        spread = (a - a.mean(0)).norm(dim=1).pow(2).mean().sqrt().clamp_min(1e-300)
        out["input" if layer == 0 else f"layer{layer}"] = {
            "probe": quadratic_probe_accuracy(pca2(torch.cat([a, b])), y),
            "shift": float((a[:h] - m[:h]).norm(dim=1).mean() / spread)}
    return out


def eval_cw(model, ds, ctx, n: int = 1000, confidence: float = 0.0, lr: float = 1e-2,
            binary_search_steps: int = 9, initial_const: float = 1e-3, max_iterations: int = 10000) -> dict:
    """Carlini-Wagner L2 (untargeted) on the first n test points, as App. J / Fig. 13 report it:
    over the points the model classifies correctly, `success` (%) is the share misclassified
    with margin > confidence and l2_mean / l2_median are over those successes (None if none)."""
    model.eval()
    x, y = ds.x_test[:n], ds.y_test[:n]
    bs = len(x) if ctx.batch_size in (0, None) else ctx.batch_size
    correct, success, l2 = [], [], []
    for i in range(0, len(x), bs):
        xb, yb = ds.prepare(x[i:i + bs]).to(ctx.device), y[i:i + bs].to(ctx.device)
        with torch.no_grad():
            correct.append((model(xb).argmax(1) == yb).cpu())
        adv = attacks.cw_l2(model, xb, yb, confidence, lr, binary_search_steps, initial_const, max_iterations,
                            clip=ctx.clip)
        st = attacks.cw_l2_stats(model, xb, adv, yb, confidence)
        success.append(st["success"].cpu())
        l2.append(st["l2"].cpu())
    correct, success, l2 = torch.cat(correct), torch.cat(success), torch.cat(l2)
    hit = l2[correct & success].double()
    return {"n": len(x), "clean": 100.0 * float(correct.double().mean()),
            "success": 100.0 * float((correct & success).sum()) / max(1, int(correct.sum())),
            "l2_mean": float(hit.mean()) if len(hit) else None,
            "l2_median": float(hit.median()) if len(hit) else None}


def eval_fooling(model, ds, ctx, n_per_class: int = 10, steps: Sequence[int] = (1, 10, 100),
                 step_size: float = 0.2, init_std: float = 0.1, clip: Sequence[float] | None = None) -> dict:
    """Fooling images (App. J, Figs. 12, 14) in numbers: after each number of steps, the mean
    softmax margin (the paper's confidence: top-1 minus top-2 probability), the mean margin of
    the target class (negative where it is not predicted), the % classified as the target, the %
    "saturated" (target margin >= 0.995, shown as 1.00 in Fig. 12) and the mean l2 distance moved
    from the starting noise. clip overrides the dataset's valid range (the paper clips its
    Per-img images to [-1, 1])."""
    model.eval()
    g = torch.Generator().manual_seed(ctx.seed + 24680)
    steps = sorted(int(s) for s in steps)
    rec, targets = attacks.fooling_trajectory(model, n_per_class, ds.num_classes, ds.input_shape, steps[-1],
                                              [0, *steps], step_size, init_std,
                                              tuple(clip) if clip is not None else ctx.clip, g, ctx.device)
    out: dict = {"steps": steps, "margin_mean": [], "target_margin_mean": [], "target_rate": [], "saturated": [],
                 "moved_l2": []}
    for s in steps:
        with torch.no_grad():
            logits = model(rec[s])
        target_margin = attacks.softmax_margin(logits, targets)
        out["margin_mean"].append(float(attacks.softmax_margin(logits).mean()))
        out["target_margin_mean"].append(float(target_margin.mean()))
        out["target_rate"].append(100.0 * float((logits.argmax(1) == targets).double().mean()))
        out["saturated"].append(100.0 * float((target_margin >= 0.995).double().mean()))
        out["moved_l2"].append(float((rec[s] - rec[0]).flatten(1).norm(dim=1).mean()))
    return out


EVALS: dict[str, Callable[..., dict]] = {
    "clean": eval_clean,
    "train": eval_train,
    "awgn": eval_awgn,
    "fgsm": eval_fgsm,
    "pgd": eval_pgd,
    "tilt": eval_tilt,
    "corruptions": eval_corruptions,
    "adv-damage": eval_adv_damage,
    "masking": eval_masking,
    "converged": eval_converged,
    "batch-mixing": eval_batch_mixing,
    "cw": eval_cw,
    "fooling": eval_fooling,
}
