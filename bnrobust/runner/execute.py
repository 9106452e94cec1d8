"""Running one resolved config: build the dataset and model, train, evaluate."""
from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..threads import share_cpus
from ..data import Dataset, data_root, load_dataset
from ..eval import EVALS, EvalContext
from ..models import build_model
from ..train import TrainConfig, train


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
    record: dict[str, Any] = {"status": result.status, "reason": result.reason, "history": result.history,
                              "metrics": {}}
    if hasattr(ds, "describe"):
        record["data"] = ds.describe()  # which data the run saw: split sizes and a fingerprint
    if result.curves:
        record["curves"] = result.curves
    if result.best_epoch is not None:
        record["best_epoch"] = result.best_epoch
    if result.status == "ok":
        record["metrics"] = measure(list(ev.get("metrics", {})), model)
    record.update(seconds=round(time.time() - t0, 3), device=str(device), torch=torch.__version__,
                  bnrobust=__version__)
    return record, model
