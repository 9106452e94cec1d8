"""Section D of the catalogue, residual networks on CIFAR-10: `fixup-resnets` (Fig. 4) and
`eps-curves` (Fig. 5): batch-normalized ResNets and WideResNets against their Fixup twins,
which train without normalization (Zhang et al., 2019)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..report.figures import legend, subplots, save_figure
from . import register
from .base import Column, Experiment, PerScale, Results
from .cifar import (DATA, METRICS, STD_NOTE, WRN_NOTE, WRN_TRAIN, _fraction_columns, _kept, _metrics,
                    val_curves_figure)

RESNET_DEPTHS = (20, 32, 44, 56, 110)
QUICK_DEPTHS = (20, 32)
# "Standard hyperparameters" (Fig. 4): those of the Fixup authors' CIFAR code (hongyi-zhang/Fixup,
# cifar_train.py), which the paper's authors forked: SGD with momentum 0.9, batch 128, lr 0.1 divided by
# 10 at epochs 100 and 150 of 200, weight decay 1e-4, Fixup's scalar biases and multipliers at a tenth
# of the learning rate (the models' `scalar_lr`). Its default mixup is not used: the paper mentions none.
# A net whose last-epoch training accuracy is below 15% (chance: 10%) is recorded as failed to train: one
# of two quick-scale ResNet32 Fixup seeds collapsed to chance at lr 0.1 in epoch 8 (training accuracy 29%
# -> 10%, loss stuck at 2.30), and best-val selection would otherwise report its epoch-6 weights as a result.
RESNET_TRAIN = {"lr": 0.1, "epochs": 200, "batch_size": 128, "momentum": 0.9, "weight_decay": 1e-4,
                "schedule": "step", "milestones": [100, 150], "select": "best-val", "fail_below": 15.0}
# Quick scale on a 2-core CPU: ResNet20 and 32, 5,000 training images, 500 for validation, 20 epochs with
# the paper's schedule shape (lr / 10 at half and three quarters of training, as at epochs 100 and 150 of
# 200). Clean and noise accuracy on all 10,000 test images (on the first 300 alone, one model's clean
# accuracy read 52.3% where all 10,000 give 44.7%), PGD on the first 300. Measured on all 10,000 test
# images: 12 epochs with one lr drop after epoch 10 left Fixup 4.4 (ResNet20, 2 seeds) and 5.9 (ResNet32,
# seed 0) points below BN, keeping 99.4-100% of its clean accuracy under noise against BN's 96.0-98.9%;
# 24 epochs in the paper's shape (seed 0) left it 3.5 and 6.6 points below, keeping 98.4% / 98.8% under
# noise against BN's 93.6% / 95.9%. The gap is the budget's: with all 45,000 training images for 16 epochs
# (lr / 10 after 8 and 12; seed 0, one thread each, ~1 h per model here; LONGER_CPU_RUN) Fixup trailed BN
# in validation accuracy for 3 epochs, drew level by epoch 5 and stayed ahead: clean 83.85% vs 83.16%, noise
# 72.3% vs 56.0%, PGD-l_inf 20.3% vs 4.0%, PGD-l_2 8.5% vs 3.4% (PGD on the first 1,000 test images).
QUICK_RESNET = {"data.n_train": 5000, "data.n_val": 500, "train.epochs": 20, "train.milestones": [10, 15],
                "eval.metrics.pgd_linf.n": 300, "eval.metrics.pgd_l2.n": 300}
LONGER_CPU_RUN = ("bnrobust run fixup-resnets --scale paper --seeds 1 --variant 'ResNet32 BN' --variant "
                  "'ResNet32 Fixup' --set train.epochs=16 --set 'train.milestones=[8,12]' "
                  "--set eval.metrics.pgd_linf.n=1000 --set eval.metrics.pgd_l2.n=1000 --out results-longer")
RESNET_NOTE = ("ResNets for CIFAR (He et al., 2016): 3 stages of (depth - 2) / 6 basic blocks, 16-32-64 channels. "
               "'BN': BN after every convolution. 'Fixup': no normalization layer at all; the last convolution of "
               "each residual branch and the classifier start at zero, the other convolutions are He-initialized "
               "and scaled by L^(-1/2) (L residual branches, two layers each), with scalar biases and a scalar "
               "multiplier per branch (see `bnrobust list models`).")
TRAIN_NOTE = ("'Standard hyperparameters' are read as the Fixup authors' CIFAR recipe, whose code the paper's authors "
              "forked: SGD, momentum 0.9, batch 128, lr 0.1 divided by 10 at epochs 100 and 150 of 200, weight decay "
              "1e-4, Fixup's scalar parameters at lr/10, random crops and flips, without its default mixup (the paper "
              "mentions none); the weights of the epoch with the best accuracy on 5,000 held-out training images are "
              "evaluated. A run whose last-epoch training accuracy is below 15% (chance: 10%) is recorded as failed "
              "to train and left out of the means. Another reading: the checkpoints the authors' fork "
              "(AngusG/bn-advex-zhang-fixup) names in its README come from sessions called 'benchmark_...', as in "
              "the Fixup README's 'benchmark' example, which trains without mixup and with weight decay 5e-4; "
              "`--set train.weight_decay=5e-4` runs that reading.")


def _resnet_name(depth: int, norm: str) -> str:
    return f"ResNet{depth} {'BN' if norm == 'bn' else 'Fixup'}"


def fixup_depth_figure(results: Results, out: Path) -> list[str]:
    """Fig. 4: clean, noise, PGD-l_inf and PGD-l_2 accuracy against depth, BN vs Fixup, SEM bars."""
    keys = (("clean", "(a) clean"), ("noise", "(b) noise"), ("pgd_linf", "(c) PGD-l∞"), ("pgd_l2", "(d) PGD-l₂"))
    fig, axes = subplots(1, 4, figsize=(16, 3.8))
    for ax, (key, title) in zip(axes, keys):
        for norm, style in (("fixup", "o-"), ("bn", "s--")):
            pts = [(d, results.stat(_resnet_name(d, norm), f"{key}.acc")) for d in RESNET_DEPTHS
                   if _resnet_name(d, norm) in results.by_variant() and results.ok_runs(_resnet_name(d, norm))]
            if pts:
                ax.errorbar([d for d, _ in pts], [s[0] for _, s in pts], yerr=[np.nan_to_num(s[1]) for _, s in pts],
                            fmt=style, capsize=3, label="Fixup" if norm == "fixup" else "BN")
        ax.set_title(title), ax.set_xlabel("depth"), ax.set_ylabel("test accuracy (%)"), ax.grid(alpha=0.3)
        legend(ax)
    fig.suptitle("Fig. 4: ResNets on CIFAR-10 with BN or Fixup (mean ± SEM over seeds)")
    fig.tight_layout()
    return [save_figure(fig, out / "fig4_fixup_resnets.png")]


def fixup_checks(r: Results) -> list[tuple[str, bool]]:
    out = []
    depths = [d for d in RESNET_DEPTHS if all(_resnet_name(d, n) in r.by_variant() and r.ok_runs(_resnet_name(d, n))
                                              for n in ("bn", "fixup"))]
    for key, what in (("noise", "noise"), ("pgd_linf", "PGD-l_inf"), ("pgd_l2", "PGD-l_2")):
        pairs = [(d, _kept(r, _resnet_name(d, "fixup"), key), _kept(r, _resnet_name(d, "bn"), key)) for d in depths]
        out.append((f"Fixup keeps more of its clean accuracy than BN under {what} at every depth: "
                    + ", ".join(f"ResNet{d} {f:.1f}% vs {b:.1f}%" for d, f, b in pairs),
                    bool(pairs) and all(f > b for _, f, b in pairs)))
    gaps = [(d, r.mean(_resnet_name(d, "fixup"), "clean.acc") - r.mean(_resnet_name(d, "bn"), "clean.acc"))
            for d in depths]
    out.append(("Fixup reaches the clean accuracy of its BN twin within 3 points (paper: about 0.5 points higher): "
                + ", ".join(f"ResNet{d} {g:+.1f}" for d, g in gaps), bool(gaps) and all(g > -3 for _, g in gaps)))
    return out


register(Experiment(
    id="fixup-resnets", paper="Figure 4 (appendix C)",
    title="ResNets 20-110 with BN or Fixup: the unnormalized nets are more robust at every depth",
    description="CIFAR ResNets 20, 32, 44, 56 and 110, batch-normalized or with Fixup initialization and no "
                "normalization, trained with standard hyperparameters; clean, noise (variance 1/16), PGD-l_inf "
                "(eps 0.03) and PGD-l_2 (eps 0.03 sqrt(d)) accuracy against depth.",
    base={"data": DATA, "model": {"name": "resnet20", "norm": "bn"}, "train": RESNET_TRAIN,
          "eval": {"batch_size": 500, "metrics": _metrics("clean", "noise", "pgd_linf", "pgd_l2")}},
    variants={_resnet_name(d, n): {"model.name": f"resnet{d}", "model.norm": n}
              for d in RESNET_DEPTHS for n in ("bn", "fixup")},
    seeds={"quick": 1, "paper": 5},
    scales={"quick": QUICK_RESNET},
    scale_variants={"quick": [_resnet_name(d, n) for d in QUICK_DEPTHS for n in ("bn", "fixup")]},
    columns=[Column("Clean", "clean.acc", 2, id="clean"), Column("Noise", "noise.acc", 1, id="noise"),
             Column("PGD-l∞", "pgd_linf.acc", 1, id="pgd_linf"), Column("PGD-l₂", "pgd_l2.acc", 1, id="pgd_l2")]
    + _fraction_columns(("noise", "Noise"), ("pgd_linf", "PGD-l∞"), ("pgd_l2", "PGD-l₂")),
    reference_note="The paper gives Fig. 4 as a plot only; its text (appendix C): Fixup is about 0.5% higher in "
                   "clean accuracy at every depth, about 15% higher under noise and about 30% higher under PGD.",
    notes=[STD_NOTE, RESNET_NOTE, TRAIN_NOTE,
           "quick scale: ResNet 20 and 32, 5,000 training images, 500 for validation, 20 epochs with the learning "
           "rate divided by 10 after epochs 10 and 15 (the paper's schedule, shortened), one seed; clean and noise "
           "accuracy on all 10,000 test images, PGD on the first 300. These nets are far from fitting their "
           "training set (47-55% training accuracy), and Fixup learns more slowly than BN early on: it trails in "
           "clean accuracy here, by more at ResNet32 than at ResNet20 (see the validation curves). A longer CPU "
           f"budget closes that gap: `{LONGER_CPU_RUN}` (all 45,000 training images, 16 epochs; about 2 h on 2 "
           "cores) had Fixup level with BN's validation accuracy from epoch 5 on; seed 0 on our CPU ended at "
           "83.9% (Fixup) vs 83.2% (BN) clean, and 72.3% vs 56.0% under noise."],
    checks=fixup_checks, figures=[fixup_depth_figure, val_curves_figure],
))

# ---------------------------------------------------------------------------
# eps-curves (Fig. 5)

D = 3 * 32 * 32
# eps in the standardized units the attacks act in, as multiples of 1/255 (the paper's x-axes "Q");
# l_2 radii are the same multiples of sqrt(d)/255, the catalogue's eps_2 = eps_inf sqrt(d). The
# grids go past the paper's axes so that every curve must reach ~0 (the masking check).
EPS_NATURAL = [0, 1, 2, 4, 6, 8, 16, 32, 64, 128]
EPS_PGD_TRAINED = [0, 2, 4, 8, 16, 30, 64, 128]
QUICK_EPS_NATURAL = [0, 2, 6, 16, 32, 128]
QUICK_EPS_PGD_TRAINED = [0, 4, 16, 30, 64, 128]
CURVES = [(norm, target) for norm in ("linf", "l2") for target in ("none", "least-likely")]


def _curve_key(norm: str, target: str) -> str:
    return f"{norm}_{'mis' if target == 'none' else 'tgt_ll'}"


def _curves(grid: list[float], n: int) -> dict:
    return {_curve_key(norm, t): {"name": "eps-curve", "norm": norm, "target": t, "n": n, "steps": 20,
                                  "eps": [q / 255 * (1 if norm == "linf" else math.sqrt(D)) for q in grid]}
            for norm, t in CURVES}


# Madry et al.'s PGD training as in Fig. 5b: eps 4/255, 5 steps of 1/255, random start (standardized units).
PGD_TRAINING = {"name": "pgd", "eps": 4 / 255, "steps": 5, "step_size": 1 / 255, "random_start": True}
QUICK_CURVE_DATA = {"data.n_train": 5000, "data.n_val": 500, "data.n_test": 300}
# PGD-5 training costs ~6 forward-backward passes per batch: the WRN-10-2 of the other quick experiments
# took 2.7 min per epoch on 4,000 images here (2 cores), so the PGD-trained stand-in is a WRN-10-1.
QUICK_PGD_WRN = {"depth": 10, "widen": 1}


def _curve_variant(model: dict, train: dict, grid: list[float], quick_model: dict, quick_train: dict,
                   quick_grid: list[float]) -> PerScale:
    paper = {"model": model, "train": train, "eval.metrics": {"clean": METRICS["clean"], **_curves(grid, 1000)}}
    quick = {"model": quick_model, "train": {**train, **quick_train},
             "eval.metrics": {"clean": METRICS["clean"], **_curves(quick_grid, 100)}}
    return PerScale(paper=paper, quick=quick)


def _eps_variants() -> dict:
    out = {}
    for norm, label in (("bn", "B"), ("fixup", "F")):
        out[f"ResNet32 {label}"] = _curve_variant(
            {"name": "resnet32", "norm": norm}, RESNET_TRAIN, EPS_NATURAL,
            {"name": "resnet32", "norm": norm}, {"epochs": 10, "milestones": [8]}, QUICK_EPS_NATURAL)
        out[f"WRN-28-10 PGD {label}"] = _curve_variant(
            {"name": "wrn", "depth": 28, "widen": 10, "norm": norm}, {**WRN_TRAIN, "adversarial": PGD_TRAINING},
            EPS_PGD_TRAINED, {"name": "wrn", **QUICK_PGD_WRN, "norm": norm}, {"epochs": 6, "milestones": [5]},
            QUICK_EPS_PGD_TRAINED)
    return out


def eps_curves_figure(results: Results, out: Path) -> list[str]:
    """Fig. 5: accuracy vs eps (in 1/255 of the standardized units) for each model and norm; B = BN,
    F = Fixup; mis = untargeted, tgt-ll = least-likely class targeted."""
    models = (("ResNet32", "(a) ResNet32, natural training"), ("WRN-28-10 PGD", "(b) WRN, PGD-l∞ training"))
    fig, axes = subplots(2, 2, figsize=(11, 8), squeeze=False)
    for j, (model, title) in enumerate(models):
        for i, norm in enumerate(("linf", "l2")):
            ax = axes[i][j]
            for label, colour in (("B", "C3"), ("F", "C0")):
                variant = f"{model} {label}"
                if variant not in results.by_variant() or not results.ok_runs(variant):
                    continue
                for target, style in (("none", "-"), ("least-likely", "--")):
                    key = _curve_key(norm, target)
                    runs = results.ok_runs(variant)
                    eps = runs[0].metric(f"{key}.eps")
                    q = [e * 255 / (1 if norm == "linf" else math.sqrt(D)) for e in eps]
                    ys = np.mean([run.metric(f"{key}.pgd") for run in runs], 0)
                    ax.plot(q, ys, style, marker=".", color=colour,
                            label=f"{label}-{'mis' if target == 'none' else 'tgt-ll'}")
            unit = "eps x 255" if norm == "linf" else "eps / sqrt(d) x 255"
            ax.set_title(f"{title}, PGD-20 {'l∞' if norm == 'linf' else 'l₂'}", fontsize=9)
            ax.set_xlabel(unit), ax.set_ylabel("test accuracy (%)"), ax.grid(alpha=0.3), legend(ax, fontsize=7)
    fig.suptitle("Fig. 5: accuracy vs eps, BN (B) vs Fixup (F), untargeted (mis) and least-likely targeted (tgt-ll)")
    fig.tight_layout()
    return [save_figure(fig, out / "fig5_eps_curves.png")]


def _area(r: Results, variant: str, key: str) -> float:
    """Mean accuracy over the eps grid: one number for 'the curve lies higher'."""
    return float(np.mean([np.mean(run.metric(f"{key}.pgd")) for run in r.ok_runs(variant)]))


def eps_curves_checks(r: Results) -> list[tuple[str, bool]]:
    out = []
    for model in ("ResNet32", "WRN-28-10 PGD"):
        b, f = f"{model} B", f"{model} F"
        if not (r.ok_runs(b) and r.ok_runs(f)):
            continue
        for norm, target in CURVES:
            key = _curve_key(norm, target)
            ab, af = _area(r, b, key), _area(r, f, key)
            out.append((f"{model}, {key}: the Fixup curve lies above BN's (mean accuracy over eps {af:.1f}% vs "
                        f"{ab:.1f}%)", af > ab))
    problems = [f"{run.variant} {key}: {p}" for run in r.runs if run.ok for norm, t in CURVES
                for key in [_curve_key(norm, t)] for p in run.metric(f"{key}.problems")]
    out.append(("Every curve passes the gradient-masking checks (eps=0 gives clean accuracy, accuracy reaches ~0 "
                "at the largest eps; untargeted curves also fall with eps and PGD <= FGSM)"
                + (f"; failed: {'; '.join(problems[:4])}" if problems else ""),
                not problems))
    return out


register(Experiment(
    id="eps-curves", paper="Figure 5 (appendix D)",
    title="Accuracy against eps: BN lies below Fixup for natural and PGD-trained residual networks",
    description="Accuracy under 20-step PGD (l_inf and l_2, untargeted and least-likely targeted) against eps for "
                "(a) a naturally trained ResNet32 and (b) a WideResNet-28-10 trained with PGD-l_inf (eps 4/255, 5 "
                "steps of 1/255, random start), each batch-normalized (B) or with Fixup (F).",
    base={"data": DATA, "model": {"name": "resnet32", "norm": "bn"}, "train": RESNET_TRAIN,
          "eval": {"batch_size": 500, "metrics": {"clean": METRICS["clean"], **_curves(EPS_NATURAL, 1000)}}},
    variants=_eps_variants(),
    seeds={"quick": 1, "paper": 1},
    scales={"quick": QUICK_CURVE_DATA},
    columns=[Column("Clean", "clean.acc", 2, id="clean")]
    + [Column(f"PGD {_curve_key(n, t)}: eps=0 / masking ok", f"{_curve_key(n, t)}.passed", 0, id=_curve_key(n, t))
       for n, t in CURVES],
    reference_note="The paper gives Fig. 5 as a plot only; its text quotes, for the PGD-trained WRN at eps = 8/255 "
                   "(l_inf), 38.84% with BN and 41.57% with Fixup.",
    notes=[STD_NOTE, RESNET_NOTE, TRAIN_NOTE.replace("the weights of", "for the ResNet32; the weights of"),
           WRN_NOTE + " Every training batch is replaced by its PGD-l_inf examples (Madry et al., 2018), made in eval "
           "mode.",
           "eps is in the standardized units the attacks act in (x-axes: eps x 255; for l_2, eps / sqrt(d) x 255, "
           "the catalogue's eps_2 = eps_inf sqrt(d)). PGD uses 20 steps of eps/10 without random start, on the "
           "first 1,000 test images (100 at quick scale); each curve is also attacked with FGSM for the "
           "PGD <= FGSM check (untargeted curves only: a least-likely-targeted attack pushes towards its target, "
           "not away from the label, so its accuracy need not fall monotonically nor lie below FGSM's). The grids "
           "extend past the paper's axes so that every curve, targeted ones too, must reach ~0.",
           "quick scale: 5,000 training images, 500 for validation, the first 300 test images (curves on the first "
           "100, where PGD may exceed FGSM by two images before the check fails), the ResNet32s 10 epochs (learning "
           "rate divided after epoch 8), the PGD-trained WRNs 6 epochs (divided after epoch 5). WRN-28-10 (~5 "
           "GFLOP per image) is far too slow for a CPU, and PGD training multiplies it by ~6, so a "
           f"WRN-{QUICK_PGD_WRN['depth']}-{QUICK_PGD_WRN['widen']} of the same design stands in for it."],
    checks=eps_curves_checks, figures=[eps_curves_figure],
))
