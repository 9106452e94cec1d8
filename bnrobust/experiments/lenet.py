"""Section E of the catalogue, MNIST part (appendices D and J): `mnist-c` (Table 8),
`fooling-images` (Fig. 12) and `cw-l2` (Fig. 13), all on AdverTorch's LeNet-5 variant."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import attacks
from ..corruptions import MNIST_C, corrupt
from ..runner.execute import get_dataset
from .base import Column, Experiment, PerScale, Results
from ..report.figures import subplots, save_figure
from . import register

LENET = {"name": "lenet5", "norm": "none", "input_norm": "none"}
# Appendix J.1: 90 epochs of SGD, constant lr 0.01, batch 50.
J1_TRAIN = {"lr": 0.01, "epochs": 90, "batch_size": 50}
# PGD adversarial training (l_inf, eps 0.3, random start): 20 steps of 0.03 at paper scale, 5 of 0.1 at
# quick scale (the variant's overrides differ by scale, so a scale cannot be undone by a variant).
PGD = {"name": "pgd", "eps": 0.3, "random_start": True}
PGD_TRAIN = {"paper": {"train.adversarial": {**PGD, "steps": 20, "step_size": 0.03}},
             "quick": {"train.adversarial": {**PGD, "steps": 5, "step_size": 0.1}}}
# Quick scale of every LeNet experiment: 2 epochs on all 60,000 images with momentum 0.9. Shorter
# plain-SGD schedules (3-5 epochs on 10,000 images) left PGD training at chance (11%), the
# per-image model at 91% and the L2 model at 89% clean.
QUICK_LENET = {"train.epochs": 2, "train.momentum": 0.9}


# ---------------------------------------------------------------------------
# mnist-c (Table 8)

MNIST_C_ORDER = ["brightness", "canny_edges", "dotted_line", "fog", "glass_blur", "gaussian_noise",
                 "impulse_noise", "motion_blur", "rotate", "scale", "shear", "shot_noise", "spatter",
                 "stripe", "translate", "zigzag"]
MNIST_C_LABELS = {n: n.replace("_", " ").title() for n in MNIST_C_ORDER}
TABLE8 = {  # paper Table 8, reference only: corruption -> (Per-img, BN, PGD, PGD BN), each (mean, sem)
    "Clean": ((98.50, 0.05), (99.12, 0.03), (98.51, 0.05), (98.86, 0.02)),
    "Brightness": ((98.46, 0.06), (48, 12), (27, 3), (40, 9)),
    "Canny Edges": ((77, 2), (79, 3), (86, 2), (84, 2)),
    "Dotted Line": ((96.7, 0.1), (95.5, 0.5), (90, 2), (90, 1)),
    "Fog": ((82.0, 0.2), (23, 5), (58, 3), (69, 2)),
    "Glass Blur": ((91, 1), (53, 2), (94.6, 0.3), (95.0, 0.3)),
    "Gaussian Noise": ((90, 1), (84.7, 0.6), (91, 2), (94.2, 0.6)),
    "Impulse Noise": ((96.5, 0.2), (50, 2), (50, 4), (57, 2)),
    "Motion Blur": ((80.5, 0.6), (86, 2), (93.4, 0.2), (93.6, 0.3)),
    "Rotate": ((89.1, 0.2), (91.6, 0.2), (91.1, 0.3), (92.5, 0.1)),
    "Scale": ((87.9, 0.5), (94.3, 0.2), (88, 1), (91.8, 0.5)),
    "Shear": ((95.2, 0.2), (97.3, 0.2), (97.2, 0.1), (97.63, 0.07)),
    "Shot Noise": ((97.8, 0.1), (83.7, 0.8), (98.2, 0.1), (98.60, 0.04)),
    "Spatter": ((90.4, 0.5), (97.60, 0.08), (96.2, 0.2), (96.44, 0.08)),
    "Stripe": ((85.0, 0.2), (92, 1), (52, 3), (51, 8)),
    "Translate": ((46.7, 0.5), (56.6, 0.7), (51, 1), (54.6, 0.8)),
    "Zigzag": ((88.0, 0.8), (81, 1), (71, 1), (76.3, 0.3)),
    "Overall": ((87.0, 0.5), (76, 2), (77, 1), (80, 2)),
}
MNIST_C_VARIANTS = {
    "Per-img": {"model.input_norm": "image-std", "train.weight_decay": 0.01},
    "BN": {"model.norm": "bn"},
    "PGD": PerScale({s: dict(o) for s, o in PGD_TRAIN.items()}),
    "PGD BN": PerScale({s: {"model.norm": "bn", **o} for s, o in PGD_TRAIN.items()}),
}


def _table8_reference() -> dict[str, dict]:
    """Table 8 is corruptions x models; our report table is models x corruptions (keyed by column id)."""
    ids = {"Clean": "clean", "Overall": "overall", **{MNIST_C_LABELS[n]: n for n in MNIST_C_ORDER}}
    return {v: {ids[label]: TABLE8[label][i] for label in TABLE8} for i, v in enumerate(MNIST_C_VARIANTS)}


def mnist_c_checks(r: Results) -> list[tuple[str, bool]]:
    m = lambda v, k: r.mean(v, k)  # noqa: E731
    out = []
    for name in ("brightness", "fog"):
        keep = m("Per-img", f"mnistc.{name}") / max(m("Per-img", "clean.acc"), 1e-9)
        others = {v: m(v, f"mnistc.{name}") for v in ("BN", "PGD", "PGD BN")}
        out.append((f"Per-img keeps most of its accuracy under {name} ({m('Per-img', f'mnistc.{name}'):.1f}%, "
                    f"{100 * keep:.0f}% of clean) while BN and PGD models lose a lot: "
                    + ", ".join(f"{v} {a:.1f}%" for v, a in others.items()),
                    keep > 0.75 and all(a < m("Per-img", f"mnistc.{name}") - 10 for a in others.values())))
    clean = {v: m(v, "clean.acc") for v in MNIST_C_VARIANTS}
    out.insert(0, ("Every model trained (clean accuracy above 90%; the comparison means nothing otherwise): "
                   + ", ".join(f"{v} {a:.1f}%" for v, a in clean.items()), all(a > 90 for a in clean.values())))
    overall = {v: m(v, "mnistc.overall") for v in MNIST_C_VARIANTS}
    out.append(("BN reduces the mean MNIST-C accuracy relative to Per-img (paper: 87.0% vs 76%): "
                f"{overall['Per-img']:.1f}% vs {overall['BN']:.1f}%", overall["BN"] < overall["Per-img"]))
    return out


def mnist_c_figure(results: Results, out: Path) -> list[str]:
    """Accuracy per corruption and model, as grouped bars (the shape of Table 8)."""
    variants = [v for v in MNIST_C_VARIANTS if results.ok_runs(v)]
    if not variants:
        return []
    fig, ax = subplots(figsize=(14, 4.5))
    width = 0.8 / len(variants)
    xs = np.arange(len(MNIST_C_ORDER))
    for i, v in enumerate(variants):
        stats = [results.stat(v, f"mnistc.{n}") for n in MNIST_C_ORDER]
        ax.bar(xs + i * width, [s[0] for s in stats], width,
               yerr=[0 if np.isnan(s[1]) else s[1] for s in stats], label=v)
    ax.set_xticks(xs + 0.4 - width / 2, [MNIST_C_LABELS[n] for n in MNIST_C_ORDER], rotation=45, ha="right")
    ax.set_ylabel("test accuracy (%)"), ax.set_ylim(0, 115), ax.set_yticks(range(0, 101, 20))
    ax.legend(ncol=4, loc="upper center")  # above the bars, in the headroom
    ax.set_title(f"MNIST-C (computed by bnrobust), {results.scale} scale")
    fig.tight_layout()
    return [save_figure(fig, out / "table8_mnist_c.png")]


register(Experiment(
    id="mnist-c", paper="Table 8", title="MNIST-C: BN and PGD training hurt corruption robustness",
    description="AdverTorch's LeNet-5 in four versions: per-image standardization with l2 weight decay "
                "('Per-img'), BN after both convolutions ('BN'), PGD adversarial training ('PGD') and both "
                "('PGD BN'). Accuracy on the 15 MNIST-C corruptions of Mu & Gilmer (2019) plus Gaussian noise, "
                "computed by `bnrobust.corruptions` from the MNIST test set.",
    base={
        "data": {"name": "mnist"},
        "model": dict(LENET),
        "train": {"lr": 0.01, "epochs": 20, "batch_size": 50},
        "eval": {"batch_size": 1000, "metrics": {
            "clean": {"name": "clean"},
            "mnistc": {"name": "corruptions", "suite": "mnist"},
        }},
    },
    variants=MNIST_C_VARIANTS,
    seeds={"quick": 1, "paper": 3},
    scales={"quick": dict(QUICK_LENET)},
    columns=[Column("Clean", "clean.acc", 2, id="clean")]
    + [Column(MNIST_C_LABELS[n], f"mnistc.{n}", 1, id=n) for n in MNIST_C_ORDER]
    + [Column("Overall", "mnistc.overall", 1, id="overall")],
    reference=_table8_reference(),
    reference_note="Paper values from Table 8 (reference only; the paper rounds to one or two significant "
                   "figures). 'Overall' is the mean over the 16 corruptions.",
    notes=["The paper does not give the training schedule of its Table 8 models; we use the LeNet recipe of "
           "its appendix J.1 (SGD, lr 0.01, batch 50) for 20 epochs. Per-img adds λ = 0.01 weight decay, as "
           "the 'Per-img' model of J.1 does. PGD training: l_inf, ε = 0.3, 20 steps of 0.03, random start "
           "(Madry et al., 2018), examples made in eval mode as AdverTorch's tutorial does.",
           "Corruptions are computed by bnrobust (deterministic, seeded by the run's seed), not read from the "
           "released MNIST-C files; with the files, `bnrobust.corruptions.load_mnist_c` reads them.",
           "quick scale: all 60,000 training images but 2 epochs with momentum 0.9 (the paper's schedule has "
           "none), PGD training with 5 steps of 0.1 (same ε), 1 seed. Without momentum, 2-3 short epochs leave "
           "the PGD model at chance."],
    checks=mnist_c_checks, figures=[mnist_c_figure],
))


# ---------------------------------------------------------------------------
# fooling-images (Fig. 12) and cw-l2 (Fig. 13): the three LeNets of appendix J.1

J1_VARIANTS = {
    "L2": {"train.weight_decay": 0.01},
    "BN": {"model.norm": "bn"},
    "Per-img": {"train.weight_decay": 0.01, "model.input_norm": "image-std"},
}


def _j1_base(eval_batch_size: int, **metrics: dict) -> dict:
    """The appendix J.1 LeNet run (data, model, training) with clean accuracy and `metrics`."""
    return {"data": {"name": "mnist"}, "model": dict(LENET), "train": dict(J1_TRAIN),
            "eval": {"batch_size": eval_batch_size, "metrics": {"clean": {"name": "clean"}, **metrics}}}
J1_NOTES = ["Appendix J.1: AdverTorch's LeNet-5, 90 epochs of SGD at lr 0.01, batch 50. 'L2': λ = 0.01; 'BN': BN "
            "after both convolutions (γ, β learned, c = 1e-5, momentum 0.1), no weight decay; 'Per-img': L2 plus "
            "per-image standardization as the model's first layer (so attacks act on pixels).",
            "quick scale: 2 epochs with momentum 0.9 instead of 90 epochs of plain SGD (all 60,000 images)."]


def fooling_figure(results: Results, out: Path) -> list[str]:
    """Fig. 12: one fooling image per target class and model after the largest step count,
    titled with the predicted class and softmax margin."""
    from ..attacks import fooling_trajectory, softmax_margin
    paths = []
    for variant in J1_VARIANTS:
        run = results.first_ok(variant)
        if run is None:
            continue
        spec = run.config["eval"]["metrics"]["fooling"]
        model = run.model(results.root)
        ds = get_dataset(run.config, results.root)
        clip = tuple(spec.get("clip") or ds.clip)
        steps = list(spec.get("steps", (1, 10, 100)))
        g = torch.Generator().manual_seed(run.seed)
        record, targets = fooling_trajectory(model, 1, ds.num_classes, ds.input_shape, max(steps), steps,
                                             spec.get("step_size", 0.2), spec.get("init_std", 0.1), clip, g)
        fig, axes = subplots(len(steps), ds.num_classes, figsize=(1.3 * ds.num_classes, 1.5 * len(steps)),
                             squeeze=False)
        for i, s in enumerate(steps):
            imgs = record[s]
            with torch.no_grad():
                logits = model(imgs)
            pred, margin = logits.argmax(1), softmax_margin(logits, targets)
            for k in range(ds.num_classes):
                ax = axes[i][k]
                ax.imshow(imgs[k, 0].numpy(), cmap="gray", vmin=clip[0], vmax=clip[1])
                ax.set_title(f"{int(pred[k])} ({float(margin[k]):.2f})", fontsize=8)
                ax.set_xticks([]), ax.set_yticks([])
            axes[i][0].set_ylabel(f"{s} it.", fontsize=8)
        fig.suptitle(f"Fooling images, LeNet-5 '{variant}' (target = column; title: predicted class (softmax margin))")
        fig.tight_layout()
        paths.append(save_figure(fig, out / f"fig12_fooling_{variant.lower().replace('-', '')}.png"))
    return paths


def fooling_checks(r: Results) -> list[tuple[str, bool]]:
    def at(v, key, i):
        runs = r.ok_runs(v)
        return float(np.mean([run.metric(f"fooling.{key}")[i] for run in runs])) if runs else float("nan")
    steps = next((run.metric("fooling.steps") for run in r.runs if run.ok), [0])
    mid = 1 if len(steps) > 2 else 0  # an intermediate step: after the last one every model is fooled
    return [("The attack is not masked: fooling images reach their target class on every model "
             "(target rate after the last step: " + ", ".join(f"{v} {at(v, 'target_rate', -1):.0f}%" for v in J1_VARIANTS)
             + ")", all(at(v, "target_rate", -1) >= 90 for v in J1_VARIANTS)),
            (f"The BN model is fooled with high confidence sooner than the L2 model, which has the same input range "
             f"(mean target margin after {steps[mid]} steps: BN {at('BN', 'target_margin_mean', mid):.2f}, L2 "
             f"{at('L2', 'target_margin_mean', mid):.2f}; Per-img, whose input is standardized, "
             f"{at('Per-img', 'target_margin_mean', mid):.2f})",
             at("BN", "target_margin_mean", mid) > at("L2", "target_margin_mean", mid)),
            (f"Per-img makes no fully saturated prediction (paper); % of its fooling images with target margin "
             f">= 0.995 after {steps[-1]} steps: {at('Per-img', 'saturated', -1):.0f}% (BN "
             f"{at('BN', 'saturated', -1):.0f}%, L2 {at('L2', 'saturated', -1):.0f}%)",
             at("Per-img", "saturated", -1) == 0)]


register(Experiment(
    id="fooling-images", paper="Appendix J, Figure 12", title="Fooling images from noise on LeNet-5 variants",
    description="Start from N(0, 0.1) noise and take PGD-l2 steps of 0.2 towards each target class; after 1 to "
                "100 steps, the BN LeNet classifies images that barely resemble digits with full confidence, "
                "while the L2 and per-image baselines need class-relevant strokes.",
    base=_j1_base(1000, fooling={"name": "fooling", "n_per_class": 10, "steps": [1, 10, 100], "step_size": 0.2,
                                 "init_std": 0.1}),
    variants={**J1_VARIANTS, "Per-img": {**J1_VARIANTS["Per-img"], "eval.metrics.fooling.clip": [-1.0, 1.0]}},
    seeds={"quick": 1, "paper": 1},
    scales={"quick": dict(QUICK_LENET)},
    columns=[Column("Clean", "clean.acc", 2, id="clean")],
    reference={"L2": {"clean": 98.0}, "BN": {"clean": 99.2}, "Per-img": {"clean": 98.4}},
    reference_note="The paper reports only clean accuracy for these models (one run each); the fooling images "
                   "are qualitative. Margins and target rates per step are in results.csv.",
    notes=J1_NOTES + ["Fooling images are clipped to [0, 1] for L2 and BN and to [-1, 1] for Per-img, as the paper "
                      "does. The noise N(0, 0.1) is read as standard deviation 0.1."],
    checks=fooling_checks, figures=[fooling_figure],
))


def cw_figure(results: Results, out: Path) -> list[str]:
    """Fig. 13: clean test images and their CW-L2 adversarials for each model."""
    runs = [(v, results.first_ok(v)) for v in J1_VARIANTS]
    runs = [(v, r) for v, r in runs if r is not None]
    if not runs:
        return []
    n = 10
    ds = get_dataset(runs[0][1].config, results.root)
    x, y = ds.take("test", slice(0, n)), ds.y_test[:n]
    fig, axes = subplots(1 + len(runs), n, figsize=(1.3 * n, 1.5 * (1 + len(runs))), squeeze=False)
    for k in range(n):
        axes[0][k].imshow(x[k, 0].numpy(), cmap="gray", vmin=0, vmax=1)
        axes[0][k].set_title(f"label {int(y[k])}", fontsize=8)
    for i, (v, run) in enumerate(runs, start=1):
        spec = dict(run.config["eval"]["metrics"]["cw"])
        spec.pop("name"), spec.pop("n", None)
        model = run.model(results.root)
        adv = attacks.cw_l2(model, x, y, **spec, clip=ds.clip)
        with torch.no_grad():
            pred = model(adv).argmax(1)
        for k in range(n):
            l2 = float((adv[k] - x[k]).norm())
            axes[i][k].imshow(adv[k, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            axes[i][k].set_title(f"{v}: {int(pred[k])} |δ|={l2:.2f}", fontsize=7)
    for row in axes:
        for ax in row:
            ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle("Carlini-Wagner L2 (untargeted, k = 4): top row clean; then each model's adversarial, "
                 "titled with its prediction and ||δ||₂")
    fig.tight_layout()
    return [save_figure(fig, out / "fig13_cw_l2.png")]


def cw_checks(r: Results) -> list[tuple[str, bool]]:
    bn, l2 = r.mean("BN", "cw.l2_mean"), r.mean("L2", "cw.l2_mean")
    succ = {v: r.mean(v, "cw.success") for v in J1_VARIANTS}
    return [(f"CW-L2 succeeds on every attacked image: " + ", ".join(f"{v} {s:.1f}%" for v, s in succ.items()),
             all(s >= 99.9 for s in succ.values())),
            (f"BN needs a clearly smaller perturbation than L2: mean ||δ||₂ {bn:.2f} vs {l2:.2f} "
             f"(paper 0.95 vs 2.89)", bn < 0.75 * l2)]


register(Experiment(
    id="cw-l2", paper="Appendix J, Figure 13", title="Carlini-Wagner L2 perturbation size on LeNet-5 variants",
    description="Untargeted Carlini & Wagner (2017) L2 attack (confidence k = 4, Adam lr 1e-2, 9 binary-search "
                "steps from c = 1e-3, up to 10,000 iterations) on correctly classified test images; the mean "
                "l2 norm of successful perturbations per model.",
    base=_j1_base(500, cw={"name": "cw", "n": 1000, "confidence": 4.0, "lr": 1e-2, "binary_search_steps": 9,
                           "initial_const": 1e-3, "max_iterations": 10000}),
    variants=dict(J1_VARIANTS),
    seeds={"quick": 1, "paper": 3},
    scales={"quick": {**QUICK_LENET, "eval.metrics.cw.n": 100, "eval.metrics.cw.max_iterations": 1000,
                      "eval.metrics.cw.binary_search_steps": 6}},
    columns=[Column("Clean", "clean.acc", 2, id="clean"), Column("CW success (%)", "cw.success", 1, id="success"),
             Column("mean ||δ||₂", "cw.l2_mean", 2, id="l2_mean"),
             Column("median ||δ||₂", "cw.l2_median", 2, id="l2_median")],
    reference={"L2": {"clean": 98.0, "l2_mean": 2.89, "success": 100.0},
               "BN": {"clean": 99.2, "l2_mean": 0.95, "success": 100.0},
               "Per-img": {"clean": 98.4}},
    reference_note="Paper values from appendix J.1 (reference only): clean accuracies and the mean ||δ||₂ of the "
                   "L2 and BN models; it gives no value for Per-img.",
    notes=J1_NOTES + ["quick scale attacks the first 100 test images with 6 binary-search steps of at most 1,000 "
                      "iterations; paper scale the first 1,000 with the paper's 9 x 10,000."],
    checks=cw_checks, figures=[cw_figure],
))
