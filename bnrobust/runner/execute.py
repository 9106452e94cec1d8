"""Running one resolved config: build the dataset and model, train, evaluate."""
from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .. import __version__
from ..threads import share_cpus
from ..data import Dataset, data_root, load_dataset
from ..eval import EVALS, EvalContext
from ..eval.metrics import STACKED, per_model
from ..models import build_model
from ..train import TrainConfig, TrainResult, train
from ..train.stacked import StackedData, eval_chunk, stack_models, stackable_data, train_stacked


@functools.lru_cache(maxsize=4)
def _cached_dataset(spec_json: str, seed: int, root: Path | None) -> Dataset:
    return load_dataset(json.loads(spec_json), seed, root)


def get_dataset(cfg: dict, root: Path | None = None) -> Dataset:
    """The run's dataset; cached, so the variants of a sweep share one copy."""
    return _cached_dataset(json.dumps(cfg["data"], sort_keys=True), cfg["seed"], root)


def run_config(cfg: dict, root: Path | None = None, device: torch.device | str = "cpu",
               progress: bool = False, checkpoint: Path | None = None) -> tuple[dict, torch.nn.Module]:
    """Train and evaluate one config; returns (record, model). A run that fails to train
    gets status "failed" and no metrics. With `checkpoint`, training resumes from / saves to it."""
    device = torch.device(device)
    share_cpus(force=True)  # this process's share of the cores, with the other bnrobust processes now running
    t0 = time.time()
    seed = int(cfg["seed"])
    ds = get_dataset(cfg, root)
    torch.manual_seed(seed)
    model = build_model(cfg["model"], ds).to(device)
    ev = cfg["eval"]
    ctx = EvalContext(ev.get("batch_size", 1000), seed, ds.clip, device, root if root is not None else data_root())

    def measure(keys, model):
        return {key: EVALS.build(ev["metrics"][key], f"eval.metrics.{key}", model=model, ds=ds, ctx=ctx)
                for key in keys}

    every, epochs = ev.get("curve_every", 0), cfg["train"]["epochs"]
    on_epoch = None
    if every:
        def on_epoch(epoch, model):  # the curves of Figs. 16-17: every k epochs and at the end
            return measure(ev["curve_metrics"], model) if epoch % every == 0 or epoch == epochs else None
    result = train(model, ds, TrainConfig.from_dict(cfg["train"]), seed, progress, checkpoint, on_epoch)
    record = _record(result, ds)
    if result.status == "ok":
        record["metrics"] = measure(list(ev.get("metrics", {})), model)
    record.update(seconds=round(time.time() - t0, 3), device=str(device), torch=torch.__version__,
                  bnrobust=__version__)
    return record, model


def _measure_stacked(models: list[torch.nn.Module], dss: list[Dataset], seeds: list[int], ev: dict,
                     device: torch.device, root: Path) -> list[dict]:
    """Each model's metrics (`eval` of their common config): metrics.STACKED ones over stacks of
    up to `stacked.eval_chunk` models at once, the others (and larger batches) model by model."""
    bs = ev.get("batch_size", 1000)
    size = eval_chunk(dss[0], bs) if models else 1
    chunks = []  # (indices, stacked model or None, StackedData, context)
    for start in range(0, len(models), size):
        idx = list(range(start, min(start + size, len(models))))
        if len(idx) > 1 and stackable_data([dss[k] for k in idx], ("train", "test")):
            chunks.append((idx, stack_models([models[k] for k in idx]).eval(), StackedData([dss[k] for k in idx]),
                           EvalContext(bs, [seeds[k] for k in idx], dss[idx[0]].clip, device, root)))
        else:
            chunks += [([k], None, None, None) for k in idx]
    out: list[dict] = [{} for _ in models]
    # one context per model for all its metrics evaluated model by model (also in a stacked chunk: the
    # metrics outside STACKED)
    alone = {k: EvalContext(bs, seeds[k], dss[k].clip, device, root) for idx, *_ in chunks for k in idx}
    for key, spec in ev.get("metrics", {}).items():
        where = f"eval.metrics.{key}"
        spec = EVALS.resolve(spec, where)
        for idx, smodel, sds, sctx in chunks:
            if smodel is not None and spec["name"] in STACKED:
                result = EVALS.build(spec, where, model=smodel, ds=sds, ctx=sctx)
                for j, k in enumerate(idx):
                    out[k][key] = per_model(result, j)
            else:
                for k in idx:
                    out[k][key] = EVALS.build(spec, where, model=models[k], ds=dss[k], ctx=alone[k])
    return out


def _record(result: TrainResult, ds: Dataset) -> dict[str, Any]:
    record: dict[str, Any] = {"status": result.status, "reason": result.reason, "history": result.history,
                              "metrics": {}}
    if hasattr(ds, "describe"):
        record["data"] = ds.describe()  # which data the run saw: split sizes and a fingerprint
    if result.curves:
        record["curves"] = result.curves
    if result.best_epoch is not None:
        record["best_epoch"] = result.best_epoch
    return record


def run_stacked(cfgs: list[dict], root: Path | None = None, device: torch.device | str = "cpu",
                progress: bool = False, checkpoint: Path | None = None) -> list[tuple[dict, torch.nn.Module]]:
    """`run_config` of several configs that share a `stacked.stack_key`, trained as one stacked
    model (bnrobust.train.stacked) and evaluated together where the metric allows (metrics.STACKED),
    else model by model. Returns each config's (record, model), as run_config would (weights equal
    up to float rounding). Raises NotStackable, before any training, where they cannot stack."""
    device = torch.device(device)
    share_cpus(force=True)  # this process's share of the cores, with the other bnrobust processes now running
    t0 = time.time()
    seeds = [int(cfg["seed"]) for cfg in cfgs]
    loaded: dict[tuple[str, int], Dataset] = {}  # one object per (data, seed): models of a seed share it
    for cfg in cfgs:
        key = (json.dumps(cfg["data"], sort_keys=True), int(cfg["seed"]))
        if key not in loaded:
            loaded[key] = get_dataset(cfg, root)
    dss = [loaded[(json.dumps(cfg["data"], sort_keys=True), int(cfg["seed"]))] for cfg in cfgs]
    models = []
    for cfg, ds, seed in zip(cfgs, dss, seeds):
        torch.manual_seed(seed)
        models.append(build_model(cfg["model"], ds).to(device))
    results = train_stacked(models, dss, [TrainConfig.from_dict(cfg["train"]) for cfg in cfgs], seeds, progress,
                            checkpoint)
    records = [_record(r, ds) for r, ds in zip(results, dss)]
    ok = [k for k, r in enumerate(results) if r.status == "ok"]
    measured = _measure_stacked([models[k] for k in ok], [dss[k] for k in ok], [seeds[k] for k in ok],
                                cfgs[0]["eval"], device, root if root is not None else data_root())
    for k, metrics in zip(ok, measured):
        records[k]["metrics"] = metrics
    seconds = round((time.time() - t0) / len(cfgs), 3)
    for record in records:
        record.update(seconds=seconds, device=str(device), torch=torch.__version__, bnrobust=__version__,
                      stacked=len(cfgs))
    return list(zip(records, models))


def unit_checkpoint(unit: list) -> Path:
    """Where a unit of a sweep keeps its training state: its run's checkpoint, or its stacked
    group's (named by its runs)."""
    from ..train import stacked
    from .storage import checkpoint_path
    if len(unit) == 1:
        return checkpoint_path(unit[0])
    return stacked.group_checkpoint(unit[0].dir.parent, [r.dir.name for r in unit])


def compute_unit(unit: list, root: Path | None, dev: Any, progress: bool) -> list[tuple[dict, torch.nn.Module]]:
    """(record, model) of every run of a sweep's unit, in order: one stacked training for a unit of
    several runs (run by run where it turns out not to stack), else run_config. Lives here, not in
    sweep.py, so that a Ray worker computing a unit imports no experiments or reports."""
    from ..train import stacked
    from .storage import checkpoint_path
    if len(unit) > 1:
        try:
            return run_stacked([r.config for r in unit], root, dev, progress, unit_checkpoint(unit))
        except stacked.NotStackable as e:
            tqdm.write(f"training {len(unit)} runs of {unit[0].variant} one by one: they do not stack ({e})",
                       file=sys.stderr)
    return [run_config(r.config, root, dev, progress, checkpoint_path(r)) for r in unit]
