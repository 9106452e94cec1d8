"""Resumable sweeps over (variant x seed): plan the runs, validate everything, then run the
unfinished ones and store each atomically.

The manifest (`<out>/<id>/<scale>/manifest.json`) names the runs of the last sweep that
completed, and is what `bnrobust report` reads. It is written only after every config,
dataset and model has been checked, and then only at the end of the sweep, except when there
is no (readable) manifest yet: then it is written up front, so that a first sweep that is
killed can still be reported. So a command that fails or is interrupted leaves the previous
manifest, and the report of the previous sweep, in place.

Two sweeps may share one --out (shards, or the same command twice): each claims a run before
computing it (see claims.py), skips runs that a live process claims, and waits for those at
the end, so that its report is complete.

Runs are computed in units (`units`): one run, or several that train as one seed-stacked model
(bnrobust/train/stacked.py); every run of a unit is claimed before the unit starts and stored
as its own run when it ends.
"""
from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..config import config_hash
from ..errors import BnrobustError
from ..experiments.base import Experiment, Results
from ..models import build_model
from ..registry import Spec
from . import claims
from .executors import EXECUTORS
from ..train import stacked
from .execute import compute_unit, get_dataset, unit_checkpoint
from .files import Damaged, check_writable, load_json, why, write_json_atomic
from .storage import Health, Run, checkpoint_path, clean_stale_tmp, save_run, slug

POLL_S = 2.0  # how often a sweep looks at runs that other processes are computing


def say(line: str) -> None:
    """One status line on stderr (tqdm.write, so that it does not tear a progress bar)."""
    tqdm.write(line, file=sys.stderr)


def plan(exp: Experiment, out: Path, scale: str, seeds: int | None = None,
         overrides: dict[str, Any] | None = None) -> list[Run]:
    runs = []
    for variant, seed, cfg in exp.configs(scale, seeds, overrides):
        name = f"{slug(variant)}-s{seed}-{config_hash(cfg)}"
        runs.append(Run(variant, seed, cfg, out / exp.id / "runs" / name))
    return runs


def manifest_path(exp_id: str, out: Path, scale: str) -> Path:
    return out / exp_id / scale / "manifest.json"


def rerun_command(exp_id: str, scale: str, out: Path, seeds: int | None = None,
                  overrides: dict[str, Any] | None = None) -> str:
    """The `bnrobust run` command line that plans exactly these runs."""
    cmd = ["bnrobust", "run", exp_id, "--scale", scale]
    if out != Path("results"):
        cmd += ["--out", str(out)]
    if seeds is not None:
        cmd += ["--seeds", str(seeds)]
    for key, value in (overrides or {}).items():
        cmd += ["--set", f"{key}={json.dumps(value)}"]
    return shlex.join(cmd)


def read_manifest(path: Path, command: str) -> dict | None:
    """The manifest at `path`, or None if there is none. A damaged one is a one-line error
    saying which command rewrites it."""
    try:
        manifest = load_json(path)
    except FileNotFoundError:
        return None
    except Damaged as e:
        raise BnrobustError(f"{path} is damaged: {e.reason}; rewrite it with `{command}` "
                            "(with the --seeds and --set options of that sweep)") from None
    except OSError as e:
        raise BnrobustError(f"cannot read {e.filename or path}: {why(e)}") from None
    if not (isinstance(manifest, dict) and isinstance(manifest.get("overrides", {}), dict)
            and (manifest.get("seeds") is None or isinstance(manifest.get("seeds"), int))):
        raise BnrobustError(f"{path} is damaged: not a sweep manifest; rewrite it with `{command}` "
                            "(with the --seeds and --set options of that sweep)")
    return manifest


def check_variants(exp: Experiment, scale: str, variants: list[str] | None) -> None:
    """One-line error for a --variant name that is not a row of `exp` at `scale`."""
    known = exp.variant_names(scale)
    for v in variants or []:
        if v not in known:
            raise BnrobustError(f"--variant: {exp.id} has no variant {v!r} at {scale} scale; choose from: "
                                + ", ".join(repr(k) for k in known))


def _health(run: Run) -> Health:
    h = run.health()
    if h.fatal:
        raise BnrobustError(f"cannot use run folder {run.dir}: {h.reason}")
    return h


def _validate(todo: list[Run], root: Path | None) -> None:
    """Missing or corrupt data and bad model options fail here, before anything is written."""
    seen = set()
    for r in todo:
        key = json.dumps([r.config["data"], r.config["model"]], sort_keys=True)
        if key not in seen:
            seen.add(key)
            build_model(r.config["model"], get_dataset(r.config, root))


def sweep(exp: Experiment, out: Path, scale: str = "quick", seeds: int | None = None,
          overrides: dict[str, Any] | None = None, root: Path | None = None, device: str | None = None,
          force: bool = False, shard: tuple[int, int] = (0, 1), progress: bool = True,
          executor: Spec = "local", stack: bool | None = None, variants: list[str] | None = None) -> Results:
    """Run every unfinished (variant, seed) of `exp` at `scale`. Finished runs are reused
    (unless force), damaged ones re-run, so an interrupted sweep resumes where it stopped.
    shard=(i, n) runs only every n-th run starting at i, for splitting a sweep over machines
    that share `out`; `variants` (names) runs only those rows, e.g. to re-run one at another budget.
    `executor` names an executor, or is a section with its options (`{"name": "ray",
    "gpus_per_run": 0.25}`). Runs that can train as one stacked model do (see `units`), unless
    stack is False ($BNROBUST_STACK=0 when None); each is still stored as its own run."""
    started_ns = time.time_ns()
    runner = EXECUTORS.build(executor, "--executor")
    runs = plan(exp, out, scale, seeds, overrides)
    dev = runner.device(device)
    i, n = shard
    check_variants(exp, scale, variants)
    mine = [r for k, r in enumerate(runs) if k % n == i and (not variants or r.variant in variants)]
    todo, notes = [], []
    for r in mine:
        h = _health(r)
        if force or not h.finished:
            todo.append(r)
            if h.reason and not force:
                notes.append(f"re-running {r.dir.name}: {h.reason}")
    _validate(todo, root)
    exp_dir = out / exp.id
    check_writable((out, "output directory"), (exp_dir, "experiment folder"), (exp_dir / "runs", "runs folder"),
                   (exp_dir / scale, "report folder"))
    clean_stale_tmp(exp_dir / "runs")
    for line in notes:
        say(line)
    todo_ids, mine_ids = {id(r) for r in todo}, {id(r) for r in mine}
    reused = sum(1 for r in runs if id(r) not in todo_ids and r.health().finished)
    others = sum(1 for r in runs if id(r) not in mine_ids and not r.health().finished)
    say(f"{exp.id} [{scale}]: {len(runs)} runs: {reused} reused, {len(todo)} to run"
        + (f", {others} left to other {'variants' if variants else 'shards'}" if others else ""))
    command = rerun_command(exp.id, scale, out, seeds, overrides)
    manifest = {"experiment": exp.id, "scale": scale, "seeds": seeds, "overrides": overrides or {},
                "runs": [{"variant": r.variant, "seed": r.seed, "dir": r.dir.name} for r in runs]}
    mpath = manifest_path(exp.id, out, scale)
    try:
        previous = read_manifest(mpath, command)
    except BnrobustError:
        previous = None  # damaged: this sweep rewrites it
    if previous is None:
        write_json_atomic(mpath, manifest)
    _compute(todo, root, dev, force, started_ns, f"{exp.id} [{scale}]", progress, runner, stacked.enabled(stack))
    write_json_atomic(mpath, manifest)
    return Results(exp, scale, runs, root)


def units(runs: list[Run], stack: bool = True, root: Path | None = None) -> list[list[Run]]:
    """The runs as units of computation, in plan order: runs with the same `stacked.stack_key`
    (the seeds of a variant, and variants that differ only in weight decay or BN's c) form one
    unit of at most `stacked.group_size` runs, trained as one stacked model; any other run is a
    unit of its own."""
    if not stack:
        return [[r] for r in runs]
    out: list[list[Run]] = []
    groups: dict[str, list[Run]] = {}
    for r in runs:
        key = stacked.stack_key(r.config)
        if key is None:
            out.append([r])
        elif key in groups:
            groups[key].append(r)
        else:
            groups[key] = [r]
            out.append(groups[key])
    sized: list[list[Run]] = []
    for unit in out:
        if len(unit) == 1:
            sized.append(unit)
            continue
        for idx in stacked.split([r.config for r in unit], get_dataset(unit[0].config, root)):
            sized.append([unit[i] for i in idx])
    return sized


def _fresh(run: Run, force: bool, since_ns: int) -> bool:
    """Finished, and with force, saved after this sweep started (by us or a concurrent sweep)."""
    h = _health(run)
    return h.finished and (not force or h.saved_ns >= since_ns)


def _compute(todo: list[Run], root: Path | None, dev: Any, force: bool, started_ns: int, desc: str,
             progress: bool, runner: Any = None, stack: bool = True) -> None:
    """Compute the runs of `todo` that nobody else is computing, unit by unit (see `units`),
    claiming every run of a unit just before the executor starts it; then wait for those that
    live processes of this host are computing, taking over any whose process dies."""
    bar = tqdm(total=len(todo), desc=desc, unit="run", disable=not progress or None)
    runner = runner if runner is not None else EXECUTORS.build("local")
    pending, remote, waited, failed = list(todo), {}, False, 0
    held: dict[str, Path] = {}  # claim files of the runs handed to the executor

    def claimed(candidates: list[Run], busy: list[tuple[Run, claims.Holder]]):
        for unit in units(candidates, stack, root):
            mine, blocked = [], None
            for run in unit:
                if _fresh(run, force, started_ns):
                    bar.update()
                    continue
                if blocked is not None:  # a concurrent sweep has started on this unit: leave it the rest,
                    busy.append((run, blocked))  # which it is claiming now (and look again next round),
                    continue  # rather than split the stack into runs computed one by one
                claim = claims.acquire(run.dir)
                if isinstance(claim, claims.Holder):
                    if claim.local:
                        busy.append((run, claim))
                        if not mine:
                            blocked = claim
                    else:
                        remote[run.dir.name] = claim
                    continue
                if _fresh(run, force, started_ns):  # another process may have finished it meanwhile
                    claims.release(claim)
                    bar.update()
                    continue
                held[run.dir.name] = claim
                mine.append(run)
            if mine:
                bar.set_postfix_str(f"{mine[0].variant} seed {mine[0].seed}"
                                    + (f" (+{len(mine) - 1} stacked)" if len(mine) > 1 else "")
                                    + (f", {failed} failed" if failed else ""))
                yield mine

    try:
        while pending:
            busy: list[tuple[Run, claims.Holder]] = []
            # compute_unit and checkpoint paths live outside this module: a Ray worker that unpickles this
            # lambda imports them, not the experiments and reports this module imports
            compute = lambda unit: compute_unit(unit, root, dev, progress)  # noqa: E731
            for unit, results in runner.map(claimed(pending, busy), compute):
                for run, (record, model) in zip(unit, results):
                    try:
                        save_run(run, record, model, force=force)
                        checkpoint_path(run).unlink(missing_ok=True)
                    finally:
                        claims.release(held.pop(run.dir.name))
                    if record.get("status") == "failed":
                        failed += 1
                        bar.set_postfix_str(f"{failed} failed")
                    bar.update()
                unit_checkpoint(unit).unlink(missing_ok=True)
            if busy and not waited:
                waited = True
                say(f"waiting for {len(busy)} run(s) that other processes are computing "
                    f"({', '.join(sorted({str(h) for _, h in busy}))})")
            if busy:
                time.sleep(POLL_S)
            pending = [run for run, _ in busy]
    finally:
        for claim in held.values():  # a run that failed with an error: let others take it
            claims.release(claim)
        bar.close()
    if remote:
        name, holder = next(iter(remote.items()))
        say(f"{len(remote)} run(s) are being computed on other hosts (e.g. {name} by {holder}) and are "
            f"missing here: run the same command again once they finish, or delete their "
            f"{claims.PREFIX}* file in the runs folder if that process is gone")


def load_results(exp: Experiment, out: Path, scale: str, root: Path | None = None) -> Results:
    """The runs of the last sweep of `exp` at `scale` under `out`, as listed in its manifest.
    Damaged runs are named on stderr and count as missing."""
    path = manifest_path(exp.id, out, scale)
    manifest = read_manifest(path, rerun_command(exp.id, scale, out))
    if manifest is None:
        raise BnrobustError(f"no {scale} results for {exp.id} in {out}: run `bnrobust run {exp.id} "
                            f"--scale {scale}` first")
    runs = plan(exp, out, scale, manifest.get("seeds"), manifest.get("overrides"))
    command = rerun_command(exp.id, scale, out, manifest.get("seeds"), manifest.get("overrides"))
    not_run = 0
    for r in runs:
        h = r.health()
        if h.reason:
            print(f"bnrobust: warning: damaged run: {h.path or r.dir}: {h.reason}; counted as missing "
                  f"(re-run it with `{command}`)", file=sys.stderr)
        not_run += not h.finished and not h.reason
    if not_run:
        print(f"bnrobust: note: {not_run} of {len(runs)} runs have not run yet (counted as missing); "
              f"`{command}` computes them", file=sys.stderr)
    return Results(exp, scale, runs, root)
