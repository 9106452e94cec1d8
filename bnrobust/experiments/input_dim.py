"""Section B of the catalogue: input dimension (paper section 5, appendix F):
`input-dim-linear` (Table 13) and `input-dim-mlp` (Tables 6, 7, 14).

MNIST is upscaled to sqrt(d) x sqrt(d) with nearest-neighbour interpolation, batch by
batch (`data.size`), so no upscaled copy of the dataset is ever held in memory.
"""
from __future__ import annotations

from .base import Column, Discrepancy, Experiment, Results
from . import register

LAMBDAS = {56: 0.01, 84: 0.0225, 112: 0.05}  # the paper's l2 constants per sqrt(d) (Table 13)


def _variants(sizes, bn_options, with_lambda: bool) -> dict[str, dict]:
    out = {}
    for size in sizes:
        for bn in bn_options:
            name = f"{size}" + (" BN" if bn else "")
            over = {"data.size": size, **({"model.norm": "bn", "model.norm_layers": [1]} if bn else {})}
            out[name] = over
            if with_lambda and size in LAMBDAS:
                out[f"{name} λ={LAMBDAS[size]}"] = {**over, "train.weight_decay": LAMBDAS[size]}
    return out


def _ratio_checks_linear(r: Results) -> list[tuple[str, bool]]:
    sizes = [s for s in (28, 56, 84, 112) if r.ok_runs(str(s))]
    acc = [r.mean(str(s), "fgsm10.acc") for s in sizes]
    falls = all(a0 > a1 for a0, a1 in zip(acc, acc[1:])) and len(acc) > 1
    out = [(f"Without weight decay FGSM (ε=0.1) accuracy falls as sqrt(d) grows: "
            + " → ".join(f"{a:.1f}%" for a in acc) + f" for sqrt(d) = {', '.join(map(str, sizes))}", falls)]
    lam = [(s, r.ratio(f"{s} λ={LAMBDAS[s]}", "28", "fgsm10.acc")[0]) for s in sizes if s in LAMBDAS]
    if lam:
        out.append((f"With the paper's λ the FGSM accuracy ratio to sqrt(d)=28 stays near 1 (within 0.85-1.15): "
                    + ", ".join(f"{s}: {v:.2f}" for s, v in lam), all(0.85 <= v <= 1.15 for _, v in lam)))
        plain = [(s, r.ratio(str(s), "28", "fgsm10.acc")[0]) for s in sizes if s in LAMBDAS]
        out.append(("Weight decay keeps more FGSM accuracy than no weight decay at every size: "
                    + ", ".join(f"{s}: {a:.2f} vs {b:.2f}" for (s, a), (_, b) in zip(lam, plain)),
                    all(a > b for (_, a), (_, b) in zip(lam, plain))))
    dmg = [(s, r.ratio(str(s), "28", "damage10.damage")[0], r.ratio(str(s), "28", "damage05.damage")[0])
           for s in sizes if s > 28]
    if dmg:
        out.append(("Adversarial damage (loss increase) grows with sqrt(d), roughly like the prediction sqrt(d)/28: "
                    + ", ".join(f"{s}: {a:.2f} (ε=0.1), {b:.2f} (ε=0.05) vs {s / 28:.0f}" for s, a, b in dmg),
                    all(a > 1 and b > 1 for _, a, b in dmg)))
    return out


LINEAR_EVAL = {"batch_size": 1000, "metrics": {
    "clean": {"name": "clean"},
    "fgsm05": {"name": "fgsm", "eps": 0.05},
    "fgsm10": {"name": "fgsm", "eps": 0.1},
    "damage05": {"name": "adv-damage", "eps": 0.05},
    "damage10": {"name": "adv-damage", "eps": 0.1},
}}

register(Experiment(
    id="input-dim-linear", paper="Table 13", title="Input dimension and l2 weight decay, linear model",
    description="A 10-class linear model (softmax regression) on MNIST upscaled to sqrt(d) x sqrt(d) pixels "
                "with nearest-neighbour interpolation, with and without l2 weight decay. Without it, the "
                "FGSM loss grows with sqrt(d) as Simon-Gabriel et al. (2019, Thm. 4) predict and adversarial "
                "accuracy collapses; a λ chosen per size keeps the adversarial accuracy of sqrt(d) = 28. "
                "Rows with sqrt(d) > 28 are ratios to the sqrt(d) = 28 row, as in the paper.",
    base={
        "data": {"name": "mnist", "size": 28},
        "model": {"name": "linear"},
        "train": {"lr": 0.01, "epochs": 50, "batch_size": 128},
        "eval": LINEAR_EVAL,
    },
    variants=_variants((28, 56, 84, 112), (False,), with_lambda=True),
    seeds={"quick": 1, "paper": 5},
    scales={"quick": {"train.epochs": 30}},
    columns=[Column("Clean", "clean.acc", 3, relative=True, id="clean"),
             Column("ε=0.05", "fgsm05.acc", 2, relative=True, id="fgsm05"),
             Column("ε=0.1", "fgsm10.acc", 2, relative=True, id="fgsm10"),
             Column("Loss clean", "clean.loss", 3, relative=True, id="loss_clean"),
             Column("Loss ε=0.1", "fgsm10.loss", 3, relative=True, id="loss_fgsm10"),
             Column("Damage ε=0.05", "damage05.damage", 2, relative=True, id="damage05"),
             Column("Damage ε=0.1", "damage10.damage", 2, relative=True, id="damage10"),
             Column("Pred.", "damage10.pred", 0, id="pred")],
    ratio_to={v: "28" for v in _variants((56, 84, 112), (False,), with_lambda=True)},
    reference={
        "28": {"clean": (92.4, 0.1), "fgsm10": (53.9, 0.3), "loss_clean": (0.268, 0.001),
               "loss_fgsm10": (1.410, 0.004)},
        "56": {"clean": (1.001, 0.001), "fgsm10": (0.33, 0.03), "loss_clean": (1.011, 0.007),
               "loss_fgsm10": (2.449, 0.009), "pred": 2},
        "56 λ=0.01": {"clean": (0.999, 0.002), "fgsm10": (0.98, 0.01), "loss_clean": (1.010, 0.007),
                      "loss_fgsm10": (1.01, 0.01)},
        "84": {"clean": (0.998, 0.002), "fgsm10": (0.10, 0.09), "loss_clean": (1.06, 0.01),
               "loss_fgsm10": (4.15, 0.02), "pred": 3},
        "84 λ=0.0225": {"clean": (0.996, 0.003), "fgsm10": (0.96, 0.04), "loss_clean": (1.05, 0.02),
                        "loss_fgsm10": (1.06, 0.03)},
        "112": {"clean": (0.992, 0.004), "fgsm10": (0.1, 0.2), "loss_clean": (1.18, 0.03),
                "loss_fgsm10": (5.96, 0.02), "pred": 4},
        "112 λ=0.05": {"clean": (0.987, 0.004), "fgsm10": (1.00, 0.03), "loss_clean": (1.14, 0.04),
                       "loss_fgsm10": (1.04, 0.03)},
    },
    reference_note="Paper values from Table 13 (reference only). The sqrt(d) = 28 row is absolute (accuracy in %, "
                   "mean cross-entropy); every other row is the ratio to it, computed per seed. The paper prints "
                   "no ε=0.05 or damage columns: its text says the predicted damage lies between the measured "
                   "ε=0.05 and ε=0.1 damage for every size except 112.",
    notes=["FGSM is the optimal l_inf attack on a linear model (Simon-Gabriel et al., 2019); it clips to [0, 1] "
           "and acts on the upscaled image, so each of the d pixels moves by ε.",
           "Damage = mean cross-entropy after the attack minus before it; Pred. = sqrt(d) / 28, the growth of "
           "the damage that Thm. 4 of Simon-Gabriel et al. (2019) predicts.",
           "Weight decay is PyTorch's SGD weight_decay (adds λ·w to the gradient of every parameter, biases "
           "included) with the paper's λ per size; the paper does not say whether it decays biases.",
           "quick scale: all 60,000 training images, 30 epochs, 1 seed; paper scale: 50 epochs, 5 seeds. Weight "
           "decay needs many steps to act: the λ rows keep 0.72-0.86 of the 28 row's FGSM accuracy after 10 "
           "epochs, 0.94-1.07 after 30 and 1.13-1.21 after 50, so the ratio drifts upwards with training time "
           "and 'near 1' holds best at the quick scale. Evaluation always uses the full 10,000 test images."],
    discrepancies=[
        Discrepancy(variants=["56", "84", "112"], columns=["pred"],
                    why="Pred. is the theory's sqrt(d)/28, not a measurement."),
        Discrepancy(variants=["28"], columns=None,
                    why="Our sqrt(d)=28 model fits slightly worse (91.8% vs 92.4% clean, loss 0.298 vs 0.268) and "
                        "is more vulnerable to FGSM (34% vs 54%; adversarial loss 1.87 vs 1.41). The paper does "
                        "not say whether its FGSM clips to [0, 1] or how it initializes; we clip and use PyTorch's "
                        "default initialization. Ratios are relative to our own 28 row, so they are comparable."),
        Discrepancy(variants=["56", "84", "112", "56 λ=0.01", "84 λ=0.0225", "112 λ=0.05"], columns=["fgsm10"],
                    why="Relative to a more vulnerable 28 row (see the 28 row), the ratios of the unregularized "
                        "rows fall less steeply than the paper's, and the λ rows land above 1 (1.13-1.21) but "
                        "stay flat across sizes."),
    ],
    checks=_ratio_checks_linear,
))


# ---------------------------------------------------------------------------
# input-dim-mlp (Tables 6, 7, 14)


def _mlp_checks(r: Results) -> list[tuple[str, bool]]:
    out = []
    sizes = [s for s in (28, 56, 84) if r.ok_runs(str(s)) and r.ok_runs(f"{s} BN")]
    for metric, label in (("bim.acc", "BIM"), ("noise.acc", "noise")):
        gaps = [(s, r.mean(str(s), metric) - r.mean(f"{s} BN", metric)) for s in sizes]
        out.append((f"BN loses more {label} accuracy than no BN at every size (λ = 0): "
                    + ", ".join(f"{s}: {g:+.1f} points" for s, g in gaps),
                    bool(gaps) and all(g > 0 for _, g in gaps)))
    bim = [r.mean(f"{s} BN", "bim.acc") for s in sizes]
    out.append(("With BN, BIM accuracy keeps falling as sqrt(d) grows: " + " → ".join(f"{a:.1f}%" for a in bim),
                len(bim) > 1 and all(a0 > a1 for a0, a1 in zip(bim, bim[1:]))))
    lam = [s for s in (56, 84) if r.ok_runs(f"{s} λ={LAMBDAS[s]}") and r.ok_runs(f"{s} BN λ={LAMBDAS[s]}")]
    if lam:
        gaps = [(s, r.mean(f"{s} λ={LAMBDAS[s]}", "bim.acc") - r.mean(f"{s} BN λ={LAMBDAS[s]}", "bim.acc"))
                for s in lam]
        out.append(("With weight decay, BN still degrades BIM accuracy (Table 7): "
                    + ", ".join(f"{s}: {g:+.1f} points" for s, g in gaps), all(g > 0 for _, g in gaps)))
    return out


MLP_VARIANTS = _variants((28, 56, 84), (False, True), with_lambda=True)

register(Experiment(
    id="input-dim-mlp", paper="Tables 6, 7, 14", title="Input dimension and BN, two-hidden-layer MLP",
    description="A two-hidden-layer ReLU MLP, hidden width d/2, optionally with BN on its first hidden layer, "
                "on MNIST upscaled to sqrt(d) x sqrt(d), without (Table 6) and with (Table 7) the l2 constants "
                "of the linear model. Noise N(0, 1) is added to the 28x28 image before upscaling; BIM-l_inf acts "
                "on the upscaled image. Relative columns are ratios to the sqrt(d) = 28 model without BN "
                "(Table 14).",
    base={
        "data": {"name": "mnist", "size": 28},
        "model": {"name": "mlp", "depth": 2, "width_ratio": 0.5, "norm": "none"},
        "train": {"lr": 0.01, "epochs": 50, "batch_size": 128},
        "eval": {"batch_size": 500, "metrics": {
            "clean": {"name": "clean"},
            "noise": {"name": "awgn", "sigma": 1.0, "clip": False, "before_transform": True},
            "bim": {"name": "pgd", "eps": 0.1, "steps": 100, "step_size": 1e-3},
        }},
    },
    variants=MLP_VARIANTS,
    seeds={"quick": 2, "paper": 5},
    scales={"quick": {"data.n_train": 10000, "data.n_test": 1000, "train.epochs": 4, "train.lr": 0.05,
                      "eval.metrics.bim.steps": 20, "eval.metrics.bim.step_size": 5e-3}},
    scale_variants={"quick": ["28", "28 BN", "56", "56 BN", "84", "84 BN", "56 λ=0.01", "56 BN λ=0.01"]},
    columns=[Column("Clean", "clean.acc", 2, id="clean"), Column("Noise", "noise.acc", 1, id="noise"),
             Column("ε=0.1", "bim.acc", 1, id="bim"),
             Column("Clean (rel.)", "clean.acc", 4, relative=True, id="clean_rel"),
             Column("ε=0.1 (rel.)", "bim.acc", 2, relative=True, id="bim_rel"),
             Column("Loss clean (rel.)", "clean.loss", 3, relative=True, id="loss_clean_rel"),
             Column("Loss ε=0.1 (rel.)", "bim.loss", 2, relative=True, id="loss_bim_rel")],
    ratio_to={v: "28" for v in MLP_VARIANTS if v != "28"},
    reference={
        "28": {"clean": (97.95, 0.08), "noise": (93.0, 0.4), "bim": (66.7, 0.9),
               "clean_rel": (97.95, 0.08), "bim_rel": (66.7, 0.9), "loss_clean_rel": (0.0669, 0.0008),
               "loss_bim_rel": (1.06, 0.02)},
        "28 BN": {"clean": (97.88, 0.09), "noise": (76.6, 0.7), "bim": (22.9, 0.7),
                  "clean_rel": (0.9992, 0.0012), "bim_rel": (0.34, 0.03), "loss_clean_rel": (1.06, 0.04),
                  "loss_bim_rel": (3.18, 0.03)},
        "56": {"clean": (98.19, 0.04), "noise": (93.8, 0.1), "bim": (53.2, 0.7),
               "clean_rel": (1.0025, 0.0009), "bim_rel": (0.80, 0.02), "loss_clean_rel": (0.87, 0.02),
               "loss_bim_rel": (1.68, 0.03)},
        "56 BN": {"clean": (98.22, 0.02), "noise": (79.3, 0.6), "bim": (8.6, 0.8),
                  "clean_rel": (1.0027, 0.0008), "bim_rel": (0.13, 0.09), "loss_clean_rel": (0.91, 0.03),
                  "loss_bim_rel": (5.83, 0.03)},
        "84": {"clean": (98.27, 0.04), "noise": (94.3, 0.1), "bim": (47.6, 0.8),
               "clean_rel": (1.0033, 0.0009), "bim_rel": (0.71, 0.02), "loss_clean_rel": (0.86, 0.02),
               "loss_bim_rel": (2.15, 0.03)},
        "84 BN": {"clean": (98.28, 0.05), "noise": (80.5, 0.6), "bim": (6.1, 0.5),
                  "clean_rel": (1.0033, 0.0010), "bim_rel": (0.09, 0.08), "loss_clean_rel": (0.88, 0.02),
                  "loss_bim_rel": (7.34, 0.02)},
        "56 λ=0.01": {"clean": (97.62, 0.06), "noise": (95.93, 0.06), "bim": (87.9, 0.2)},
        "56 BN λ=0.01": {"clean": (96.23, 0.03), "noise": (90.22, 0.18), "bim": (66.2, 0.8)},
        "84 λ=0.0225": {"clean": (96.99, 0.05), "noise": (95.69, 0.09), "bim": (87.9, 0.1)},
        "84 BN λ=0.0225": {"clean": (93.30, 0.09), "noise": (87.72, 0.11), "bim": (65.1, 0.5)},
    },
    reference_note="Paper values from Tables 6 and 7 (absolute columns) and Table 14 (relative columns; its "
                   "sqrt(d) = 28 row without BN is absolute), reference only.",
    notes=["BN sits on the first hidden layer (Linear -> BN -> ReLU); the paper says only 'one hidden layer'. "
           "Its footnote says the trends were the same for constant-width layers.",
           "Inputs are pixels in [0, 1]. The noise is N(0, 1) added to the 28x28 image before upscaling and not "
           "clipped (as in Table 1); BIM-l_inf (ε = 0.1, 100 steps of 1e-3, no random start) clips to [0, 1].",
           "quick scale: 10,000 training images, 4 epochs at lr 0.05 (at the paper's 0.01 the unnormalized MLP "
           "reaches only ~60% clean accuracy in 4 epochs, BN ~89%, which makes the robustness comparison "
           "meaningless), 1,000 test images (a seeded subset), BIM with 20 steps of 5e-3 (same ε), sizes 28-84 and "
           "λ only at 56, 2 seeds. Compare the direction (BN vs none), not the values.",
           "paper scale is 10 variants x 5 seeds x 50 epochs of 60,000 images, with a 3528-wide MLP at "
           "sqrt(d) = 84: run it on a GPU (`--device cuda`)."],
    checks=_mlp_checks,
))
