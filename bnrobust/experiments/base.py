"""What an experiment is: a base config, named variants, seeds and scales, and what its report
shows (columns, the paper's reference values, explanations of differences, claim checks,
figures); and `Results`, the runs of one sweep as reports and figures read them.

Everything a report refers to (variants, columns, metrics) is named by id and checked when the
`Experiment` is constructed, so a typo fails at import (in the test suite), not as a silent
"–" in a report."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..config import apply_overrides, resolve_config
from ..errors import BnrobustError
from ..eval import mean_sem
from ..registry import close_matches
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
    """A report table column: a stored metric (dotted path) and how to print it. `id` is what
    `reference` and `discrepancies` name (stable, short); `label` is only the display text.
    The id defaults to the metric path, so an ad-hoc Column needs none."""
    label: str
    metric: str
    digits: int = 2
    relative: bool = False  # shown as a ratio to the variant's baseline (Experiment.ratio_to), if it has one
    id: str = ""
    # show 100 * metric / this metric, per run (e.g. the share of clean accuracy kept); a tuple: the
    # first of these metrics the run has (e.g. the clean accuracy of the points an attack used)
    per: str | tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.id:
            self.id = self.metric
        if isinstance(self.per, str):
            self.per = (self.per,)


@dataclass(frozen=True)
class Discrepancy:
    """Why our numbers differ from the paper's for some cells: written for the listed variants
    and column ids only (no wildcards, so a note cannot land on a row it is not about).
    `columns=None` means every column of those variants that has a paper value."""
    variants: Sequence[str]
    columns: Sequence[str] | None
    why: str

    def __post_init__(self) -> None:
        for name in ("variants", "columns"):  # a bare string would be read as a list of characters
            value = getattr(self, name)
            if isinstance(value, str):
                raise BnrobustError(f"Discrepancy.{name} must be a list of ids, got the string {value!r}")
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        if not self.variants:
            raise BnrobustError(f"Discrepancy names no variants: {self.why[:60]!r}")


@dataclass
class Experiment:
    """A named, declarative experiment: a base config, named variants (dotted overrides),
    seeds per scale, scale overrides, and what the report shows. Construction validates every
    id the report uses (see `validate`)."""
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
    reference: dict[str, dict[str, Any]] = field(default_factory=dict)  # variant -> column id -> paper value
    reference_note: str = ""
    notes: list[str] = field(default_factory=list)                # choices where the paper is silent, caveats
    checks: Callable[["Results"], list[tuple[str, bool]]] | None = None  # the paper's claims, tested
    figures: list[Callable[["Results", Path], list[str]]] = field(default_factory=list)
    discrepancies: list[Discrepancy] = field(default_factory=list)  # why flagged cells differ
    ratio_to: dict[str, str] = field(default_factory=dict)        # variant -> baseline of its relative columns

    def __post_init__(self) -> None:
        self._why: dict[tuple[str, str], str] = {}
        self.validate()

    # -- validation ----------------------------------------------------------

    def _fail(self, what: str, bad: str, choices: Iterable[str]) -> None:
        choices = list(choices)
        raise BnrobustError(f"experiment {self.id!r}: {what} {bad!r}, which does not exist"
                            f"{close_matches(bad, choices)}; choose from: {', '.join(map(str, choices))}")

    def _known(self, what: str, names: Iterable[str], choices: Sequence[str]) -> None:
        for name in names:
            if name not in choices:
                self._fail(what, name, choices)

    def validate(self) -> None:
        """Every variant, column and metric the report names exists; one-line BnrobustError otherwise."""
        variants, ids = list(self.variants), [c.id for c in self.columns]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise BnrobustError(f"experiment {self.id!r}: column id {dup[0]!r} is used by more than one column")
        self._known("scale_variants names scale", self.scale_variants, SCALES)
        for scale, names in self.scale_variants.items():
            self._known(f"scale_variants[{scale!r}] names variant", names, variants)
        self._known("ratio_to names variant", self.ratio_to, variants)
        self._known("ratio_to names baseline variant", self.ratio_to.values(), variants)
        self._known("reference names variant", self.reference, variants)
        for v, row in self.reference.items():
            self._known(f"reference[{v!r}] names column", row, ids)
        self._why = {}
        for d in self.discrepancies:
            self._known("a discrepancy names variant", d.variants, variants)
            self._known("a discrepancy names column", d.columns or (), ids)
            for v in d.variants:
                cols = d.columns if d.columns is not None else list(self.reference.get(v, {}))
                if not cols:
                    raise BnrobustError(f"experiment {self.id!r}: a discrepancy is written for {v!r}, which has "
                                        f"no paper values, so it could never be shown: {d.why[:60]!r}")
                for c in cols:
                    if c not in self.reference.get(v, {}):
                        raise BnrobustError(f"experiment {self.id!r}: a discrepancy is written for ({v!r}, {c!r}), "
                                            f"which has no paper value, so it could never be shown")
                    if (v, c) in self._why:
                        raise BnrobustError(f"experiment {self.id!r}: two discrepancies are written for "
                                            f"({v!r}, {c!r}); give each cell one reason")
                    self._why[(v, c)] = d.why
        for scale in (s for s in SCALES if s in self.seeds):
            for name in self.variant_names(scale):
                metrics = (self.variant_config(name, scale).get("eval") or {}).get("metrics") or {}
                for c, path in ((c, p) for c in self.columns for p in (c.metric, *(c.per or ()))):
                    key = path.split(".")[0]
                    if key not in metrics:
                        raise BnrobustError(
                            f"experiment {self.id!r}: column {c.id!r} reads metric {path!r}, but variant "
                            f"{name!r} at scale {scale!r} computes no {key!r}{close_matches(key, list(metrics))}; "
                            f"its eval.metrics: {', '.join(metrics) or 'none'}")

    def discrepancy(self, variant: str, column_id: str) -> str | None:
        """The recorded reason why (variant, column) differs from the paper, if any."""
        return self._why.get((variant, column_id))

    # -- configs ---------------------------------------------------------------

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
            cfg = apply_overrides(self.variant_config(name, scale), self.overrides_for(name, scale, overrides))
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

    def overrides_for(self, name: str, scale: str, overrides: dict[str, Any] | None) -> dict[str, Any]:
        """The --set overrides that apply to a variant: all of them, except keys inside a section
        the variant switches off (None in its resolved config), e.g. `train.adversarial.steps`
        for a variant without adversarial training, and keys its builders have no option for that
        another variant of the sweep has (`model.width_factor` applies to the VGGs of a sweep, not
        to its WideResNets). A key no variant accepts is kept, so that its error is reported."""
        if not overrides:
            return {}
        resolved = resolve_config(dict(self.variant_config(name, scale), seed=0))
        out = {k: v for k, v in overrides.items() if not _inside_switched_off(resolved, k)}
        others = None
        for key in [k for k in out if not _has_option(resolved, k)]:
            if others is None:
                others = [resolve_config(dict(self.variant_config(v, scale), seed=0))
                          for v in self.variant_names(scale) if v != name]
            if any(_has_option(o, key) for o in others):
                del out[key]
        return out

    def not_applied(self, scale: str, overrides: dict[str, Any]) -> dict[str, list[str]]:
        """{--set key: the variants it does not apply to (see overrides_for)}."""
        out: dict[str, list[str]] = {}
        for name in self.variant_names(scale):
            for key in set(overrides) - set(self.overrides_for(name, scale, overrides)):
                out.setdefault(key, []).append(name)
        return out

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


_MISSING = object()


def _has_option(resolved: dict, key: str) -> bool:
    """Whether a resolved config has the dotted key (every option of every builder is in it)."""
    node: Any = resolved
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _inside_switched_off(resolved: dict, key: str) -> bool:
    """Whether some section above `key` is None (switched off) in a resolved config."""
    parts = key.split(".")
    node: Any = resolved
    for part in parts[:-1]:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
        if node is None:
            return True
    return False


@dataclass
class Results:
    """The runs of one sweep, grouped by variant, as reports and figures read them. Asking for
    a variant the experiment does not define, or a metric path an ok run did not record, is an
    error (a check or figure with a typo must fail, not print nan)."""
    experiment: Experiment
    scale: str
    runs: list[Run]
    root: Path | None = None

    def by_variant(self) -> dict[str, list[Run]]:
        out: dict[str, list[Run]] = {}
        for r in self.runs:
            out.setdefault(r.variant, []).append(r)
        return out

    def _variant(self, variant: str) -> str:
        if variant not in self.experiment.variants:
            names = list(self.experiment.variants)
            raise BnrobustError(f"experiment {self.experiment.id!r} has no variant {variant!r}"
                                f"{close_matches(variant, names)}")
        return variant

    def ok_runs(self, variant: str) -> list[Run]:
        self._variant(variant)
        return [r for r in self.runs if r.variant == variant and r.ok]

    def first_ok(self, variant: str) -> Run | None:
        """The first successful run of a variant (the one figures draw), or None."""
        runs = self.ok_runs(variant)
        return runs[0] if runs else None

    def value(self, run: Run, path: str) -> Any:
        """A metric of an ok run by dotted path. None is a legitimate stored value (e.g. no
        successful attack); a path the record does not have is a BnrobustError."""
        node: Any = run.record.get("metrics", {})
        for i, part in enumerate(path.split(".")):
            child = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
            if child is _MISSING:
                have = list(node) if isinstance(node, dict) else []
                where = ".".join(path.split(".")[:i]) or "metrics"
                raise BnrobustError(
                    f"experiment {self.experiment.id!r}: metric {path!r} is not in the record of "
                    f"{run.variant!r} seed {run.seed} ({run.dir}): {where} has no {part!r}"
                    f"{close_matches(part, have)}; it has: {', '.join(have) or 'nothing'}")
            node = child
        return node

    def stat(self, variant: str, metric: str) -> tuple[float, float, int]:
        """Mean, SEM and count of a metric over the successful seeds of a variant."""
        return mean_sem([self.value(r, metric) for r in self.ok_runs(variant)])

    def mean(self, variant: str, metric: str) -> float:
        return self.stat(variant, metric)[0]

    def ratio(self, variant: str, baseline: str, metric: str) -> tuple[float, float, int]:
        """Mean, SEM and count over seeds of metric(variant, seed s) / metric(baseline, seed s)."""
        base = {r.seed: self.value(r, metric) for r in self.ok_runs(baseline)}
        vals = []
        for r in self.ok_runs(variant):
            v = self.value(r, metric)
            if v is not None and base.get(r.seed) not in (None, 0):
                vals.append(v / base[r.seed])
        return mean_sem(vals)

    def cell(self, variant: str, column: Column) -> tuple[float, float, int]:
        """What a report table shows for (variant, column): the metric, or its ratio to the
        variant's baseline for relative columns."""
        baseline = self.experiment.ratio_to.get(self._variant(variant))
        if column.relative and baseline:
            return self.ratio(variant, baseline, column.metric)
        if column.per:
            runs = self.ok_runs(variant)
            pairs = [(r.metric(column.metric), next((v for v in map(r.metric, column.per) if v is not None), None))
                     for r in runs]
            return mean_sem([100.0 * a / b for a, b in pairs if a is not None and b])
        return self.stat(variant, column.metric)
