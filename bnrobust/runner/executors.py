"""Executors: how a sweep computes the runs it has claimed (`EXECUTORS`).

An executor takes an iterator of units and a function that computes one unit, and yields
(unit, results) as units finish; the sweep stores each run and releases its claim. A unit is a
list of runs (`runner.storage.Run`): one run, or several that train as one stacked model
(`runner.sweep.units`); compute(unit) returns [(record, model)], one per run, in the unit's
order. An executor pulls units from the iterator only when it can start them, so runs are
claimed just before they are computed and concurrent sweeps share the work. It also says which
device the runs use (`device`), since only it knows where they are computed. To add one (a
cluster, a pool of GPUs), register a class here whose `map` and `device` follow that contract;
`ray_executor.py` is one.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from ..registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

EXECUTORS = Registry("executor", default="local")

Unit = list  # of runner.storage.Run
Results = "list[tuple[dict, nn.Module]]"  # (record, model) per run of a unit, in its order
Compute = Callable[[Any], Any]  # unit -> Results


@EXECUTORS.register("local")
class LocalExecutor:
    """Computes the units one after another in this process (the default)."""

    def device(self, spec: str | None) -> torch.device:
        """The device of --device `spec` (auto, cpu, cuda, cuda:N), checked on this machine."""
        from .device import resolve_device
        return resolve_device(spec)

    def map(self, units: Iterable[Any], compute: Compute) -> Iterator[tuple[Any, Any]]:
        for unit in units:
            yield unit, compute(unit)


from . import ray_executor  # noqa: E402,F401  (registers "ray"; imports Ray only when used)
