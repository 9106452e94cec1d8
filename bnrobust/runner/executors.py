"""Executors: how a sweep computes the runs it has claimed (`EXECUTORS`).

An executor takes an iterator of units and a function that computes one unit, and yields
(unit, results) as units finish; the sweep stores each run and releases its claim. A unit is a
list of runs (`runner.storage.Run`): one run, or several that train as one stacked model
(`runner.sweep.units`); compute(unit) returns [(record, model)], one per run, in the unit's
order. An executor pulls units from the iterator only when it can start them, so runs are
claimed just before they are computed and concurrent sweeps share the work. To add one (a
cluster, a pool of GPUs), register a class here whose `map` follows that contract.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator

from torch import nn

from ..registry import Registry

EXECUTORS = Registry("executor", default="local")

Unit = list  # of runner.storage.Run
Results = list[tuple[dict, nn.Module]]  # (record, model) per run of a unit, in its order
Compute = Callable[[Unit], Results]


@EXECUTORS.register("local")
class LocalExecutor:
    """Computes the units one after another in this process (the default)."""

    def map(self, units: Iterable[Unit], compute: Compute) -> Iterator[tuple[Unit, Results]]:
        for unit in units:
            yield unit, compute(unit)
