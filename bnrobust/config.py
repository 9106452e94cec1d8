"""Run configs: dotted overrides, and the fully resolved config that a run stores and is keyed by.

A config is a nested dict with the sections data, model, train, eval and seed. Resolving it
fills in every default of every builder (so changing a default gives a new run) and adds
`versions`, the definition version of every builder it uses (so changing what a metric or the
trainer means gives a new run). Anything unknown or out of range is a one-line error here,
before any work starts.
"""
from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from .data import DATASETS
from .errors import BnrobustError
from .eval import EVALS
from .models import MODELS
from .registry import close_matches
from .train import TRAINERS

SECTIONS = ("data", "model", "train", "eval", "seed")
EVAL_KEYS = ("batch_size", "metrics", "curve_every", "curve_metrics")


def set_dotted(cfg: dict, key: str, value: Any) -> None:
    """cfg["a"]["b"] = value for key "a.b", creating sections as needed."""
    *path, last = key.split(".")
    node = cfg
    for part in path:
        if node.get(part) is None or isinstance(node.get(part), str):  # a bare name becomes a section
            node[part] = {} if node.get(part) is None else {"name": node[part]}
        node = node[part]
        if not isinstance(node, dict):
            raise BnrobustError(f"cannot set {key!r}: {part!r} is not a config section")
    node[last] = copy.deepcopy(value)


def apply_overrides(cfg: dict, overrides: dict[str, Any]) -> dict:
    cfg = copy.deepcopy(cfg)
    for key, value in overrides.items():
        set_dotted(cfg, key, value)
    return cfg


def _uses_batch_norm(spec: Any) -> dict | None:
    """The first BN spec nested anywhere in a resolved model spec, or None."""
    if isinstance(spec, dict):
        if spec.get("name") == "bn" and "stats" in spec:
            return spec
        for v in spec.values():
            found = _uses_batch_norm(v)
            if found:
                return found
    return None


def resolve_config(cfg: dict) -> dict:
    """The config with every option filled in and checked, plus `versions`."""
    if not isinstance(cfg, dict):
        raise BnrobustError(f"a config must be a mapping, got {cfg!r}")
    unknown = [k for k in cfg if k not in SECTIONS]
    if unknown:
        raise BnrobustError(f"unknown config section {unknown[0]!r}{close_matches(unknown[0], list(SECTIONS))} "
                            f"(sections: {', '.join(SECTIONS)})")
    missing = [k for k in SECTIONS if k not in cfg]
    if missing:
        raise BnrobustError(f"config has no {missing[0]!r} section")
    seed = cfg["seed"]
    if not (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0):
        raise BnrobustError(f"seed must be an integer >= 0, got {seed!r}")
    data = DATASETS.resolve(cfg["data"], "data")
    model = MODELS.resolve(cfg["model"], "model")
    train = TRAINERS.resolve(cfg["train"], "train")
    ev = cfg["eval"]
    if not isinstance(ev, dict):
        raise BnrobustError(f"eval must be a section with {' and '.join(EVAL_KEYS)}, got {ev!r}")
    for key in ev:
        if key not in EVAL_KEYS:
            raise BnrobustError(f"eval has no option {key!r}{close_matches(key, list(EVAL_KEYS))} "
                                f"(options: {', '.join(EVAL_KEYS)})")
    bs = ev.get("batch_size", 1000)
    if not (isinstance(bs, int) and not isinstance(bs, bool) and bs >= 0):
        raise BnrobustError(f"eval.batch_size must be an integer >= 0 (0 = the whole test set), got {bs!r}")
    metrics = ev.get("metrics", {})
    if not isinstance(metrics, dict):
        raise BnrobustError(f"eval.metrics must map names to metric specs, got {metrics!r}")
    metrics = {key: EVALS.resolve(spec, f"eval.metrics.{key}") for key, spec in metrics.items()}
    every, curve = ev.get("curve_every", 0), ev.get("curve_metrics", [])
    if not (isinstance(every, int) and not isinstance(every, bool) and every >= 0):
        raise BnrobustError(f"eval.curve_every must be an integer >= 0 (0 = no curves), got {every!r}")
    if not (isinstance(curve, list) and all(isinstance(k, str) for k in curve)):
        raise BnrobustError(f"eval.curve_metrics must be a list of eval.metrics keys, got {curve!r}")
    for key in curve:
        if key not in metrics:
            raise BnrobustError(f"eval.curve_metrics names {key!r}, which is not in eval.metrics"
                                f"{close_matches(key, list(metrics))} ({', '.join(metrics) or 'none'})")
    bn = _uses_batch_norm(model)
    if bn is not None and train["batch_size"] == 1 and train["epochs"] > 0:
        raise BnrobustError("train.batch_size=1 with a BN model: batch statistics of one example are undefined "
                            "(use a batch size >= 2)")
    if bn is not None and bn["stats"] == "batch" and bs == 1:
        raise BnrobustError("eval.batch_size=1 with a BN model that normalizes with batch statistics: "
                            "use a batch size >= 2, or 0 for the whole test set")
    versions: dict[str, int] = {}
    versions.update(DATASETS.versions(data))
    versions.update(MODELS.versions(model))
    versions.update(TRAINERS.versions(train))
    for spec in metrics.values():
        versions.update(EVALS.versions(spec))
    evals = {"batch_size": bs, "metrics": metrics}
    if every:  # only when asked, so that configs without curves keep their identity
        evals.update(curve_every=every, curve_metrics=curve)
    return {"data": data, "model": model, "train": train, "eval": evals,
            "seed": seed, "versions": dict(sorted(versions.items()))}


def config_hash(cfg: dict) -> str:
    canon = json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()[:12]
