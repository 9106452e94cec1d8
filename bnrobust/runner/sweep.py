"""Resumable sweeps over (variant x seed): plan the runs, validate everything, then run the
unfinished ones and store each atomically."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..config import config_hash
from ..errors import BnrobustError
from ..experiments.base import Experiment, Results
from ..models import build_model
from .device import resolve_device
from .execute import get_dataset, run_config
from .storage import Run, clean_stale_tmp, save_run, slug, write_json_atomic


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
