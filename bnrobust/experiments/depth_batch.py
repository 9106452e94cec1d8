"""Section C of the catalogue, first row: `depth-batch-grid` (paper Figs. 2 and 6).

Fully connected ReLU nets of constant width 384 over a grid of depth L x batch size B,
with BN on every hidden layer or none, trained by SGD at lr = 1e-5 * B (Yang et al.,
2019). The figure is a heatmap per metric with the maximum trainable depth that Yang et
al.'s Thm. 3.10 predicts for BN nets drawn as a dashed line (see `bnrobust.theory`).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .base import Column, Experiment, Results
from ..report.figures import subplots, save_figure
from . import register

PAPER_B = (5, 10, 20, 50, 100, 150, 200, 250)
PAPER_L = (2, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60)
QUICK_B = (10, 50, 250)
QUICK_L = (2, 10, 20, 30)
TRAINED = 50.0  # clean test accuracy (%) above which we count a net as trained (chance is 10%)


BN = {"name": "bn", "c": 1e-3}


def _name(bn: bool, depth: int, batch: int) -> str:
    return f"{'BN' if bn else 'no BN'} L={depth} B={batch}"


def _grid(batches, depths) -> dict[str, dict]:
    return {_name(bn, L, B): {"model.depth": L, "model.norm": BN if bn else "none",
                              "train.batch_size": B, "train.epochs": 10 if bn else 40}
            for bn in (True, False) for L in depths for B in batches}


def _axes(results: Results) -> tuple[list[int], list[int]]:
    cfgs = [r.config for r in results.runs]
    return (sorted({c["train"]["batch_size"] for c in cfgs}), sorted({c["model"]["depth"] for c in cfgs}))


def _grid_values(results: Results, bn: bool, metric: str) -> np.ndarray:
    """[depth, batch] array of the mean metric over seeds (failed runs count as chance)."""
    batches, depths = _axes(results)
    out = np.full((len(depths), len(batches)), np.nan)
    for i, L in enumerate(depths):
        for j, B in enumerate(batches):
            runs = [r for r in results.runs if r.variant == _name(bn, L, B) and r.done]
            vals = [r.metric(metric) if r.ok else 10.0 for r in runs]  # a diverged net is at chance
            if vals:
                out[i, j] = float(np.mean(vals))
    return out


def max_trained_depth(results: Results, bn: bool) -> dict[int, int]:
    """Per batch size, the deepest net whose mean clean accuracy is above TRAINED."""
    batches, depths = _axes(results)
    clean = _grid_values(results, bn, "clean.acc")
    return {B: max([L for i, L in enumerate(depths) if clean[i, j] >= TRAINED], default=0)
            for j, B in enumerate(batches)}


def _to_index(values, grid) -> np.ndarray:
    """Map values onto the heatmap's index axis (grid[i] -> i), piecewise linearly, with linear
    extrapolation past the ends so a theory line beyond the swept depths stays visible."""
    values, grid = np.asarray(values, float), np.asarray(grid, float)
    if len(grid) == 1:
        return np.zeros_like(values)
    idx = np.interp(values, grid, np.arange(len(grid)))
    lo, hi = values < grid[0], values > grid[-1]
    idx[lo] = (values[lo] - grid[0]) / (grid[1] - grid[0])
    idx[hi] = len(grid) - 1 + (values[hi] - grid[-1]) / (grid[-1] - grid[-2])
    return idx


def grid_figure(results: Results, out: Path) -> list[str]:
    from ..theory import max_trainable_depth
    batches, depths = _axes(results)
    metrics = [("clean.acc", "clean"), ("noise.acc", "Gaussian noise"), ("bim.acc", "BIM")]
    fig, axes = subplots(2, 3, figsize=(15, 8), squeeze=False)
    bs = np.linspace(max(min(batches), 4), max(batches), 200)  # the theorem needs B >= 4
    theory = [max_trainable_depth(int(round(b))) for b in bs]
    for row, bn in enumerate((True, False)):
        for col, (metric, label) in enumerate(metrics):
            ax = axes[row][col]
            vals = _grid_values(results, bn, metric) / 100.0
            im = ax.imshow(vals, origin="lower", aspect="auto", vmin=0.0, vmax=1.0, cmap="viridis",
                           extent=(-0.5, len(batches) - 0.5, -0.5, len(depths) - 0.5))
            ax.set_xticks(range(len(batches)), [str(b) for b in batches])
            ax.set_yticks(range(len(depths)), [str(d) for d in depths])
            if bn:  # the dashed line, mapped from (B, L) onto the heatmap's index axes
                line_y = _to_index(theory, depths)
                ax.plot(_to_index(bs, batches), line_y, "r--", lw=2,
                        label="max trainable depth, 16/log λ_G(B) (Yang et al. Thm. 3.10)")
                ax.set_ylim(-0.5, max(len(depths) - 0.5, float(line_y.max()) + 0.3))
            ax.set_title(f"{'BN' if bn else 'no BN'}: {label} accuracy")
            ax.set_xlabel("batch size B"), ax.set_ylabel("depth L")
            fig.colorbar(im, ax=ax, fraction=0.046)
    axes[0][0].legend(loc="upper right", fontsize=7)
    fig.suptitle(f"depth x batch size ({results.scale} scale; mean over seeds; a failed run counts as 10%)")
    fig.tight_layout()
    return [save_figure(fig, out / "fig2_depth_batch.png")]


def grid_checks(r: Results) -> list[tuple[str, bool]]:
    bn, plain = max_trained_depth(r, True), max_trained_depth(r, False)
    batches = sorted(bn)
    out = [(f"At the smallest batch size BN limits the trainable depth (deepest net above {TRAINED:.0f}% "
            "clean, per batch size; unnormalized nets at large B can fail for lack of updates, as the paper "
            "notes): "
            + ", ".join(f"B={b}: BN {bn[b]} vs no BN {plain[b]}" for b in batches),
            bn[batches[0]] < plain[batches[0]]),
           ("BN's trainable depth is smaller at the smallest batch size than at the largest: "
            f"{bn[batches[0]]} (B={batches[0]}) vs {bn[batches[-1]]} (B={batches[-1]})",
            bn[batches[0]] < bn[batches[-1]])]
    _, depths = _axes(r)
    pairs = []  # (L, B) where both nets trained: BN's BIM accuracy vs no BN's
    for L in depths:
        for B in batches:
            a, b = r.ok_runs(_name(True, L, B)), r.ok_runs(_name(False, L, B))
            if a and b and min(r.mean(_name(True, L, B), "clean.acc"), r.mean(_name(False, L, B), "clean.acc")) >= TRAINED:
                pairs.append(r.mean(_name(True, L, B), "bim.acc") < r.mean(_name(False, L, B), "bim.acc"))
    out.append((f"Where both train, BN nets are less robust to BIM: {sum(pairs)} of {len(pairs)} (L, B) cells",
                bool(pairs) and sum(pairs) >= 0.75 * len(pairs)))
    return out


register(Experiment(
    id="depth-batch-grid", paper="Figures 2, 6", title="BN limits the trainable depth and robustness",
    description="Fully connected ReLU nets of width 384 and depth L, trained by SGD (no momentum) at "
                "lr = 1e-5 * B with batch size B, with BN (c = 1e-3, default gamma/beta) on every hidden "
                "layer or without it; clean, Gaussian-noise and BIM accuracy over the (B, L) grid. The dashed "
                "line in the BN heatmaps is the maximum trainable depth predicted by Yang et al. (2019), "
                "Thm. 3.10.",
    base={
        "data": {"name": "mnist"},
        "model": {"name": "mlp", "depth": 10, "width": 384, "norm": BN, "init": "he"},
        "train": {"lr": 1e-5, "lr_per_example": True, "epochs": 10, "batch_size": 50},
        "eval": {"batch_size": 1000, "metrics": {
            "clean": {"name": "clean"},
            "noise": {"name": "awgn", "sigma": 1.0, "clip": False},
            "bim": {"name": "pgd", "eps": 0.05, "steps": 10, "step_size": 0.005},
        }},
    },
    variants={**_grid(PAPER_B, PAPER_L), **_grid(QUICK_B, QUICK_L)},
    seeds={"quick": 1, "paper": 3},
    scales={"quick": {"data.n_train": 1000, "data.n_test": 1000, "train.lr": 1e-3}},
    scale_variants={"quick": list(_grid(QUICK_B, QUICK_L)), "paper": list(_grid(PAPER_B, PAPER_L))},
    columns=[Column("Clean", "clean.acc", 1, id="clean"), Column("Noise", "noise.acc", 1, id="noise"),
             Column("BIM", "bim.acc", 1, id="bim")],
    notes=["Weights start from He initialization (N(0, 2/fan_in), zero biases), the initialization of Yang et "
           "al.'s analysis; with PyTorch's default, unnormalized ReLU nets deeper than ~10 layers do not train "
           "at these learning rates. gamma = 1 and beta = 0 (PyTorch's defaults) as in the paper.",
           "The paper does not give the noise or BIM settings of this figure. We use N(0, 1) noise, unclipped "
           "(as in Tables 1 and 6), and BIM-l_inf with ε = 0.05, 10 steps of 0.005, clipped to [0, 1] (at ε = 0.1 every net of the quick grid is at ~0%, which hides the differences the figure is about).",
           f"A net counts as trained when its mean clean test accuracy is at least {TRAINED:.0f}% (chance is "
           "10%). Runs whose loss diverged are recorded as failed to train and drawn at chance.",
           "BN nets train for 10 epochs and unnormalized ones for 40, as in the paper.",
           "quick scale: 1,000 training and 1,000 test images, B in {10, 50, 250}, L in {2, 10, 20, 30}, one seed, "
           "and lr = 1e-3 * B instead of 1e-5 * B, because with 60x fewer examples per epoch the paper's rate "
           "leaves every net untrained. paper scale: all 60,000 images, B in {5, ..., 250}, L in {2, ..., 60}, "
           "3 seeds (624 runs: use a GPU, or shard the sweep with --shard)."],
    checks=grid_checks, figures=[grid_figure],
))
