"""The experiment engine: declarative experiments, one function that runs a config, and
resumable sweeps over (variant x seed) with one atomically written directory per run.

A run's config is a plain nested dict:

    {"data":  {"name": "mnist-binary", "n_per_class": 2500, ...},
     "model": {"name": "linear", "bn": "fixed", ...},
     "train": {"lr": 0.1, "epochs": 50, ...},                # bnrobust.train.TrainConfig
     "eval":  {"batch_size": 1000, "metrics": {"fgsm": {"name": "fgsm", "eps": 0.1}, ...}},
     "seed":  0}

and its directory is keyed by a hash of that whole dict, so changing any setting gives a
new run and re-running an unchanged one is free.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from . import __version__
from .data import DATASETS, Dataset, load_dataset
from .errors import BnrobustError
from .metrics import EVALS, EvalContext, mean_sem
from .models import MODELS, build_model
from .registry import call_registered, validate_spec
from .train import TrainConfig, train

SCALES = ("quick", "paper")

# ---------------------------------------------------------------------------
# Configs


def set_dotted(cfg: dict, key: str, value: Any) -> None:
    """cfg["a"]["b"] = value for key "a.b", creating sections as needed."""
    *path, last = key.split(".")
    node = cfg
    for part in path:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise BnrobustError(f"cannot set {key!r}: {part!r} is not a config section")
    node[last] = copy.deepcopy(value)


def apply_overrides(cfg: dict, overrides: dict[str, Any]) -> dict:
    cfg = copy.deepcopy(cfg)
    for key, value in overrides.items():
        set_dotted(cfg, key, value)
    return cfg


def config_hash(cfg: dict) -> str:
    canon = json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()[:12]


def validate_config(cfg: dict) -> None:
    """Fail fast, with one line, on unknown names/options and bad training values."""
    for section in ("data", "model", "train", "eval", "seed"):
        if section not in cfg:
            raise BnrobustError(f"config has no {section!r} section")
    unknown = sorted(set(cfg) - {"data", "model", "train", "eval", "seed"})
    if unknown:
        raise BnrobustError(f"unknown config section(s): {', '.join(unknown)}")
    validate_spec(DATASETS, "data", cfg["data"])
    validate_spec(MODELS, "model", cfg["model"])
    TrainConfig.from_dict(cfg["train"])
    ev = cfg["eval"]
    if not (isinstance(ev.get("batch_size", 0), int) and ev.get("batch_size", 0) >= 0):
        raise BnrobustError(f"eval.batch_size must be an integer >= 0, got {ev.get('batch_size')!r}")
    for key, spec in ev.get("metrics", {}).items():
        validate_spec(EVALS, f"metric {key!r}:", spec)


# ---------------------------------------------------------------------------
# Running one config


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise BnrobustError(f"unknown device {device!r} (use cpu, cuda, cuda:N or auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BnrobustError("--device cuda was asked for but no CUDA GPU is available")
    return dev


@functools.lru_cache(maxsize=4)
def _cached_dataset(spec_json: str, seed: int, root: Path | None) -> Dataset:
    return load_dataset(json.loads(spec_json), seed, root)


def get_dataset(cfg: dict, root: Path | None = None) -> Dataset:
    """The run's dataset; cached, so the variants of a sweep share one copy."""
    return _cached_dataset(json.dumps(cfg["data"], sort_keys=True), cfg["seed"], root)


def run_config(cfg: dict, root: Path | None = None, device: torch.device | str = "cpu",
               progress: bool = False) -> tuple[dict, torch.nn.Module]:
    """Train and evaluate one config; returns (record, model). A run that fails to train
    gets status "failed" and no metrics."""
    device = torch.device(device)
    t0 = time.time()
    seed = int(cfg["seed"])
    ds = get_dataset(cfg, root)
    torch.manual_seed(seed)
    model = build_model(cfg["model"], ds).to(device)
    result = train(model, ds.x_train, ds.y_train, TrainConfig.from_dict(cfg["train"]), seed, progress,
                   ds.transform, ds.clip)
    record: dict[str, Any] = {"status": result.status, "reason": result.reason, "history": result.history,
                              "metrics": {}}
    if result.status == "ok":
        ev = cfg["eval"]
        ctx = EvalContext(ev.get("batch_size", 1000), seed, ds.clip, device)
        for key, spec in ev.get("metrics", {}).items():
            record["metrics"][key] = call_registered(EVALS, f"metric {key!r}:", spec, model=model, ds=ds, ctx=ctx)
    record.update(seconds=round(time.time() - t0, 3), device=str(device), torch=torch.__version__,
                  bnrobust=__version__)
    return record, model


# ---------------------------------------------------------------------------
# Storage


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, allow_nan=True) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "run"


@dataclass
class Run:
    variant: str
    seed: int
    config: dict
    dir: Path

    @property
    def done(self) -> bool:
        return (self.dir / "record.json").exists()

    @functools.cached_property
    def record(self) -> dict:
        with open(self.dir / "record.json") as f:
            return json.load(f)

    @property
    def ok(self) -> bool:
        return self.done and self.record["status"] == "ok"

    def metric(self, path: str) -> Any:
        """A stored metric by dotted path, e.g. "fgsm.acc"; None if the run has none."""
        node: Any = self.record.get("metrics", {})
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def model(self, root: Path | None = None) -> torch.nn.Module:
        """Rebuild the trained model from its config and stored weights (on CPU)."""
        torch.manual_seed(self.seed)
        model = build_model(self.config["model"], get_dataset(self.config, root))
        model.load_state_dict(torch.load(self.dir / "model.pt", map_location="cpu", weights_only=True))
        return model.eval()


def _owner() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def clean_stale_tmp(runs_dir: Path) -> None:
    """Remove temporary run directories left by killed processes of this host."""
    host = socket.gethostname()
    for tmp in runs_dir.glob(".tmp-*"):
        m = re.match(rf"\.tmp-{re.escape(host)}-(\d+)-", tmp.name)
        if m and not _pid_alive(int(m.group(1))):
            shutil.rmtree(tmp, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def save_run(run: Run, record: dict, model: torch.nn.Module) -> None:
    """Write config, record and weights into a temporary directory, then rename it into
    place: a run directory either is complete or does not exist."""
    run.dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=run.dir.parent, prefix=f".tmp-{_owner()}-{run.dir.name}-"))
    try:
        write_json_atomic(tmp / "config.json", {"variant": run.variant, **run.config})
        if record["status"] == "ok":
            torch.save({k: v.cpu() for k, v in model.state_dict().items()}, tmp / "model.pt")
        write_json_atomic(tmp / "record.json", record)
        if run.dir.exists():  # --force, or another worker finished it first
            shutil.rmtree(run.dir)
        os.replace(tmp, run.dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------
# Experiments


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
        names = self.scale_variants.get(scale, list(self.variants))
        out = []
        for name in names:
            base = apply_overrides(self.base, self.scales.get(scale, {}))
            cfg = apply_overrides(base, self.variants[name])
            cfg = apply_overrides(cfg, overrides or {})
            for seed in range(n):
                c = dict(cfg, seed=seed)
                validate_config(c)
                out.append((name, seed, c))
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


def plan(exp: Experiment, out: Path, scale: str, seeds: int | None = None,
         overrides: dict[str, Any] | None = None) -> list[Run]:
    runs = []
    for variant, seed, cfg in exp.configs(scale, seeds, overrides):
        name = f"{slug(variant)}-s{seed}-{config_hash(cfg)}"
        runs.append(Run(variant, seed, cfg, out / exp.id / "runs" / name))
    return runs


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as e:
        raise BnrobustError(f"cannot write to output directory {out}: {e.strerror or e}") from None


def manifest_path(exp_id: str, out: Path, scale: str) -> Path:
    return out / exp_id / scale / "manifest.json"


def sweep(exp: Experiment, out: Path, scale: str = "quick", seeds: int | None = None,
          overrides: dict[str, Any] | None = None, root: Path | None = None, device: str | None = None,
          force: bool = False, shard: tuple[int, int] = (0, 1), progress: bool = True) -> Results:
    """Run every unfinished (variant, seed) of `exp` at `scale`. Finished runs are skipped
    (unless force), so an interrupted sweep resumes where it stopped. shard=(i, n) runs
    only every n-th run starting at i, for splitting a sweep over machines that share `out`."""
    runs = plan(exp, out, scale, seeds, overrides)
    dev = resolve_device(device)
    i, n = shard
    mine = [r for k, r in enumerate(runs) if k % n == i]
    todo = [r for r in mine if force or not r.done]
    # Missing or corrupt data and bad model options fail here, before anything is written.
    seen = set()
    for r in todo:
        key = json.dumps([r.config["data"], r.config["model"]], sort_keys=True)
        if key not in seen:
            seen.add(key)
            build_model(r.config["model"], get_dataset(r.config, root))
    check_writable(out)
    clean_stale_tmp(out / exp.id / "runs")
    write_json_atomic(manifest_path(exp.id, out, scale), {
        "experiment": exp.id, "scale": scale, "seeds": seeds, "overrides": overrides or {},
        "runs": [{"variant": r.variant, "seed": r.seed, "dir": r.dir.name} for r in runs]})
    bar = tqdm(todo, desc=f"{exp.id} [{scale}]", unit="run", disable=not progress or None)
    for run in bar:
        bar.set_postfix_str(f"{run.variant} seed {run.seed}")
        record, model = run_config(run.config, root, dev)
        save_run(run, record, model)
    return Results(exp, scale, runs, root)


def load_results(exp: Experiment, out: Path, scale: str, root: Path | None = None) -> Results:
    """The runs of the last sweep of `exp` at `scale` under `out`, as listed in its manifest."""
    path = manifest_path(exp.id, out, scale)
    if not path.exists():
        raise BnrobustError(f"no {scale} results for {exp.id} in {out}: run `bnrobust run {exp.id} "
                            f"--scale {scale}` first")
    with open(path) as f:
        manifest = json.load(f)
    runs = plan(exp, out, scale, manifest.get("seeds"), manifest.get("overrides"))
    return Results(exp, scale, runs, root)
