"""Executors: how a sweep computes the runs it has claimed (`EXECUTORS`).

An executor takes an iterator of runs and a function that computes one run into (record,
model), and yields (run, record, model) as runs finish; the sweep stores each result
and releases its claim. It pulls runs from the iterator only when it can start them, so runs
are claimed just before they are computed and concurrent sweeps share the work. To add one
(a cluster, a pool of GPUs), register a class here whose `map` follows that contract.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

from torch import nn

from ..registry import Registry

EXECUTORS = Registry("executor", default="local")

Compute = Callable[[Any], tuple[dict, nn.Module]]


@EXECUTORS.register("local")
class LocalExecutor:
    """Computes the runs one after another in this process (the default)."""

    def map(self, runs: Iterable[Any], compute: Compute) -> Iterator[tuple[Any, dict, nn.Module]]:
        for run in runs:
            record, model = compute(run)
            yield run, record, model
