"""Section A of the catalogue: linear models and boundary tilting (paper section 3,
appendices A and I): `toy-tilting`, `mnist37-linear`, `bn-eps-sweep-mnist`, `bn-tracking`."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..runner.execute import get_dataset
from .base import Column, Discrepancy, Experiment, Results
from ..eval import nearest_centroid_direction
from ..report.figures import focus_limits, mark_outliers, subplots, save_figure, weight_image
from . import register

# ---------------------------------------------------------------------------
# Shared settings

MNIST37 = {
    "data": {"name": "mnist-binary", "classes": [3, 7], "n_per_class": 2500, "preprocess": "unit"},
    "model": {"name": "linear", "norm": "none"},
    "train": {"lr": 0.1, "epochs": 50, "batch_size": 128},
    "eval": {"batch_size": 1000, "metrics": {
        "clean": {"name": "clean"},
        "awgn": {"name": "awgn", "sigma": 1.0, "clip": False},
        "fgsm": {"name": "fgsm", "eps": 0.1},
        "theta": {"name": "tilt"},
    }},
}
MNIST37_NOTES = [
    "The paper does not give the batch size of its MNIST 3 vs 7 models; we use mini-batch SGD with "
    "batch 128 (lr 0.1, no momentum, 50 epochs), the field's default.",
    "The linear model is `nn.Linear(784, 2)` with cross-entropy; its boundary normal is w = W[7] - W[3]. "
    "Weight decay is PyTorch's `weight_decay` (adds lambda * w to the gradient of every parameter).",
    "AWGN N(0, 1) is added without clipping to [0, 1]: with clipping, N(0,1) noise saturates most pixels "
    "and the unnormalized models fall to ~60%, far from the paper's 90%; unclipped noise reproduces "
    "the paper's regime. FGSM (eps = 0.1) clips to [0, 1].",
    "theta for BN models uses the tracked running variance (what the model uses at test time), "
    "except for models evaluated with batch statistics, which use the test batch's variance.",
]
# The paper's BNGD: BN on the input with gamma=1, beta=0 fixed ('Affine F'), or learned from gamma ~ U(0, 1)
# ('Affine T', "randomly initialized" as PyTorch < 1.2 did).
BNGD = {"name": "bn", "affine": "fixed", "c": 1e-5}
BNGD_LEARNED = {"name": "bn", "affine": "learned", "gamma_init": "uniform", "c": 1e-5}
CLEAN, AWGN, FGSM, THETA = (Column("Test Acc.", "clean.acc", id="clean"), Column("AWGN Acc.", "awgn.acc", id="awgn"),
                            Column("FGSM Acc.", "fgsm.acc", id="fgsm"), Column("θ (deg)", "theta.deg", id="theta"))


# ---------------------------------------------------------------------------
# toy-tilting (Fig. 1)


def _boundary(ax, model, lim, transform=None, **kw):
    """Draw the zero level set of logit[1] - logit[0] over the plot area."""
    xs, ys = np.linspace(-lim[0], lim[0], 400), np.linspace(-lim[1], lim[1], 400)
    gx, gy = np.meshgrid(xs, ys)
    grid = torch.tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float32)
    with torch.no_grad():
        out = (transform or model)(grid)
    z = (out[:, 1] - out[:, 0]).reshape(gx.shape).numpy()
    ax.contour(gx, gy, z, levels=[0.0], **kw)


def toy_figure(results: Results, out: Path) -> list[str]:
    gd, bn = results.first_ok("GD"), results.first_ok("BNGD")
    if gd is None or bn is None:
        return []
    ds = get_dataset(gd.config, results.root)
    x, y = ds.inputs("train").numpy(), ds.y_train.numpy()
    fig, axes = subplots(1, 3, figsize=(15, 4.2))
    lim = (9.0, 4.0)
    for ax, run, title in ((axes[0], gd, "a. GD(x)"), (axes[1], bn, "b. BNGD(x)")):
        ax.scatter(x[:, 0], x[:, 1], c=y, cmap="coolwarm", s=6, alpha=0.6)
        _boundary(ax, run.model(results.root), lim, colors="k")
        theta = results.stat(run.variant, "theta.deg")[0]
        ax.set_title(f"{title}: θ = {theta:.1f}° (mean over seeds)")
        ax.set_xlim(-lim[0], lim[0]), ax.set_ylim(-lim[1], lim[1]), ax.set_aspect("equal")
        ax.set_xlabel("x1 (task-relevant)"), ax.set_ylabel("x2 (task-irrelevant)")
    model = bn.model(results.root)
    bnl = model.norm
    xn = ((ds.inputs("train") - bnl.running_mean) / torch.sqrt(bnl.running_var + bnl.eps)).numpy()
    axes[2].scatter(xn[:, 0], xn[:, 1], c=y, cmap="coolwarm", s=6, alpha=0.6)
    _boundary(axes[2], model, (3.0, 4.0), transform=model.linear, colors="k")
    axes[2].set_title("c. BN(x), GD: the data BNGD sees, and its boundary")
    axes[2].set_aspect("equal")
    return [save_figure(fig, out / "fig1_toy_tilting.png")]


def toy_checks(r: Results) -> list[tuple[str, bool]]:
    gd, bn = r.mean("GD", "theta.deg"), r.mean("BNGD", "theta.deg")
    return [(f"BNGD tilts the boundary: θ(BNGD) = {bn:.1f}° (paper 66.7°) is above 30°", bn > 30),
            (f"GD does not: θ(GD) = {gd:.1f}° (paper ≈ 0°) is below 10°", gd < 10)]


register(Experiment(
    id="toy-tilting", paper="Figure 1", title="Boundary tilting on a 2-D Gaussian task",
    description="Binary task x | y ~ N(nu_y, Sigma) with one task-relevant and one low-variance, "
                "task-irrelevant dimension. A linear classifier trained by full-batch gradient descent "
                "(GD) stays close to the nearest-centroid direction w* = nu_0 - nu_1; with BN on its input "
                "(gamma=1, beta=0 fixed; BNGD) the boundary tilts along the low-variance dimension.",
    base={
        "data": {"name": "gaussian-2d", "mean0": [-5.0, 0.0], "mean1": [5.0, 0.0],
                 "cov": [[1.0, 0.05], [0.05, 0.01]], "n_train": 1000, "n_test": 10000},
        "model": {"name": "linear", "norm": "none", "init": "zeros"},
        "train": {"lr": 0.1, "epochs": 1000, "batch_size": 0},
        "eval": {"batch_size": 0, "metrics": {"clean": {"name": "clean"}, "theta": {"name": "tilt"}}},
    },
    variants={"GD": {}, "BNGD": {"model.norm": BNGD}},
    seeds={"quick": 3, "paper": 5},
    columns=[CLEAN, THETA],
    reference={"GD": {"theta": 0.0}, "BNGD": {"theta": 66.7}},
    reference_note="The paper gives θ ≈ 0° for GD and 66.7° for BNGD (one run, no SEM); it reports no accuracy.",
    notes=["The paper does not say how many points it samples; we use 1000 training points "
           "(labels Ber(0.5)) and 10,000 fresh test points, full-batch GD, lr 0.1, 1000 epochs, "
           "cross-entropy on a 2-output linear layer started from zero weights.",
           "Zero initialization is our choice: from PyTorch's default random initialization, 1000 GD steps "
           "leave GD at θ = 12.9 ± 4.2° (5 seeds), because the gradient along the low-variance dimension is "
           "too small to remove the random initial weight there; from zero GD gives the paper's θ ≈ 0°. "
           "Run with `--set model.init=default` to see it.",
           "θ is the angle between the input-space boundary normal (BN folded in: w / sqrt(var + c)) "
           "and w*. The paper's 66.7° comes from one run of its own sample; the angle depends on how far "
           "GD has moved towards the max-margin solution in the normalized space after 1000 epochs."],
    discrepancies=[
        Discrepancy(variants=["BNGD"], columns=["theta"],
                    why="Same direction (strong tilt), different magnitude: the angle after a finite number of "
                        "GD steps depends on the sample and the initialization, and the paper reports one run "
                        "without its sample size."),
        Discrepancy(variants=["GD"], columns=["theta"],
                    why="The paper's 0° is approximate ('θ ≈ 0°'), not a measured mean."),
    ],
    checks=toy_checks, figures=[toy_figure],
))

# ---------------------------------------------------------------------------
# mnist37-linear (Table 1)


def mnist37_checks(r: Results) -> list[tuple[str, bool]]:
    m = lambda v, k: r.mean(v, k)  # noqa: E731
    bns = ("BNGD Affine F", "BNGD Affine T")
    return [
        ("BNGD tilts to θ near 90°: " + ", ".join(f"{v} {m(v, 'theta.deg'):.1f}°" for v in bns),
         all(m(v, "theta.deg") > 80 for v in bns)),
        ("BNGD FGSM accuracy near 0: " + ", ".join(f"{m(v, 'fgsm.acc'):.2f}%" for v in bns),
         all(m(v, "fgsm.acc") < 5 for v in bns)),
        ("BNGD AWGN accuracy near chance (50%): " + ", ".join(f"{m(v, 'awgn.acc'):.1f}%" for v in bns),
         all(abs(m(v, "awgn.acc") - 50) < 10 for v in bns)),
        (f"GD and GD+WD are far less tilted: θ = {m('GD', 'theta.deg'):.1f}°, {m('GD + WD', 'theta.deg'):.1f}°",
         max(m("GD", "theta.deg"), m("GD + WD", "theta.deg")) < 60),
        (f"GD and GD+WD keep far more FGSM accuracy than BNGD: {m('GD', 'fgsm.acc'):.1f}%, "
         f"{m('GD + WD', 'fgsm.acc'):.1f}%", min(m("GD", "fgsm.acc"), m("GD + WD", "fgsm.acc"))
         > max(m(v, "fgsm.acc") for v in bns) + 30),
        (f"Weight decay helps: FGSM {m('GD + WD', 'fgsm.acc'):.1f}% vs {m('GD', 'fgsm.acc'):.1f}%, "
         f"AWGN {m('GD + WD', 'awgn.acc'):.1f}% vs {m('GD', 'awgn.acc'):.1f}%",
         m("GD + WD", "fgsm.acc") > m("GD", "fgsm.acc") and m("GD + WD", "awgn.acc") > m("GD", "awgn.acc")),
    ]


register(Experiment(
    id="mnist37-linear", paper="Table 1", title="Linear models on MNIST 3 vs 7: BN tilts the boundary",
    description="Logistic regression on MNIST 3 vs 7 (2500 training images per class, pixels in [0,1]) "
                "trained with plain GD, GD with L2 weight decay (lambda = 0.1), and BNGD: BN on the input "
                "with affine parameters fixed (gamma=1, beta=0, 'F') or learned from a random init ('T'). "
                "θ is the tilting angle w.r.t. the nearest-centroid classifier (mean 7 minus mean 3).",
    base={**MNIST37, "eval": {**MNIST37["eval"], "metrics": {
        **MNIST37["eval"]["metrics"], "masking": {"name": "masking", "n": 500}}}},
    variants={"GD": {}, "GD + WD": {"train.weight_decay": 0.1},
              "BNGD Affine F": {"model.norm": BNGD}, "BNGD Affine T": {"model.norm": BNGD_LEARNED}},
    seeds={"quick": 2, "paper": 5},
    scales={"quick": {"train.epochs": 10}},
    columns=[CLEAN, AWGN, FGSM, THETA],
    reference={
        "GD": {"clean": (96.94, 0.08), "awgn": (90.08, 0.07), "fgsm": (66.96, 0.49), "theta": (49.04, 0.46)},
        "GD + WD": {"clean": (96.93, 0.05), "awgn": (91.93, 0.14), "fgsm": (74.20, 0.35), "theta": (40.83, 0.46)},
        "BNGD Affine F": {"clean": (97.75, 0.03), "awgn": (49.67, 0.18), "fgsm": (0.15, 0.02), "theta": (90.00, 0.00)},
        "BNGD Affine T": {"clean": (97.40, 0.07), "awgn": (49.50, 0.20), "fgsm": (0.13, 0.02), "theta": (90.00, 0.00)},
    },
    notes=MNIST37_NOTES + [
        "Affine 'T' initializes gamma ~ U(0, 1) and beta = 0 ('randomly initialized', as PyTorch < 1.2 did).",
        "Gradient-masking checks run FGSM and PGD-20 (step eps/10) at eps in {0, 0.05, 0.1, 0.2, 0.5, 1} on "
        "500 test images of every trained model; for a linear model FGSM is already the optimal l_inf "
        "attack, so PGD can only match it."],
    checks=mnist37_checks,
    discrepancies=[
        Discrepancy(variants=["GD", "GD + WD", "BNGD Affine F", "BNGD Affine T"], columns=["clean"],
                    why="Our models fit MNIST 3 vs 7 about 0.5-1.3 points better. The paper does not give its "
                        "batch size; with mini-batches of 128 SGD takes ~2000 steps in 50 epochs, while "
                        "full-batch GD for 50 epochs gives 96.8% for GD (close to the paper's 96.94%) but "
                        "under-trains BNGD (theta ~71-73°, FGSM ~7-11%), so we keep 128."),
        Discrepancy(variants=["GD + WD"], columns=["fgsm", "theta"],
                    why="Our lambda = 0.1 regularizes more than the paper's: θ 24° vs 40.8° and FGSM 89% vs 74%. "
                        "The paper does not define its penalty's scale (lambda*||w||^2 or lambda/2*||w||^2, on a "
                        "mean or summed loss, on one or two output rows). At lambda = 0.01 we measured θ = 43.8°, FGSM 84.3% (one seed): "
                        "no single rescaling reproduces both, so we keep the stated 0.1. The paper's direction "
                        "(WD less tilted and more robust than GD) holds."),
        Discrepancy(variants=["BNGD Affine F", "BNGD Affine T"], columns=["theta"],
                    why="Near 90° in both. θ is dominated by the pixels that never vary in training: BN leaves "
                        "their random initial weights untouched and divides them by sqrt(c), so their share of "
                        "w, and hence how close θ gets to 90°, depends on the initialization scale; the "
                        "paper's exact 90.00 ± 0.00 means its dead-pixel weights dominated completely."),
        Discrepancy(variants=["BNGD Affine F", "BNGD Affine T"], columns=["awgn"],
                    why="Both are near chance (50%); the BN model's residual 3 points depend on how the noise "
                        "meets the amplified dead-pixel weights."),
        Discrepancy(variants=["BNGD Affine F", "BNGD Affine T"], columns=["fgsm"],
                    why="0.00% vs 0.13-0.15%: both are at the floor (3 of 2038 test images in the paper)."),
    ],
))

# ---------------------------------------------------------------------------
# bn-eps-sweep-mnist (Fig. 3a)

C_VALUES = [1e-3, 1e-2, 1e-1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0]
L2_VALUES = [1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 9.0]


def _bn_name(c: float) -> str:
    return f"BNGD c={c:g}"


def _l2_name(lam: float) -> str:
    return f"GD-L2 λ={lam:g}"


CHANCE = 50.0         # MNIST 3 vs 7 is a binary task
CHANCE_MARGIN = 10.0  # points this close to chance (e.g. λ = 9) carry no trade-off information


def eps_sweep_xlim(clean: list[float]) -> tuple[tuple[float, float], list[int]]:
    """Clean-accuracy range of Fig. 3a: set by the models above chance + CHANCE_MARGIN, so a
    collapsed model (λ = 9 at ~50%) does not squeeze the others into 2% of the axis; returns
    the limits and the indices of the points outside them."""
    return focus_limits(clean, CHANCE + CHANCE_MARGIN)


def eps_sweep_figure(results: Results, out: Path) -> list[str]:
    present = results.by_variant()
    series = []  # (tag, style, legend, [(variant, value)])
    for names, values, tag, style, legend in (
            ([_bn_name(c) for c in C_VALUES], C_VALUES, "c", "o-", "BNGD (sweep c)"),
            ([_l2_name(v) for v in L2_VALUES], L2_VALUES, "λ", "s--", "GD-L2 (sweep λ)")):
        pts = [(n, v) for n, v in zip(names, values) if n in present and results.stat(n, "clean.acc")[2] > 0]
        series.append((tag, style, legend, pts))
    clean = {n: results.stat(n, "clean.acc") for *_, pts in series for n, _ in pts}
    names = list(clean)
    xlim, off = eps_sweep_xlim([clean[n][0] for n in names])
    off_names = {names[i] for i in off}
    fig, axes = subplots(1, 2, figsize=(12, 4.8))
    for ax, metric, label in ((axes[0], "fgsm.acc", "FGSM (eps=0.1) accuracy (%)"),
                              (axes[1], "awgn.acc", "AWGN N(0,1) accuracy (%)")):
        for tag, style, legend, pts in series:
            inside = [(n, v) for n, v in pts if n not in off_names]
            ys = {n: results.stat(n, metric) for n, _ in pts}
            color = None
            if inside:
                bars = ax.errorbar([clean[n][0] for n, _ in inside], [ys[n][0] for n, _ in inside],
                                   xerr=[np.nan_to_num(clean[n][1]) for n, _ in inside],
                                   yerr=[np.nan_to_num(ys[n][1]) for n, _ in inside],
                                   fmt=style, capsize=2, label=legend)
                color = bars.lines[0].get_color()
                for i, (n, v) in enumerate(inside):  # alternate label sides: neighbours often sit close
                    ax.annotate(f"{tag}={v:g}", (clean[n][0], ys[n][0]), fontsize=7, color=color,
                                xytext=(4, 3) if i % 2 == 0 else (-4, -9), textcoords="offset points",
                                ha="left" if i % 2 == 0 else "right")
            mark_outliers(ax, [(clean[n][0], ys[n][0], f"{tag}={v:g}: clean {clean[n][0]:.1f}% (off scale)")
                               for n, v in pts if n in off_names], xlim, color=color)
        ax.set_xlim(*xlim)
        ax.set_xlabel("clean test accuracy (%)"), ax.set_ylabel(label), ax.grid(alpha=0.3), ax.legend()
    note = (f"\nmodels within {CHANCE_MARGIN:g} points of chance ({CHANCE:g}%) are drawn as arrowheads at the "
            "left edge, at their own robust accuracy") if off_names else ""
    fig.suptitle("Fig. 3a: trading clean accuracy for robustness with BN's c or L2's λ (MNIST 3 vs 7)" + note,
                 fontsize=10)
    return [save_figure(fig, out / "fig3a_eps_sweep.png")]


def eps_sweep_checks(r: Results) -> list[tuple[str, bool]]:
    present = r.by_variant()
    bn = [(c, _bn_name(c)) for c in C_VALUES if _bn_name(c) in present]
    l2 = [_l2_name(v) for v in L2_VALUES if _l2_name(v) in present]
    lo = bn[0][1]
    best = max(bn, key=lambda t: r.mean(t[1], "fgsm.acc"))
    hi = bn[-1][1]
    return [
        (f"Robustness recovers as c grows: FGSM {r.mean(lo, 'fgsm.acc'):.1f}% at c={bn[0][0]:g} -> "
         f"{r.mean(best[1], 'fgsm.acc'):.1f}% at c={best[0]:g}", r.mean(best[1], "fgsm.acc") > r.mean(lo, "fgsm.acc") + 10),
        (f"... and AWGN: {r.mean(lo, 'awgn.acc'):.1f}% at c={bn[0][0]:g} -> "
         f"{max(r.mean(n, 'awgn.acc') for _, n in bn):.1f}% (best over c)",
         max(r.mean(n, "awgn.acc") for _, n in bn) > r.mean(lo, "awgn.acc") + 10),
        (f"... at the cost of clean accuracy: {r.mean(lo, 'clean.acc'):.2f}% at c={bn[0][0]:g} vs "
         f"{r.mean(hi, 'clean.acc'):.2f}% at c={bn[-1][0]:g}", r.mean(hi, "clean.acc") < r.mean(lo, "clean.acc")),
        (f"L2 is the better trade-off: at matched clean accuracy GD-L2 keeps at least as much FGSM accuracy "
         f"as BNGD ({_matched(r, bn, l2)})", _matched(r, bn, l2, ok=True)),
    ]


def _matched(r: Results, bn, l2, ok: bool = False):
    """Compare each GD-L2 point with the BNGD curve interpolated at the same clean accuracy."""
    curve = sorted((r.mean(n, "clean.acc"), r.mean(n, "fgsm.acc")) for _, n in bn)
    pairs = []
    for n in l2:
        clean, fgsm = r.mean(n, "clean.acc"), r.mean(n, "fgsm.acc")
        if curve[0][0] <= clean <= curve[-1][0]:
            pairs.append((clean, fgsm, float(np.interp(clean, *zip(*curve)))))
    if ok:
        return bool(pairs) and all(f >= b - 1.0 for _, f, b in pairs)
    return "; ".join(f"clean {c:.2f}%: L2 {f:.1f}% vs BN {b:.1f}%" for c, f, b in pairs) or "no overlap"


register(Experiment(
    id="bn-eps-sweep-mnist", paper="Figure 3a",
    title="BN's stability constant c trades clean accuracy for robustness (MNIST 3 vs 7)",
    description="BNGD (gamma=1, beta=0 fixed) with c swept over [1e-3, 20], against GD with an L2 penalty "
                "λ swept over [1e-3, 9]; clean accuracy against FGSM (eps=0.1) and AWGN N(0,1) accuracy.",
    base=MNIST37,
    variants={**{_bn_name(c): {"model.norm": {**BNGD, "c": c}} for c in C_VALUES},
              **{_l2_name(v): {"train.weight_decay": v} for v in L2_VALUES}},
    seeds={"quick": 2, "paper": 4},
    scales={"quick": {"train.epochs": 10}},
    scale_variants={"quick": [_bn_name(c) for c in (1e-3, 1e-1, 1.0, 20.0)] +
                    [_l2_name(v) for v in (1e-3, 0.1, 1.0, 9.0)]},
    columns=[CLEAN, AWGN, FGSM, THETA],
    notes=MNIST37_NOTES + [
        "The paper plots this sweep (Fig. 3a) without printing numbers, so the table has no reference "
        "column; the claims below are the ones its text makes. Grid points inside the paper's ranges are ours."],
    checks=eps_sweep_checks, figures=[eps_sweep_figure],
))

# ---------------------------------------------------------------------------
# bn-tracking (appendix I, Figs. 10-11)

TRACK_MODELS = {
    "(a) BNGD, eval mode (tracked stats)": {"model.norm": BNGD},
    "(b) BNGD, train mode (test-batch stats)": {"model.norm": {**BNGD, "stats": "batch"},
                                                "eval.batch_size": 0},
    "(c) GD, pixels in [0,1]": {},
    "(d) GD, per-image standardization": {"model.input_norm": "image-std"},
    "(e) nearest centroid": {"model": {"name": "nearest-centroid"}, "train.epochs": 0},
}
EXTRA = "(d') GD, per-image l2 normalization"
EXTRA_TRACK = {EXTRA: {"model.input_norm": "image-l2"}}
TRACK_C = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]


def _c_name(c: float) -> str:
    return f"BNGD eval mode, c={c:g}"


def _tracking_weights(results: Results, variant: str) -> np.ndarray | None:
    run = results.first_ok(variant)
    if run is None:
        return None
    model, ds = run.model(results.root), get_dataset(run.config, results.root)
    w = model.input_space_weights(ds.inputs("test"))
    return (w[1] - w[0]).numpy()


def tracking_figures(results: Results, out: Path) -> list[str]:
    names = list(TRACK_MODELS)
    ds = get_dataset(results.runs[0].config, results.root)
    fig, axes = subplots(1, 6, figsize=(18, 3.6))
    for ax, name in zip(axes, names):
        w = _tracking_weights(results, name)
        if w is not None:
            weight_image(ax, w.reshape(28, 28), f"{name}\nθ = {results.mean(name, 'theta.deg'):.1f}°, "
                                               f"clean {results.mean(name, 'clean.acc'):.1f}%")
    axes[5].imshow(ds.inputs("train").std(0).reshape(28, 28).numpy(), cmap="gray")
    axes[5].set_title("(f) training-set std"), axes[5].axis("off")
    fig.suptitle("Fig. 10: boundary normals (BN folded in) of seed 0; θ and accuracy are means over seeds")
    paths = [save_figure(fig, out / "fig10_weights.png")]
    sweep = [(1e-5, names[0])] + [(c, _c_name(c)) for c in TRACK_C]
    fig, axes = subplots(1, len(sweep), figsize=(3 * len(sweep), 3.6))
    for ax, (c, name) in zip(axes, sweep):
        w = _tracking_weights(results, name)
        if w is not None:
            weight_image(ax, w.reshape(28, 28), f"c = {c:g}\nθ = {results.mean(name, 'theta.deg'):.1f}°")
    fig.suptitle("Fig. 11: BNGD in eval mode, sweeping c")
    paths.append(save_figure(fig, out / "fig11_c_sweep.png"))
    return paths


def tracking_checks(r: Results) -> list[tuple[str, bool]]:
    a, b, c, d, e = (r.mean(n, "theta.deg") for n in TRACK_MODELS)
    names = list(TRACK_MODELS)
    fb, fc = r.mean(names[1], "fgsm.acc"), r.mean(names[2], "fgsm.acc")
    thetas = [a] + [r.mean(_c_name(x), "theta.deg") for x in TRACK_C if _c_name(x) in r.by_variant()]
    return [
        (f"θ ordering (a) > (b) > (c) > (d) > (e): {a:.1f} > {b:.1f} > {c:.1f} > {d:.1f} > {e:.1f}",
         a > b > c > d > e),
        (f"No tracking lowers θ by {a - b:.1f}° (paper 13.7°)", a - b > 0),
        (f"Removing BN lowers it by a further {b - c:.1f}° (paper 25.2°)", b - c > 0),
        (f"Per-image standardization lowers it by a further {c - d:.1f}° (paper 31.3°)", c - d > 0),
        (f"Per-image l2 normalization instead: θ(d') = {r.mean(EXTRA, 'theta.deg'):.1f}°, "
         f"{c - r.mean(EXTRA, 'theta.deg'):.1f}° below (c)", r.mean(EXTRA, "theta.deg") < c),
        (f"FGSM (eps=0.1): BN without tracking {fb:.1f}% (paper 38.7%) < GD {fc:.1f}% (paper 66.1%)", fb < fc),
        ("θ falls as c grows from 1e-5 to 1 in eval mode: " + ", ".join(f"{t:.1f}°" for t in thetas),
         all(t1 <= t0 + 1.0 for t0, t1 in zip(thetas, thetas[1:])) and thetas[-1] < thetas[0] - 10),
    ]


register(Experiment(
    id="bn-tracking", paper="Appendix I, Figures 10-11",
    title="Tracked statistics vs per-dimension normalization as the cause of tilting",
    description="MNIST 3 vs 7 logistic regression: BNGD (c=1e-5) tested with tracked statistics and with the "
                "statistics of the whole test set as one batch, GD on [0,1] pixels, GD on per-image "
                "standardized images, and the nearest-centroid classifier; then BNGD in eval mode with c "
                "swept from 1e-5 to 1.",
    base=MNIST37,
    variants={**TRACK_MODELS, **EXTRA_TRACK, **{_c_name(c): {"model.norm": {**BNGD, "c": c}} for c in TRACK_C}},
    seeds={"quick": 2, "paper": 5},
    scales={"quick": {"train.epochs": 10}},
    columns=[CLEAN, FGSM, THETA],
    reference={names: {"clean": acc} for names, acc in zip(TRACK_MODELS, (97.9, 97.9, 96.8, 96.9, 94.4))} | {
        "(b) BNGD, train mode (test-batch stats)": {"clean": 97.9, "fgsm": 38.7},
        "(c) GD, pixels in [0,1]": {"clean": 96.8, "fgsm": 66.1}},
    reference_note="Paper values are read from Fig. 10's captions and appendix I's text (one model each, no "
                   "SEM); the paper gives θ only as differences between models, checked below.",
    notes=MNIST37_NOTES + [
        "(a) and (b) are the same trained model (training never reads the running statistics): (b) is "
        "evaluated, attacked included, with the statistics of the whole 3-vs-7 test set (2038 images) as one "
        "batch. The paper says 'batch size of 5000' for (b); its test set of 3s and 7s has 2038 images.",
        "(d) applies per-image standardization inside the model, so FGSM's eps = 0.1 is in pixel units as "
        "for the other models; its θ is measured against the nearest centroid of the standardized images.",
        "The weight images show the boundary normal with BN folded in (w / sqrt(var + c)): for c = 1e-5 "
        "the pixels that never vary in training dominate it, which is why θ is near 90°.",
        "Where we do not reproduce appendix I: (b) does not lower θ here, because the pixels that never "
        "vary are the same in the test set, so test-batch statistics amplify the same weights. Our per-image "
        "*standardization* (d) raises θ and lowers FGSM accuracy, because dividing by each image's std "
        "amplifies perturbations; a per-image l2 normalization (d', our addition) matches the paper's (d) "
        "much better (clean ~96.9%, θ well below (c)), which suggests the paper's 'per-image normalization' "
        "shrank the input scale rather than standardizing it. The c sweep (Fig. 11) reproduces: θ falls "
        "steadily as c grows, and c ~ 1 reaches GD's θ."],
    checks=tracking_checks, figures=[tracking_figures],
    discrepancies=[
        Discrepancy(variants=list(TRACK_MODELS)[:4], columns=["clean"],
                    why="As in Table 1, our models fit about 0.5-1.5 points better (batch 128; the paper does not "
                        "give its batch size)."),
        Discrepancy(variants=["(e) nearest centroid"], columns=["clean"],
                    why="The nearest-centroid classifier has no training choices (trained on 5000 images in both): "
                        "our 96.7% is what the class means of the 5000-image subset give (the paper's 94.4% may "
                        "use another subset or bias)."),
        Discrepancy(variants=["(b) BNGD, train mode (test-batch stats)"], columns=["fgsm"],
                    why="Our FGSM gradient flows through the batch statistics of the attacked test batch (as a "
                        "train-mode evaluation does), so a perturbation shared by all images is cancelled by the "
                        "mean subtraction; the attack is much weaker and varies by seed (± 5.6). The paper does "
                        "not say how it attacked the train-mode model."),
    ],
))
