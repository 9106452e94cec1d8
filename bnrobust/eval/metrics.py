"""The named evaluations an experiment's `eval.metrics` section selects (`EVALS`).

Each is `fn(model, ds, ctx, **options) -> dict`; its options are checked against its
signature before any run starts. Bump `version` in its registration when its meaning changes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, Optional, Sequence

import numpy as np
import torch
from pydantic import Field

from .. import attacks
from ..data import Dataset
from ..errors import BnrobustError
from ..registry import ADDED, Registry
from ..seeding import Stream, stream_seed
from .masking import masking_problems
from .measure import evaluate, nearest_centroid_direction, tilt_angle
from .representations import batch_representations, pca2, quadratic_probe_accuracy, two_minibatches

EVALS = Registry("metric", context=("model", "ds", "ctx"))
NonNeg = Annotated[float, Field(ge=0)]
Positive = Annotated[float, Field(gt=0)]
PosInt = Annotated[int, Field(ge=1)]
Norm = Literal["linf", "l2"]
Target = Literal["none", "least-likely"]


@dataclass
class EvalContext:
    """What the metrics of one model's (or one stacked model's) evaluation share."""
    batch_size: int          # 0 = the whole test set as one batch (BN without tracked stats)
    seed: int | list[int]    # a list: one seed per model of a stacked model (see STACKED)
    clip: tuple[float, float] | None
    device: torch.device
    root: Path | None = None  # the data root, for metrics that read further files (CIFAR-10.1)
    # deterministic measurements already taken (see _acc_loss): e.g. adv-damage's clean and FGSM
    # losses are those of the clean and fgsm metrics at the same eps, measured once
    memo: dict = field(default_factory=dict, repr=False)


# The metrics below that also evaluate a stacked model (bnrobust.train.stacked: S models at once,
# `ds` a StackedData, `ctx.seed` a list of S seeds); their per-model values are then numpy arrays
# or PerModel tuples, which `per_model` splits into each model's own result.
STACKED = frozenset({"clean", "train", "awgn", "fgsm", "pgd", "adv-damage", "masking", "converged"})


class PerModel(tuple):
    """One value per model of a stacked evaluation (for values that are not numbers)."""


def _each(fn, *values):
    """fn(*values), or, where some values are per model (arrays, PerModel), fn per model."""
    n = next((len(v) for v in values if isinstance(v, (np.ndarray, PerModel))), None)
    if n is None:
        return fn(*values)
    def pick(v, k):
        return v[k].item() if isinstance(v, np.ndarray) else v[k] if isinstance(v, PerModel) else v
    return PerModel(fn(*(pick(v, k) for v in values)) for k in range(n))


def per_model(result, k: int):
    """Model k's own result from a stacked metric's result."""
    if isinstance(result, dict):
        return {key: per_model(v, k) for key, v in result.items()}
    if isinstance(result, np.ndarray):
        return result[k].item()
    if isinstance(result, PerModel):
        return result[k]
    if isinstance(result, list):
        return [per_model(v, k) for v in result]
    return result


def _generator(ctx: EvalContext, stream: Stream):
    """The metric's random stream: one generator, or one per model of a stacked model."""
    if isinstance(ctx.seed, (list, tuple)):
        return [torch.Generator().manual_seed(stream_seed(s, stream)) for s in ctx.seed]
    return torch.Generator().manual_seed(stream_seed(ctx.seed, stream))


def _acc_loss(model, ds: Dataset, ctx: EvalContext, perturb=None, pre_perturb=None, split: str = "test",
              key: tuple | None = None) -> dict:
    """Accuracy and loss on `split`, perturbed; with `key` (naming a deterministic perturbation),
    measured once per model, dataset and key in this evaluation."""
    memo = None if key is None else (key, split, id(model), id(ds))
    if memo is not None and memo in ctx.memo:
        return dict(ctx.memo[memo][2])
    acc, loss = evaluate(model, ds.to(ctx.device).batches(split, ctx.batch_size), perturb, ds.transform,
                         pre_perturb, models=getattr(ds, "models", 1))
    if memo is not None:  # holding model and ds, so that their ids are not reused while the memo lives
        ctx.memo[memo] = (model, ds, {"acc": acc, "loss": loss})
    return {"acc": acc, "loss": loss}


@EVALS.register("clean")
def eval_clean(model, ds, ctx) -> dict:
    """Accuracy and loss on the test set."""
    return _acc_loss(model, ds, ctx, key=("clean",))


@EVALS.register("train")
def eval_train(model, ds, ctx) -> dict:
    """Accuracy and loss on the training set (in eval mode): did the model fit its data?"""
    return _acc_loss(model, ds, ctx, split="train")


@EVALS.register("awgn")
def eval_awgn(model, ds, ctx, sigma: NonNeg = 1.0, clip: bool = True, before_transform: bool = False) -> dict:
    """Accuracy under x + N(0, sigma^2); clip=False leaves noisy inputs outside the valid range.
    before_transform=True adds the noise to the stored image (e.g. 28x28 before upscaling)."""
    g = _generator(ctx, Stream.AWGN)  # same noise for every model of a seed
    noise = lambda xb, yb: attacks.awgn(xb, sigma, ctx.clip if clip else None, g)  # noqa: E731
    if before_transform:
        return _acc_loss(model, ds, ctx, pre_perturb=noise)
    return _acc_loss(model, ds, ctx, noise)


@EVALS.register("fgsm")
def eval_fgsm(model, ds, ctx, eps: NonNeg = 0.1, norm: Norm = "linf", target: Target = "none") -> dict:
    """Accuracy under FGSM (one signed gradient step of size eps, clipped to the valid range)."""
    return _acc_loss(model, ds, ctx, lambda xb, yb: attacks.fgsm(model, xb, yb, eps, norm, ctx.clip, target),
                     key=("fgsm", eps, norm, target))


@EVALS.register("pgd")
def eval_pgd(model, ds, ctx, eps: NonNeg, steps: PosInt = 20, step_size: Optional[Positive] = None,
             norm: Norm = "linf", random_start: bool = False, target: Target = "none",
             n: Annotated[Optional[PosInt], ADDED] = None) -> dict:
    """Accuracy under PGD/BIM (step eps/10 unless given; random start optional), on the first n
    test points (None: all; with eval.batch_size 0, BN on batch statistics, always all), so that
    a run's cheap metrics can use more test points than its attacks. With n, also "clean_acc": the
    clean accuracy of those n points, what a share of clean accuracy kept must divide by."""
    step = eps / 10 if step_size is None else step_size
    g = _generator(ctx, Stream.PGD)
    sub = ds.head(n) if n is not None and ctx.batch_size != 0 else ds  # batch statistics: the whole batch
    out = _acc_loss(model, sub, ctx, lambda xb, yb: attacks.pgd(
        model, xb, yb, eps, steps, step, norm, random_start, ctx.clip, target, g))
    if n is not None:
        out["clean_acc"] = _acc_loss(model, sub, ctx)["acc"]
    return out


@EVALS.register("adv-damage")
def eval_adv_damage(model, ds, ctx, eps: NonNeg = 0.1) -> dict:
    """Adversarial damage: mean cross-entropy after an FGSM attack minus before it, and its
    growth predicted by Simon-Gabriel et al. (2019, Thm. 4), sqrt(d / d0), for inputs upscaled
    from d0 (the stored images) to d dimensions."""
    clean = eval_clean(model, ds, ctx)["loss"]
    adv = eval_fgsm(model, ds, ctx, eps)["loss"]
    d, d0 = math.prod(ds.input_shape), math.prod(ds.take("test", slice(0, 1)).shape[1:])
    return {"damage": adv - clean, "pred": math.sqrt(d / d0)}


@EVALS.register("corruptions", version=2)
def eval_corruptions(model, ds, ctx, suite: Literal["mnist", "cifar10"] = "mnist", names: Optional[list[str]] = None,
                     severities: Optional[list[Annotated[int, Field(ge=1, le=5)]]] = None,
                     source: Literal["auto", "generated", "released"] = "auto") -> dict:
    """Accuracy under each common corruption of `suite` (MNIST-C or CIFAR-10-C) at each severity.

    The stored test images are corrupted, kept as uint8 like the released files, and decoded by the
    dataset's own decode (bnrobust.eval.corrupted). source: "generated" = computed by
    bnrobust.corruptions, seeded by the run's seed; "released" = the CIFAR-10-C files in
    <root>/CIFAR-10-C/ (cifar10 dataset only); "auto" = released when that folder holds them.
    Returns {<corruption>: mean accuracy over the severities, "overall": mean over corruptions,
    "mce": the paper's mean corruption error (100 - mean accuracy over corruptions x severities),
    "by_severity": {<corruption>: {"<severity>": accuracy}}, "categories": {<category>: mean of
    its corruptions' accuracies} (CIFAR-10-C; Hendrycks & Dietterich's noise / blur / weather /
    digital / extra), "source": "generated" or "released", "n": test images}."""
    from ..corruptions import CIFAR10_C_CATEGORIES, SEVERITIES, corruption_names
    from ..corruptions.common import _suite
    from .corrupted import choose_source, corrupted_test_set, mean_corruption_error, released_folder
    names = list(names) if names is not None else corruption_names(suite)
    for name in names:
        _suite(suite).get(name)  # an unknown name is a one-line error, before any work
    severities = list(severities) if severities is not None else list(SEVERITIES[suite])
    for sev in severities:
        if sev not in SEVERITIES[suite]:
            raise BnrobustError(f"the 'corruptions' metric: suite {suite!r} has severities "
                                f"{', '.join(map(str, SEVERITIES[suite]))}, got {sev}")
    src = choose_source(ds, suite, names, ctx.root, source)
    folder = released_folder(ds, suite, ctx.root) if src == "released" else None
    by_sev: dict = {}
    for name in names:
        by_sev[name] = {}
        for sev in severities:
            cds = corrupted_test_set(ds, suite, name, sev, ctx.seed, folder, ctx.device)
            by_sev[name][str(sev)] = _acc_loss(model, cds, ctx)["acc"]
    out: dict = {name: float(np.mean(list(by_sev[name].values()))) for name in names}
    out["overall"] = float(np.mean([out[n] for n in names]))
    out["mce"] = mean_corruption_error(by_sev)
    out["by_severity"] = by_sev
    cats = CIFAR10_C_CATEGORIES if suite == "cifar10" else {}
    out["categories"] = {c: float(np.mean([out[n] for n in members if n in out]))
                         for c, members in cats.items() if any(n in out for n in members)}
    out["source"] = src
    out["n"] = len(ds.y_test)
    return out


@EVALS.register("tilt")
def eval_tilt(model, ds, ctx) -> dict:
    """Tilting angle theta of a binary linear model w.r.t. the nearest-centroid classifier,
    with BN folded into w (w * gamma / sqrt(var + c)), both in the space the linear
    layer's input lives in (after any fixed input normalization)."""
    if ds.num_classes != 2 or not hasattr(model, "input_space_weights"):
        raise BnrobustError("the 'tilt' metric needs a binary task and a linear model")
    with torch.no_grad():
        try:
            w = model.input_space_weights(ds.inputs("test").to(ctx.device)).cpu()
        except ValueError as e:
            raise BnrobustError(f"the 'tilt' metric: {e}") from None
        w_star = nearest_centroid_direction(model.features(ds.inputs("train").to(ctx.device)).cpu(), ds.y_train)
    return {"deg": tilt_angle(w[1] - w[0], w_star)}


@EVALS.register("masking")
def eval_masking(model, ds, ctx, eps: Annotated[list[NonNeg], Field(min_length=2)] = [0.0, 0.05, 0.1, 0.2, 0.5, 1.0],
                 steps: PosInt = 20, n: PosInt = 500, norm: Norm = "linf") -> dict:
    """Accuracy-vs-eps curves of FGSM and PGD (step eps/10, no random start) on the first
    n test points, and the gradient-masking checks on them."""
    # with batch statistics (batch size 0) use the same batch as the other metrics
    sub = ds if ctx.batch_size == 0 else ds.head(n)
    clean = _acc_loss(model, sub, ctx)["acc"]
    f = [_acc_loss(model, sub, ctx, lambda xb, yb: attacks.fgsm(model, xb, yb, e, norm, ctx.clip))["acc"]
         for e in eps]
    p = [_acc_loss(model, sub, ctx, lambda xb, yb: attacks.pgd(model, xb, yb, e, steps, max(e, 1e-12) / 10,
                                                               norm, False, ctx.clip))["acc"] for e in eps]
    k = len(eps)
    problems = _each(lambda c, *curves: masking_problems(c, list(eps), curves[:k], curves[k:]), clean, *f, *p)
    return {"eps": list(eps), "fgsm": f, "pgd": p, "passed": _each(lambda pr: not pr, problems),
            "problems": problems}


@EVALS.register("eps-curve", version=2)  # 2: slack of two test points; targeted curves: eps=0 and ~0 only
def eval_eps_curve(model, ds, ctx, eps: Annotated[list[NonNeg], Field(min_length=2)], steps: PosInt = 20,
                   n: PosInt = 500, norm: Norm = "linf", target: Target = "none") -> dict:
    """Accuracy against eps (Fig. 5) under PGD (`steps` steps of eps/10, no random start) with an
    untargeted or least-likely-targeted objective, on the first n test points, with FGSM at the
    same eps (same objective) and the gradient-masking checks on both curves. The FGSM curve is
    only required to start at clean accuracy and lie above PGD (one large step overshoots); a targeted
    curve only to start at clean accuracy and reach ~0 (see `masking_problems`)."""
    sub = ds if ctx.batch_size == 0 else ds.head(n)
    clean = _acc_loss(model, sub, ctx)["acc"]
    f = [_acc_loss(model, sub, ctx, lambda xb, yb: attacks.fgsm(model, xb, yb, e, norm, ctx.clip, target))["acc"]
         for e in eps]
    p = [_acc_loss(model, sub, ctx, lambda xb, yb: attacks.pgd(model, xb, yb, e, steps, max(e, 1e-12) / 10, norm,
                                                               False, ctx.clip, target))["acc"] for e in eps]
    problems = masking_problems(clean, list(eps), f, p, fgsm_curve=False, n=len(sub.y_test),
                                targeted=target != "none")
    return {"eps": list(eps), "clean": clean, "fgsm": f, "pgd": p, "passed": not problems, "problems": problems}


@EVALS.register("converged")
def eval_converged(model, ds, ctx) -> dict:
    """flag = 1.0 if the model (in eval mode) classifies every training point correctly, else 0.0:
    'trained to 100% training accuracy'. Its mean over seeds is the fraction that converged."""
    acc = _acc_loss(model, ds, ctx, split="train")["acc"]
    return {"flag": _each(lambda a: float(a == 100.0), acc)}


@EVALS.register("batch-mixing")
def eval_batch_mixing(model, ds, ctx, batch_size: Annotated[int, Field(ge=2)] = 100,
                      layers: Annotated[list[PosInt], Field(min_length=1)] = [2, 14]) -> dict:
    """Fig. 8 in numbers, for a model with `.representations` (deep-linear): two disjoint random
    mini-batches A, B of training points, each passed through the model on its own in train mode.
    Per layer l (`input`, `layer<l>`):
    probe: accuracy of `quadratic_probe_accuracy` on the 2-D PCA projection of A and B pooled
      (100% whenever the network maps both batches by the same affine map, as without BN);
    shift: mean distance between the representations of A's first half computed within A and
      within a batch whose other half is from B, over the RMS spread of A's representation
      (0 when a point's representation does not depend on the rest of its batch)."""
    ia, ib = two_minibatches(len(ds.y_train), batch_size, ctx.seed)
    xa, xb = (ds.prepare(ds.take("train", i)).to(ctx.device) for i in (ia, ib))
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


@EVALS.register("cw")
def eval_cw(model, ds, ctx, n: PosInt = 1000, confidence: NonNeg = 0.0, lr: Positive = 1e-2,
            binary_search_steps: PosInt = 9, initial_const: Positive = 1e-3, max_iterations: PosInt = 10000) -> dict:
    """Carlini-Wagner L2 (untargeted) on the first n test points, as App. J / Fig. 13 report it:
    over the points the model classifies correctly, `success` (%) is the share misclassified
    with margin > confidence and l2_mean / l2_median are over those successes (None if none)."""
    model.eval()
    x, y = ds.take("test", slice(0, n)), ds.y_test[:n]
    bs = len(x) if ctx.batch_size in (0, None) else ctx.batch_size
    correct, success, l2 = [], [], []
    for i in range(0, len(x), bs):
        xb, yb = ds.prepare(x[i:i + bs].to(ctx.device)), y[i:i + bs].to(ctx.device)
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


@EVALS.register("fooling")
def eval_fooling(model, ds, ctx, n_per_class: PosInt = 10,
                 steps: Annotated[list[PosInt], Field(min_length=1)] = [1, 10, 100], step_size: Positive = 0.2,
                 init_std: NonNeg = 0.1, clip: Optional[Annotated[list[float], Field(min_length=2, max_length=2)]] = None
                 ) -> dict:
    """Fooling images (App. J, Figs. 12, 14) in numbers: after each number of steps, the mean
    softmax margin (the paper's confidence: top-1 minus top-2 probability), the mean margin of
    the target class (negative where it is not predicted), the % classified as the target, the %
    "saturated" (target margin >= 0.995, shown as 1.00 in Fig. 12) and the mean l2 distance moved
    from the starting noise. clip overrides the dataset's valid range (the paper clips its
    Per-img images to [-1, 1])."""
    model.eval()
    g = torch.Generator().manual_seed(stream_seed(ctx.seed, Stream.FOOLING))
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


def grid_sources(ds: Dataset, seed: int) -> torch.Tensor:
    """Indices of one random test image per class (Fig. 15), drawn with the run's seed."""
    g = torch.Generator().manual_seed(stream_seed(seed, Stream.GRID_SOURCES))
    y = ds.y_test.cpu()
    idx = []
    for c in range(ds.num_classes):
        members = (y == c).nonzero().flatten()
        if len(members) == 0:
            raise BnrobustError(f"the target grid needs a test image of every class; class {c} has none")
        idx.append(int(members[torch.randint(len(members), (1,), generator=g)]))
    return torch.tensor(idx)


@EVALS.register("target-grid")
def eval_target_grid(model, ds, ctx, step_size: Positive = 0.05, margin: Annotated[float, Field(gt=0, lt=1)] = 0.9,
                     max_steps: PosInt = 1000) -> dict:
    """Fig. 15 in numbers: one random test image per class pushed towards every class by targeted
    BIM-l2 until the grid's mean target margin reaches `margin`; the steps that took, the mean l2
    distance moved (off the diagonal) and the % of the grid classified as its target."""
    model.eval()
    idx = grid_sources(ds, ctx.seed)
    x = ds.take("test", idx).to(ctx.device)
    grid, m, steps = attacks.target_grid(model, x, ds.num_classes, step_size, margin, max_steps, ctx.clip)
    off = ~torch.eye(ds.num_classes, dtype=torch.bool, device=m.device)
    moved = (grid - x[:, None]).flatten(2).norm(dim=2)
    return {"sources": idx.tolist(), "steps": steps, "reached": float(m.mean()) >= margin,
            "mean_margin": float(m.mean()), "l2_mean": float(moved[off].mean()),
            "target_rate": 100.0 * float((m > 0).double().mean())}


@EVALS.register("cifar10.1")
def eval_cifar101(model, ds, ctx, sigma: NonNeg = 0.25) -> dict:
    """Clean and noisy (x + N(0, sigma^2), clipped) accuracy on CIFAR-10.1 v6 (Recht et al., 2018),
    decoded like the run's CIFAR-10; {"found": False} when its files are not under the data root."""
    from ..data.cifar import Cifar101NotFound, with_cifar101_test
    try:
        new = with_cifar101_test(ds, ctx.root)
    except Cifar101NotFound:
        return {"found": False, "clean": None, "noise": None}
    return {"found": True, "clean": _acc_loss(model, new, ctx)["acc"],
            "noise": eval_awgn(model, new, ctx, sigma)["acc"]}
