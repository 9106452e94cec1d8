"""The Ray executor: a sweep's runs as Ray tasks, on every core or GPU of this machine or of a
cluster (`bnrobust run ID --executor ray [--address ADDR]`).

The driver (the `bnrobust run` process) keeps doing what the in-process executor's sweep does:
it plans, claims, stores every result atomically in its run store and draws the one progress
bar. Each unit is a Ray task with the resources asked for (`cpus_per_run`, `gpus_per_run`:
0.25 puts four runs on one GPU); it returns its record and weights to the driver, so workers
need no shared filesystem (the data and the bnrobust package must be on every node). A task's
checkpoints go to the driver too: tasks write them through a small actor pinned to the driver's
machine (`_CheckpointKeeper`), which writes the same `.ckpt-*` file the in-process sweep would,
so a run whose worker dies resumes from its last checkpoint on the worker Ray retries it on.

Faults: a worker that dies is retried by Ray (`max_retries` times, then the run is named and
the others still finish); an exception in a run (a BnrobustError, a bug) is not retried and
stops the sweep, as in-process; a run that fails to train is a record like any other. A killed
driver takes its local Ray with it, leaves stale claims and checkpoints, and the same command
resumes. Ray is imported only when this executor is used (`pip install 'bnrobust[ray]'`).
"""
from __future__ import annotations

import functools
import logging
import math
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Iterable, Iterator

from pydantic import Field
from tqdm.auto import tqdm

from ..checkpoints import FileCheckpoint, checkpoint_transport
from ..errors import BnrobustError
from .executors import EXECUTORS, Compute

if TYPE_CHECKING:
    import torch

EXTRA = "pip install 'bnrobust[ray]'"
POLL_S = 5.0  # how often the driver looks for new nodes while every slot is busy
_END = object()


def _say(line: str) -> None:
    tqdm.write(line, file=sys.stderr)


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise BnrobustError(f"--executor ray needs Ray, an optional extra: {EXTRA}") from None
    return ray


@EXECUTORS.register("ray")
class RayExecutor:
    """Computes the runs in parallel as Ray tasks: on every core or GPU of this machine, or of a cluster (--address)."""

    def __init__(self, address: str | None = None, gpus_per_run: Annotated[float, Field(ge=0)] = 0.0,
                 cpus_per_run: Annotated[float, Field(gt=0)] = 1.0, max_retries: Annotated[int, Field(ge=0)] = 3):
        _ray()
        if address is not None and address.startswith("ray://"):
            raise BnrobustError(f"--address {address}: Ray Client (ray://) is not supported, since the driver writes "
                                "the run store on its own machine: run bnrobust on a node of the cluster (the head, "
                                "or a machine joined with `ray start --address HEAD:6379`) with --address auto")
        if address is not None:
            _check_reachable(address)
        self.address, self.gpus, self.cpus, self.max_retries = address, gpus_per_run, cpus_per_run, max_retries
        self._said = ""

    def device(self, spec: str | None) -> torch.device:
        """auto is a GPU when runs reserve one (--gpus-per-run), else the CPU. Not checked here: the
        driver may have no GPU while its workers do."""
        import torch
        spec = spec or "auto"
        if spec == "auto":
            return torch.device("cuda" if self.gpus > 0 else "cpu")
        if spec == "cpu" and self.gpus > 0:
            raise BnrobustError(f"--device cpu with --gpus-per-run {self.gpus:g}: the runs would leave the GPUs they "
                                "reserve idle; drop one of the two")
        if spec == "cuda" and self.gpus == 0:
            raise BnrobustError("--device cuda with --executor ray needs --gpus-per-run (e.g. 1, or 0.25 to put four "
                                "runs on one GPU)")
        if spec not in ("cpu", "cuda"):
            raise BnrobustError(f"--device {spec} with --executor ray: use auto, cpu or cuda (Ray gives each run its "
                                "own GPU, which it sees as cuda)")
        return torch.device(spec)

    def map(self, units: Iterable[Any], compute: Compute) -> Iterator[tuple[Any, Any]]:
        units = iter(units)
        first = next(units, _END)
        if first is _END:
            return  # nothing to run: no Ray started
        ray = _connect(self.address)
        from ray.exceptions import RayError, RayTaskError
        keeper = _start_keeper(ray)
        task = ray.remote(_run_unit).options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=self.max_retries,
                                             retry_exceptions=False, name="bnrobust-run")
        fn, threads = ray.put(compute), max(1, math.floor(self.cpus))
        running: dict[Any, Any] = {}  # task ref -> unit
        lost: list[tuple[Any, BaseException]] = []
        nxt = first
        try:
            while True:
                limit = self._slots(ray) + 1  # one queued: no idle gap, and demand an autoscaler can see
                while len(running) < limit and nxt is not _END:
                    running[task.remote(fn, nxt, threads, keeper)] = nxt
                    nxt = next(units, _END)
                if not running:
                    break
                done, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
                for ref in done:
                    unit = running.pop(ref)
                    try:
                        result = ray.get(ref)
                    except RayTaskError as e:  # the run raised: as in-process, no retry, the sweep stops
                        raise _cause(e) from None
                    except RayError as e:  # its worker or node died more often than max_retries
                        lost.append((unit, e))
                        _say(f"ray: lost {_label(unit)}: {_first_line(e)}")
                        continue
                    yield unit, result
        finally:
            for ref in running:
                ray.cancel(ref, force=True)
            ray.kill(keeper)
        if lost:
            raise BnrobustError(f"{len(lost)} run(s) lost their Ray worker {self.max_retries + 1} times (e.g. "
                                f"{_label(lost[0][0])}: {_first_line(lost[0][1])}); the others are stored: run the "
                                "same command again to retry them")

    def _slots(self, ray: Any) -> int:
        """How many runs the cluster's live nodes can hold at once (at least 1: an autoscaler may add nodes)."""
        need = {"CPU": self.cpus, **({"GPU": self.gpus} if self.gpus > 0 else {})}
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        slots = sum(min(math.floor(res.get(k, 0.0) / v + 1e-9) for k, v in need.items()) for res in nodes)
        cpus, gpus = (sum(res.get(k, 0.0) for res in nodes) for k in ("CPU", "GPU"))
        line = (f"ray: {len(nodes)} node(s) with {cpus:g} CPUs and {gpus:g} GPUs: {slots} run(s) at a time "
                f"({self.cpus:g} CPU{f', {self.gpus:g} GPU' if self.gpus else ''} each)")
        if gpus and not self.gpus:
            line += "; the GPUs stay idle without --gpus-per-run"
        if slots == 0:
            line += "; waiting for nodes that fit a run"
            if not self.address and not os.environ.get("RAY_ADDRESS"):
                raise BnrobustError(f"this machine has {cpus:g} CPUs and {gpus:g} GPUs: no run fits in "
                                    f"--cpus-per-run {self.cpus:g} --gpus-per-run {self.gpus:g}")
        if line != self._said:
            self._said = line
            _say(line)
        return max(slots, 1)


def _connect(address: str | None) -> Any:
    """This process's Ray: the one already initialized, else a cluster's (`address`, or $RAY_ADDRESS as
    `ray job submit` sets it), else a new local Ray on this machine. Workers see our BNROBUST_* variables."""
    ray = _ray()
    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS")
    try:
        if address:  # the workers of other machines do not inherit our environment
            env = {k: v for k, v in os.environ.items() if k.startswith("BNROBUST_")}
            ray.init(address=address, logging_level=logging.WARNING, runtime_env={"env_vars": env})
        else:  # a local Ray's workers do
            ray.init(address="local", include_dashboard=False, logging_level=logging.ERROR)
    except (ConnectionError, ValueError, RuntimeError) as e:
        what = f"join the Ray cluster at {address}" if address else "start a local Ray"
        raise BnrobustError(f"cannot {what}: {_first_line(e)}") from None
    return ray


def _check_reachable(address: str) -> None:
    """A HOST:PORT that nothing answers on is one line now, not minutes of Ray retrying."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", "local": Ray checks those quickly itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise BnrobustError(f"cannot reach the Ray cluster at {address} ({e.strerror or e}): is `ray start --head` "
                            "running there?") from None


class _CheckpointKeeper:
    """Reads and writes checkpoint files on the driver's machine, for tasks running anywhere."""

    def read(self, path: str) -> bytes | None:
        return FileCheckpoint(path).read()

    def write(self, path: str, data: bytes) -> None:
        FileCheckpoint(path).write(data)


def _start_keeper(ray: Any) -> Any:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(_CheckpointKeeper).options(num_cpus=0, scheduling_strategy=here, max_restarts=3,
                                                 max_task_retries=3).remote()


class RemoteCheckpoint:
    """A checkpoint file on the driver's machine, read and written through its keeper."""

    def __init__(self, keeper: Any, path: Path):
        self.keeper, self.path, self.name = keeper, str(path), Path(path).name

    def read(self) -> bytes | None:
        import ray
        return ray.get(self.keeper.read.remote(self.path))

    def write(self, data: bytes | memoryview) -> None:
        import ray
        ray.get(self.keeper.write.remote(self.path, bytes(data)))

    def __str__(self) -> str:
        return self.path


class Weights:
    """A trained model's state dict on the CPU: what a task sends back instead of the module (the sweep
    stores only the state dict; a frozen published model's is empty, so nothing big travels)."""

    def __init__(self, module: Any):
        self._state = {k: v.detach().cpu() for k, v in module.state_dict().items()}

    def state_dict(self) -> dict:
        return self._state


def _portable(obj: Any) -> Any:
    """`obj` with every nn.Module in it (nested in tuples, lists, dicts) replaced by its Weights."""
    from torch import nn
    if isinstance(obj, nn.Module):
        return Weights(obj)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_portable(x) for x in obj)
    if isinstance(obj, dict):
        return {k: _portable(v) for k, v in obj.items()}
    return obj


def _run_unit(compute: Compute, unit: Any, threads: int, keeper: Any) -> Any:
    """The Ray task: compute one unit with `threads` torch threads, its checkpoints kept on the driver."""
    import torch
    torch.set_num_threads(threads)
    with checkpoint_transport(functools.partial(RemoteCheckpoint, keeper)):
        return _portable(compute(unit))


def _cause(e: BaseException) -> BaseException:
    """What to raise for a task that raised: a BnrobustError or OSError as itself (one line), anything
    else as Ray's error, which carries the remote traceback."""
    from ray.exceptions import RayTaskError
    inner = e
    while isinstance(inner, RayTaskError) and getattr(inner, "cause", None) is not None:
        inner = inner.cause
    return inner if isinstance(inner, (BnrobustError, OSError)) else e


def _label(unit: Any) -> str:
    """A short name for a unit in messages: its run folder's name(s)."""
    if isinstance(unit, (list, tuple)):
        return ", ".join(_label(u) for u in unit)
    folder = getattr(unit, "dir", None)
    return folder.name if isinstance(folder, Path) else repr(unit)[:60]


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__
