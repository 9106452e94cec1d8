"""Reports: a Markdown file per (experiment, scale) that mirrors the paper's table with
our mean +- SEM next to the paper's values (reference column), the paper's claims
checked on our numbers, figures as PNG, and results.csv / results.json."""
from __future__ import annotations

import csv
import io
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from .. import __version__
from ..config import apply_overrides
from ..experiments.base import Column, Results
from ..runner.storage import write_json_atomic, write_text_atomic

DEVIATION_SEM = 3.0  # a cell is flagged when ours and the paper's differ by more than this many SEMs
MIN_SEEDS = 2        # below this we have no SEM, so a cell is not tested against the paper at all


def fmt(mean: float, sem: float, digits: int = 2) -> str:
    if mean is None or math.isnan(mean):
        return "–"
    if sem is None or math.isnan(sem):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {sem:.{digits}f}"


def _ref(value: Any) -> tuple[float, float]:
    if isinstance(value, (tuple, list)):
        return float(value[0]), float(value[1])
    return float(value), math.nan


def deviation(ours: tuple[float, float, int], ref: tuple[float, float]) -> float:
    """|ours - paper| in units of the combined SEM (paper SEM 0 when it gives none); nan (not
    tested) with fewer than MIN_SEEDS seeds: one seed has no SEM, and the paper's SEM alone
    would ignore our seed-to-seed spread. inf when neither side has spread and they differ."""
    m, s, n = ours
    rm, rs = ref
    if math.isnan(m) or n < MIN_SEEDS:
        return math.nan
    sem = math.sqrt((0 if math.isnan(s) else s) ** 2 + (0 if math.isnan(rs) else rs) ** 2)
    return abs(m - rm) / sem if sem > 0 else (math.inf if m != rm else 0.0)


def _apart(z: float) -> str:
    return f"{z:.1f} SEM apart" if math.isfinite(z) else "identical over our seeds and no SEM in the paper"


def _flat(prefix: str, node: Any, out: dict) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            _flat(f"{prefix}.{k}" if prefix else k, v, out)
    elif isinstance(node, (int, float, bool)) or node is None:
        out[prefix] = node


def table_markdown(results: Results) -> tuple[str, list[str], int]:
    """The main table; one line per reason for the cells that deviate from the paper (a reason
    shared by several cells is printed once, naming them); and how many cells with a paper
    value have too few seeds to be tested."""
    exp = results.experiment
    cols: list[Column] = exp.columns
    has_ref = any(exp.reference.get(v) for v in exp.variants)
    head = ["Model", "n"]
    for c in cols:
        head.append(f"{c.label} (ours)")
        if has_ref:
            head.append(f"{c.label} (paper, reference)")
    head = [h.replace("|", "\\|") for h in head]  # labels like ||δ||₂ must not split the Markdown cells
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    flagged: dict[str, list[str]] = {}  # reason -> the cells it explains, in table order
    untested = 0
    unexplained = ("No explanation recorded; the quick scale trains less than the paper (see Notes)."
                   if results.scale == "quick" else "No explanation recorded.")
    for variant, runs in results.by_variant().items():
        n_ok = sum(r.ok for r in runs)
        n_failed = sum(r.done and not r.ok for r in runs)
        n_cell = f"{n_ok}" + (f" ({n_failed} failed to train)" if n_failed else "") + \
                 (f" ({len(runs) - n_ok - n_failed} missing)" if len(runs) - n_ok - n_failed else "")
        row = [variant, n_cell]
        for c in cols:
            stat = results.cell(variant, c)
            row.append(fmt(stat[0], stat[1], c.digits))
            if has_ref:
                ref = exp.reference.get(variant, {}).get(c.id)
                if ref is None:
                    row.append("")
                    continue
                rm, rs = _ref(ref)
                row.append(fmt(rm, rs, c.digits))
                untested += 0 < stat[2] < MIN_SEEDS
                z = deviation(stat, (rm, rs))
                if not math.isnan(z) and z > DEVIATION_SEM:
                    why = exp.discrepancy(variant, c.id) or unexplained
                    flagged.setdefault(why, []).append(
                        f"**{variant}, {c.label}**: ours {fmt(stat[0], stat[1], c.digits)} vs "
                        f"paper {fmt(rm, rs, c.digits)} ({_apart(z)})")
        lines.append("| " + " | ".join(row) + " |")
    order = [w for w in flagged if w != unexplained] + [w for w in flagged if w == unexplained]
    flags = [f"- {'; '.join(flagged[why])}. {why}" for why in order]
    return "\n".join(lines), flags, untested


def untested_note(untested: int, results: Results) -> str:
    """One sentence for the cells that have a paper value but a single seed (no SEM)."""
    if not untested:
        return ""
    exp = results.experiment
    total = sum(1 for v in results.by_variant() for c in exp.columns  # cells with a paper value and ours
                if exp.reference.get(v, {}).get(c.id) is not None and results.cell(v, c)[2] > 0)
    which = "no cell is" if untested >= total else \
        f"{untested} of the {total} cells with a paper value are not"
    return (f"With one seed (n = 1) there is no SEM to compare by, so {which} tested against the paper "
            f"here (rerun with `--seeds {MIN_SEEDS}` or more for that); read ours and the paper's side by side.")


def masking_summary(results: Results) -> list[str]:
    checked = [r for r in results.runs if r.ok and r.metric("masking") is not None]
    if not checked:
        return []
    failed = [r for r in checked if not r.metric("masking.passed")]
    out = [f"Gradient-masking checks (eps=0 gives clean accuracy, accuracy falls with eps and reaches "
           f"~0, PGD <= FGSM) passed on {len(checked) - len(failed)} of {len(checked)} trained models."]
    for r in failed[:10]:
        out.append(f"- {r.variant} seed {r.seed}: " + "; ".join(r.record["metrics"]["masking"]["problems"]))
    return out


def write_csv(results: Results, path: Path) -> None:
    rows = []
    for r in results.runs:
        row: dict[str, Any] = {"variant": r.variant, "seed": r.seed, "run": r.dir.name,
                               "status": r.record["status"] if r.done else "missing"}
        if r.done:
            row["seconds"] = r.record.get("seconds")
            flat: dict = {}
            _flat("", r.record.get("metrics", {}), flat)
            row.update(flat)
        rows.append(row)
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def summary(results: Results) -> dict:
    exp = results.experiment
    out: dict[str, Any] = {}
    for variant in results.by_variant():
        out[variant] = {}
        for c in exp.columns:
            m, s, n = results.cell(variant, c)
            ratio_to = exp.ratio_to.get(variant) if c.relative else None
            out[variant][c.label] = {"id": c.id, "mean": m, "sem": s, "n": n, "metric": c.metric,
                                     "ratio_to": ratio_to, "paper": exp.reference.get(variant, {}).get(c.id)}
    return out


def write_report(results: Results, out_dir: Path) -> Path:
    """Write report.md, results.csv, results.json and the figures into out_dir."""
    exp = results.experiment
    out_dir.mkdir(parents=True, exist_ok=True)
    done = [r for r in results.runs if r.done]
    seeds = sorted({r.seed for r in results.runs})
    table, flags, untested = table_markdown(results)
    md = [f"# {exp.paper}: {exp.title}", "",
          f"Experiment `{exp.id}` at scale **{exp_scale_label(results.scale)}**, {len(seeds)} seed(s), "
          f"{len(done)} of {len(results.runs)} runs finished "
          f"({sum(r.record.get('seconds', 0) for r in done):.0f} s of compute). "
          f"Generated by bnrobust {__version__} on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.", "",
          exp.description, "", "## Results", "",
          "Mean ± standard error of the mean over seeds. The *paper* columns are the values printed in "
          "the paper, shown for reference only; every other number was measured by this run.", "",
          table, ""]
    if exp.reference_note:
        md += [exp.reference_note, ""]
    if untested:
        md += [untested_note(untested, results), ""]
    if flags:
        md += [f"### Where we differ from the paper by more than {DEVIATION_SEM:.0f} SEM", ""] + flags + [""]
    if exp.checks is not None:
        md += ["## The paper's claims, checked on these numbers", ""]
        md += [f"- [{'x' if ok else ' '}] {text}" for text, ok in exp.checks(results)] + [""]
    masking = masking_summary(results)
    if masking:
        md += ["## Attack sanity", ""] + masking + [""]
    failed = [r for r in done if not r.ok]
    if failed:
        md += ["## Runs that failed to train (excluded from the means)", ""]
        md += [f"- {r.variant} seed {r.seed}: {r.record['reason']}" for r in failed] + [""]
    figs = []
    for fig in exp.figures:
        figs += fig(results, out_dir)
    if figs:
        md += ["## Figures", ""] + [f"![{Path(f).stem}]({f})" for f in figs] + [""]
    md += ["## Settings", ""]
    base = apply_overrides(exp.base, exp.scales.get(results.scale, {}))
    md += ["Base config (every variant starts from it):", "", "```yaml",
           yaml.safe_dump(base, sort_keys=False).rstrip(), "```", "", "Variants (overrides of the base):", ""]
    md += [f"- **{v}**: `{json.dumps(exp.variant_overrides(v, results.scale) or 'base')}`"
           for v in results.by_variant()]
    md += [""]
    if exp.notes:
        md += ["## Notes on choices and differences", ""] + [f"- {n}" for n in exp.notes] + [""]
    md += [f"Per-run numbers: `results.csv`; aggregates: `results.json`; runs: `../runs/`. "
           f"Reproduce with `bnrobust run {exp.id} --scale {results.scale}`.", ""]
    write_csv(results, out_dir / "results.csv")
    write_json_atomic(out_dir / "results.json", {"experiment": exp.id, "scale": results.scale,
                                                 "summary": summary(results)})
    path = out_dir / "report.md"
    write_text_atomic(path, "\n".join(md))
    return path


def exp_scale_label(scale: str) -> str:
    return {"quick": "quick (reduced settings for a CPU; shows the direction, not the paper's exact numbers)",
            "paper": "paper (the paper's settings)"}.get(scale, scale)
