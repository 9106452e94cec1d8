"""What an experiment is: a base config, named variants, seeds and scales, and what its report
shows (columns, the paper's reference values, explanations of differences, claim checks,
figures); and `Results`, the runs of one sweep as reports and figures read them."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..config import apply_overrides, resolve_config
from ..errors import BnrobustError
from ..eval import mean_sem
from ..runner.storage import Run

SCALES = ("quick", "paper")
MAX_SEEDS = 1000


class PerScale(dict):
    """A variant whose overrides differ by scale: PerScale(quick={...}, paper={...})."""

    def get(self, scale: str, default: Any = None) -> dict:  # type: ignore[override]
        if scale not in self:
            raise BnrobustError(f"variant has no overrides for scale {scale!r}")
        return self[scale]


@dataclass
class Column:
    """A report table column: a stored metric (dotted path) and how to print it."""
    label: str
    metric: str
    digits: int = 2
    relative: bool = False  # shown as a ratio to the variant's baseline (Experiment.ratio_to), if it has one


@dataclass
class Experiment:
    """A named, declarative experiment: a base config, named variants (dotted overrides),
    seeds per scale, scale overrides, and what the report shows."""
    id: str
    paper: str
    title: str
    description: str
    base: dict
    variants: dict[str, dict]
    seeds: dict[str, int]
    scales: dict[str, dict] = field(default_factory=dict)           # scale -> overrides for all variants
    scale_variants: dict[str, list[str]] = field(default_factory=dict)  # scale -> subset of variants
    columns: list[Column] = field(default_factory=list)
    reference: dict[str, dict[str, Any]] = field(default_factory=dict)  # variant -> column -> paper value
    reference_note: str = ""
    notes: list[str] = field(default_factory=list)                # choices where the paper is silent, caveats
    checks: Callable[["Results"], list[tuple[str, bool]]] | None = None  # the paper's claims, tested
    figures: list[Callable[["Results", Path], list[str]]] = field(default_factory=list)
    discrepancies: dict[str, str] = field(default_factory=dict)   # "variant/column" -> why it differs
    ratio_to: dict[str, str] = field(default_factory=dict)        # variant -> baseline of its relative columns

    def configs(self, scale: str, seeds: int | None = None,
                overrides: dict[str, Any] | None = None) -> list[tuple[str, int, dict]]:
        """Every (variant, seed, config) of the sweep at `scale`."""
        if scale not in SCALES:
            raise BnrobustError(f"unknown scale {scale!r}; choose from {', '.join(SCALES)}")
        n = self.seeds[scale] if seeds is None else seeds
        if not isinstance(n, int) or n < 1:
            raise BnrobustError(f"--seeds must be a positive integer, got {n!r}")
        if n > MAX_SEEDS:
            raise BnrobustError(f"--seeds must be at most {MAX_SEEDS}, got {n}")
        out = []
        for name in self.variant_names(scale):
            cfg = apply_overrides(self.variant_config(name, scale), overrides or {})
            for seed in range(n):
                out.append((name, seed, resolve_config(dict(cfg, seed=seed))))
        return out

    def variant_names(self, scale: str) -> list[str]:
        return list(self.scale_variants.get(scale, self.variants))

    def variant_overrides(self, name: str, scale: str) -> dict[str, Any]:
        over = self.variants[name]
        return over.get(scale) if isinstance(over, PerScale) else over

    def variant_config(self, name: str, scale: str) -> dict:
        """base, then the scale's overrides, then the variant's (for every run of a variant)."""
        return apply_overrides(apply_overrides(self.base, self.scales.get(scale, {})),
                               self.variant_overrides(name, scale))

    def shadowed(self, scale: str, overrides: dict[str, Any]) -> dict[str, list[str]]:
        """{--set key: the variants whose own value for it (or a section holding it) the key replaces}."""
        out: dict[str, list[str]] = {}
        for key in overrides:
            hit = [v for v in self.variant_names(scale)
                   if any(k == key or key.startswith(k + ".") or k.startswith(key + ".")
                          for k in self.variant_overrides(v, scale))]
            if hit:
                out[key] = hit
        return out


@dataclass
class Results:
    """The runs of one sweep, grouped by variant, as reports and figures read them."""
    experiment: Experiment
    scale: str
    runs: list[Run]
    root: Path | None = None

    def by_variant(self) -> dict[str, list[Run]]:
        out: dict[str, list[Run]] = {}
        for r in self.runs:
            out.setdefault(r.variant, []).append(r)
        return out

    def ok_runs(self, variant: str) -> list[Run]:
        return [r for r in self.runs if r.variant == variant and r.ok]

    def first_ok(self, variant: str) -> Run | None:
        """The first successful run of a variant (the one figures draw), or None."""
        runs = self.ok_runs(variant)
        return runs[0] if runs else None

    def stat(self, variant: str, metric: str) -> tuple[float, float, int]:
        """Mean, SEM and count of a metric over the successful seeds of a variant."""
        return mean_sem([r.metric(metric) for r in self.ok_runs(variant)])

    def mean(self, variant: str, metric: str) -> float:
        return self.stat(variant, metric)[0]

    def ratio(self, variant: str, baseline: str, metric: str) -> tuple[float, float, int]:
        """Mean, SEM and count over seeds of metric(variant, seed s) / metric(baseline, seed s)."""
        base = {r.seed: r.metric(metric) for r in self.ok_runs(baseline)}
        vals = [r.metric(metric) / base[r.seed] for r in self.ok_runs(variant)
                if r.metric(metric) is not None and base.get(r.seed) not in (None, 0)]
        return mean_sem(vals)

    def cell(self, variant: str, column: Column) -> tuple[float, float, int]:
        """What a report table shows for (variant, column): the metric, or its ratio to the
        variant's baseline for relative columns."""
        baseline = self.experiment.ratio_to.get(variant)
        if column.relative and baseline:
            return self.ratio(variant, baseline, column.metric)
        return self.stat(variant, column.metric)
