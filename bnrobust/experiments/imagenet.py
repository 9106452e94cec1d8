"""Section D of the catalogue, ImageNet row: `imagenet-pretrained` (paper Tables 5 and 12).

Published ImageNet classifiers with and without BN (torchvision's VGG 11/13/16/19 and their _bn
twins, AlexNet, ResNet-18, and the BagNets of Brendel & Bethge) are evaluated on the ILSVRC2012
validation set; nothing is trained. Table 5: top-1 and top-5 accuracy clean, under Gaussian noise
and under PGD-l_inf (eps 0.01 in the normalized input space). Table 12: BIM-l_inf examples made on
one VGG and evaluated on every VGG.

Where the transfer table is computed: each run of bnrobust is one model, so the transfer table is
a metric of the *source* model's run (`transfer`, in eval/topk.py): it makes the adversarial
examples on its own model once and evaluates every target model (rebuilt from its published
weights) on them. Each (source, all targets) row is then stored, resumable and shardable like any
run, and the report only reads numbers.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.imagenet import CLIP, IMAGENET_MEAN, IMAGENET_STD
from ..models.weights import PUBLISHED
from ..report.figures import subplots, save_figure
from .base import Column, Experiment, PerScale, Results
from . import register

DEPTHS = (11, 13, 16, 19)
EPS = 0.01      # appendix B.1: eps_inf = 0.01 for ImageNet, in the normalized input space
SIGMA = 0.25    # "Noise": AWGN of variance 1/16 (section D of the catalogue)
BIM = {"name": "pgd", "eps": EPS, "steps": 10, "step_size": 5e-3, "random_start": False}  # Table 12
PGD_PAPER = {"name": "pgd", "eps": EPS, "steps": 20, "step_size": EPS / 10, "random_start": False}
QUICK_PGD_STEPS, QUICK_PGD_STEP = 2, EPS / 2
QUICK_N, PAPER_TRANSFER_N = 48, 2048


def _vgg(depth: int, bn: bool) -> str:
    return f"VGG{depth}" + (" BN" if bn else "")


VGGS = [_vgg(d, bn) for d in DEPTHS for bn in (False, True)]
MODEL_SPECS: dict[str, dict] = {
    **{_vgg(d, bn): {"name": f"imagenet-vgg{d}", "norm": "bn" if bn else "none"} for d in DEPTHS for bn in (False, True)},
    "AlexNet": {"name": "imagenet-alexnet"},
    "ResNet18": {"name": "imagenet-resnet18"},
    "BagNet-9": {"name": "bagnet9"},
    "BagNet-17": {"name": "bagnet17"},
    "BagNet-33": {"name": "bagnet33"},
}
BAGNETS = ["BagNet-9", "BagNet-17", "BagNet-33"]


def _transfer(n: int | None) -> dict:
    return {"name": "transfer", "targets": {v: MODEL_SPECS[v] for v in VGGS}, "attack": dict(BIM), "n": n}


def _variants() -> dict:
    """Every model; the VGGs are transfer sources too: at paper scale all eight (the whole 8 x 8
    table), at quick scale the VGG11 pair (the paper's two source rows)."""
    out: dict = {}
    for v, spec in MODEL_SPECS.items():
        if v in VGGS:
            quick = {"model": spec, **({"eval.metrics.transfer": _transfer(None)} if v.startswith("VGG11") else {})}
            out[v] = PerScale({"quick": quick, "paper": {"model": spec, "eval.metrics.transfer": _transfer(PAPER_TRANSFER_N)}})
        else:
            out[v] = {"model": spec}
    return out


# Paper Table 5 (top-5 %, reference only). Our copy of the paper (spec/paper.txt) lost the VGG13 and
# VGG16 rows in text extraction, so those cells are blank rather than guessed.
TABLE5_TOP5 = {
    "VGG11": (88.63, 49.16, 37.12), "VGG11 BN": (89.81, 49.95, 26.12),
    "VGG19": (90.88, 64.86, 34.19), "VGG19 BN": (91.84, 68.79, 24.49),
    "AlexNet": (79.07, 41.41, 39.12), "ResNet18": (88.65, 79.62, 31.07),
    "BagNet-9": (70.39, 1.25, 7.42), "BagNet-17": (81.16, 5.09, 16.66), "BagNet-33": (86.99, 14.62, 24.34),
}
# Paper Table 12 (reference only): source -> target -> (top-1, top-5); BIM-l_inf, 2,048 images.
_T12_TOP1 = {"VGG11": (1.2, 42.4, 37.8, 42.9, 43.8, 49.6, 47.9, 53.8),
             "VGG11 BN": (58.8, 0.3, 58.2, 45.0, 61.6, 54.1, 64.4, 58.7)}
_T12_TOP5 = {"VGG11": (11.9, 80.4, 75.9, 80.9, 80.3, 83.3, 81.6, 85.1),
             "VGG11 BN": (87.9, 6.8, 86.7, 83.7, 89.0, 85.7, 90.4, 88.1)}
TABLE12 = {s: {t: (_T12_TOP1[s][i], _T12_TOP5[s][i]) for i, t in enumerate(VGGS)} for s in _T12_TOP1}

COLUMNS = [Column("Clean top-1", "clean.top1", 2, id="clean1"), Column("Clean top-5", "clean.top5", 2, id="clean5"),
           Column("Noise top-1", "noise.top1", 2, id="noise1"), Column("Noise top-5", "noise.top5", 2, id="noise5"),
           Column("PGD top-1", "pgd.top1", 2, id="pgd1"), Column("PGD top-5", "pgd.top5", 2, id="pgd5")]


def _pixels(x: float) -> str:
    """A size in the normalized space as pixel values (of 255), per channel."""
    return "/".join(f"{x * s * 255:.2f}" for s in IMAGENET_STD)


def _clip_pixels() -> str:
    lo, hi = CLIP
    return ", ".join(f"{c} [{max(0.0, m + lo * s):.3f}, {min(1.0, m + hi * s):.3f}]"
                     for c, m, s in zip("RGB", IMAGENET_MEAN, IMAGENET_STD))


# ---------------------------------------------------------------------------
# Report: transfer table, heatmap, claims


def transfer_matrix(r: Results, acc: str) -> tuple[list[str], list[str], np.ndarray]:
    """(sources, targets, [source, target] mean accuracy) over the variants whose runs measured
    `transfer` ("top1" or "top5")."""
    sources = [v for v in VGGS if any(run.metric("transfer") is not None for run in r.ok_runs(v))]
    targets = list(VGGS)
    out = np.full((len(sources), len(targets)), np.nan)
    for i, s in enumerate(sources):
        for j, t in enumerate(targets):
            vals = [run.metric(f"transfer.{t}.{acc}") for run in r.ok_runs(s)]
            vals = [v for v in vals if v is not None]
            if vals:
                out[i, j] = float(np.mean(vals))
    return sources, targets, out


def transfer_table(results: Results, out: Path) -> list[str]:
    """Table 12 as a heatmap (top-1 and top-5; ours in each cell, the paper's below it where it has
    one) and as Markdown with reference columns, `table12_transfer.md` beside the report."""
    sources, targets, _ = transfer_matrix(results, "top1")
    if not sources:
        return []
    mats = {acc: transfer_matrix(results, acc)[2] for acc in ("top1", "top5")}
    fig, axes = subplots(2, 1, figsize=(3.0 + 1.1 * len(targets), 2 * (1.6 + 0.6 * len(sources))), squeeze=False)
    for ax, (k, acc) in zip(axes[:, 0], enumerate(("top1", "top5"))):
        m = mats[acc]
        im = ax.imshow(m, vmin=0, vmax=100, cmap="viridis", aspect="auto")
        for i, s in enumerate(sources):
            for j, t in enumerate(targets):
                ref = TABLE12.get(s, {}).get(t)
                text = "–" if np.isnan(m[i, j]) else f"{m[i, j]:.1f}"
                if ref is not None:
                    text += f"\n(paper {ref[k]:.1f})"
                ax.text(j, i, text, ha="center", va="center", fontsize=7,
                        color="black" if not np.isnan(m[i, j]) and m[i, j] > 60 else "white")
        ax.set_xticks(range(len(targets)), [t.replace("VGG", "") + ("" if "BN" in t else " no BN") for t in targets],
                      rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(sources)), sources, fontsize=8)
        ax.set_xlabel("target (VGG depth)"), ax.set_ylabel("source")
        ax.set_title(f"{'Top-1' if acc == 'top1' else 'Top-5'} accuracy (%) on transferred BIM examples")
        fig.colorbar(im, ax=ax, fraction=0.04)
    fig.suptitle(f"Table 12: BIM-l∞ ({BIM['steps']} steps of {BIM['step_size']}, ε = {BIM['eps']}) made on the "
                 f"source, evaluated on the target\n({results.scale} scale; source = target is white-box)", fontsize=9)
    names = [save_figure(fig, out / "table12_transfer.png")]
    lines = ["# Table 12: transferred BIM-l∞ examples, accuracy (%) of the target model", "",
             f"Rows: source model (adversarial examples made on it); columns: target model. Scale: {results.scale}. "
             "The *paper* columns are the paper's values (reference only; it reports the VGG11 sources).", ""]
    for k, acc in enumerate(("top1", "top5")):
        head = ["Source"] + [h for t in targets for h in (f"{t} (ours)", f"{t} (paper, reference)")]
        lines += [f"## {'Top-1' if acc == 'top1' else 'Top-5'}", "", "| " + " | ".join(head) + " |",
                  "|" + "---|" * len(head)]
        for i, s in enumerate(sources):
            cells = [s]
            for j, t in enumerate(targets):
                ref = TABLE12.get(s, {}).get(t)
                cells += ["–" if np.isnan(mats[acc][i, j]) else f"{mats[acc][i, j]:.1f}",
                          "" if ref is None else f"{ref[k]:.1f}"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    from ..runner.files import write_text_atomic
    write_text_atomic(out / "table12_transfer.md", "\n".join(lines))
    return names


def imagenet_checks(r: Results) -> list[tuple[str, bool]]:
    m = lambda v, k: r.mean(v, k)  # noqa: E731
    have = [v for v in MODEL_SPECS if r.ok_runs(v)]
    out: list[tuple[str, bool]] = []
    pairs = [d for d in DEPTHS if r.ok_runs(_vgg(d, False)) and r.ok_runs(_vgg(d, True))]
    for acc, paper in (("top5", "8.54 to 11.00"), ("top1", "2.38 to 4.17")):
        gaps = {d: m(_vgg(d, False), f"pgd.{acc}") - m(_vgg(d, True), f"pgd.{acc}") for d in pairs}
        out.append((f"BN lowers PGD {acc.replace('top', 'top-')} accuracy at every VGG depth (paper: by {paper} "
                    "points): " + ", ".join(f"VGG{d} {g:+.2f}" for d, g in gaps.items()),
                    bool(gaps) and all(g > 0 for g in gaps.values())))
    gaps = {d: m(_vgg(d, True), "clean.top5") - m(_vgg(d, False), "clean.top5") for d in pairs}
    out.append(("The BN twins are the more accurate models on clean images (top-5 gain: "
                + ", ".join(f"VGG{d} {g:+.2f}" for d, g in gaps.items()) + "; paper VGG11 +1.18, VGG19 +0.96)",
                bool(gaps) and all(g > 0 for g in gaps.values())))
    gaps = {d: m(_vgg(d, True), "noise.top5") - m(_vgg(d, False), "noise.top5") for d in pairs}
    out.append(("Noise does not rank the pairs as PGD does: BN raises noise top-5 accuracy for some depth (paper: "
                "VGG11 +0.79, VGG19 +3.93): " + ", ".join(f"VGG{d} {g:+.2f}" for d, g in gaps.items()),
                bool(gaps) and any(g > 0 for g in gaps.values())))
    bag = [v for v in BAGNETS if v in have]
    others = [v for v in have if v not in BAGNETS]
    if bag and others:
        worst = min(others, key=lambda v: m(v, "noise.top5"))
        out.append(("The BagNets lose almost everything to noise while every other model keeps far more (paper: "
                    "BagNets 1.25 / 5.09 / 14.62% top-5, all others > 40%): "
                    + ", ".join(f"{v} {m(v, 'noise.top5'):.2f}%" for v in bag)
                    + f"; lowest other: {worst} {m(worst, 'noise.top5'):.2f}%",
                    max(m(v, "noise.top5") for v in bag) < m(worst, "noise.top5")))
    out += transfer_checks(r)
    return out


def transfer_checks(r: Results) -> list[tuple[str, bool]]:
    """Appendix E.2's two statements about Table 12, for every source depth with both twins."""
    out = []
    for k, acc in enumerate(("top1", "top5")):
        sources, targets, mat = transfer_matrix(r, acc)
        at = lambda s, t: mat[sources.index(s), targets.index(t)]  # noqa: E731
        depths = [d for d in DEPTHS if _vgg(d, False) in sources and _vgg(d, True) in sources]
        if not depths:
            continue
        diffs = [(s, t, at(_vgg(s, True), _vgg(t, False)) - at(_vgg(s, False), _vgg(t, True)))
                 for s in depths for t in DEPTHS]
        paper = "10.5 to 16.4" if acc == "top1" else "5.3 to 7.5"
        out.append((f"Examples from a BN source transfer worse to a plain target than those of a plain source to a BN "
                    f"target of the same depths ({acc.replace('top', 'top-')} accuracy higher by {paper} points in the "
                    "paper): " + ", ".join(f"{s}->{t} {d:+.1f}" for s, t, d in diffs),
                    all(d > 0 for _, _, d in diffs)))
        if acc != "top1":
            continue
        plain = [(s, t, at(_vgg(s, True), _vgg(t, False)) - at(_vgg(s, False), _vgg(t, False)))
                 for s in depths for t in DEPTHS if t != s]
        bn = [(s, t, at(_vgg(s, False), _vgg(t, True)) - at(_vgg(s, True), _vgg(t, True)))
              for s in depths for t in DEPTHS if t != s]
        out.append(("Against a plain target, a plain source lowers top-1 accuracy far more than a BN source (paper: "
                    "16.5 to 20.4 points); against a BN target, a BN source has little or no such advantage (paper: "
                    "2.1 to 4.9 points the other way): plain targets "
                    + ", ".join(f"{s}->{t} {d:+.1f}" for s, t, d in plain) + "; BN targets "
                    + ", ".join(f"{s}->{t} {d:+.1f}" for s, t, d in bn),
                    all(p[2] > 0 and p[2] > b[2] for p, b in zip(plain, bn))))
    return out


register(Experiment(
    id="imagenet-pretrained", paper="Tables 5, 12", title="Pretrained ImageNet models with and without BN",
    description="Published ImageNet classifiers evaluated on the ILSVRC2012 validation set (user-supplied, see the "
                "README), nothing trained: torchvision's VGG 11/13/16/19 without and with BN (vgg*, vgg*_bn), "
                "AlexNet and ResNet-18, and the BagNets of Brendel & Bethge (2019). Top-1/top-5 accuracy clean, "
                f"under Gaussian noise (σ = {SIGMA} in the normalized space) and under PGD-l∞ (ε = {EPS}); Table 12: "
                "BIM-l∞ examples made on each VGG source and evaluated on every VGG target.",
    base={
        "data": {"name": "imagenet"},
        "model": {"name": "imagenet-vgg11"},
        "train": {"epochs": 0},
        "eval": {"batch_size": 128, "metrics": {
            "clean": {"name": "topk"},
            "noise": {"name": "topk", "sigma": SIGMA},
            "pgd": {"name": "topk", "attack": dict(PGD_PAPER)},
        }},
    },
    variants=_variants(),
    seeds={"quick": 1, "paper": 1},
    scales={"quick": {"data.n_test": QUICK_N, "eval.batch_size": 32,
                      "eval.metrics.pgd.attack.steps": QUICK_PGD_STEPS,
                      "eval.metrics.pgd.attack.step_size": QUICK_PGD_STEP}},
    columns=COLUMNS,
    reference={v: dict(zip(("clean5", "noise5", "pgd5"), vals)) for v, vals in TABLE5_TOP5.items()},
    reference_note="Paper values from Table 5 (reference only; top-5, the only accuracy the table prints; the text "
                   "says top-1 follows the same trends, with BN costing 2.38 to 4.17 points under PGD). The VGG13 and "
                   "VGG16 rows are missing from our copy of the paper (lost in its text extraction) and are left "
                   "blank. Table 12 with the paper's values as reference columns: `table12_transfer.md` beside this "
                   "report, and the heatmap below.",
    notes=[
        "Weights: the published checkpoints, loaded with strict name and shape checks after a sha256 check: "
        + ", ".join(f"{v} `{PUBLISHED[k].names[0]}`" for v, k in (
            ("VGG11", "vgg11"), ("VGG11 BN", "vgg11_bn"), ("VGG19 BN", "vgg19_bn"), ("AlexNet", "alexnet"),
            ("ResNet18", "resnet18"), ("BagNet-33", "bagnet33")))
        + " (and likewise for the others; see the README). The paper used torchvision's models of 2019; torchvision "
        "has republished AlexNet and ResNet-18 under new names (alexnet-owt-7be5be79, resnet18-f37072fd), which we "
        "download; the old files (alexnet-owt-4df8aa71, resnet18-5c106cde) are read too if present.",
        "Data: torchvision's evaluation transform (RGB, resize the short side to 256 with bilinear filtering, centre "
        "crop 224, ImageNet mean/std), classes in torchvision's order (sorted wnids). Paper scale evaluates Table 5 on "
        "all 50,000 validation images (the paper does not say how many it used; Table 12 says 2,048 'for efficiency "
        "reasons', so we read Table 5 as the whole set) and Table 12 on 2,048 of them (the first 2,048 of a "
        "permutation seeded by the run's seed, the same for every model).",
        f"Noise and attacks act on the normalized input and clip it to [{CLIP[0]:g}, {CLIP[1]:g}] (appendix B), i.e. "
        f"pixel values {_clip_pixels()} in [0, 1] units. σ = {SIGMA} is {_pixels(SIGMA)} /255 in pixel units "
        f"(R/G/B); PGD ε = {EPS} is {_pixels(EPS)} /255. PGD (Table 5): {PGD_PAPER['steps']} steps of ε/10, no random "
        f"start (appendix B.1). BIM (Table 12): {BIM['steps']} steps of {BIM['step_size']}, untargeted, ε = {EPS} "
        "(the paper gives steps and step size but not ε; we take its ImageNet ε).",
        "Table 12 is computed by the `transfer` metric of each source model's run: the BIM examples are made on the "
        "source once, then every target VGG (rebuilt from its published weights) is evaluated on them; the "
        "diagonal is white-box accuracy. Paper scale: every VGG is a source (the 8 x 8 table; the paper prints "
        "the VGG11 rows); quick scale: the VGG11 pair only.",
        f"quick scale: {QUICK_N} images (the same seeded subset for every model) for both tables, PGD with "
        f"{QUICK_PGD_STEPS} steps of ε/2 instead of 20 of ε/10, BIM as in the paper; one seed. With {QUICK_N} images a "
        "top-5 accuracy has a sampling error of about 5-7 points, so small gaps can flip; the BN vs no-BN "
        "comparisons are paired (same images) and the PGD gap of the paper is about 10 points. A few hundred "
        "images (`--set data.n_test=256`) take hours on a CPU and minutes on a GPU.",
        "The models' parameters are frozen (nothing is trained), so attacks compute input gradients only; the run "
        "store keeps no copy of the published weights (each run's config names the file, whose hash is checked).",
    ],
    checks=imagenet_checks, figures=[transfer_table],
))
