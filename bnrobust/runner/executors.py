"""Executors: how a sweep computes the runs it has claimed (`EXECUTORS`).

An executor takes an iterator of units (a run) and a function that computes one unit into
(record, model), and yields (unit, record, model) as units finish; the sweep stores each result
and releases its claim. It pulls units from the iterator only when it can start them, so runs
are claimed just before they are computed and concurrent sweeps share the work. It also says
which device the runs use (`device`), since only it knows where they are computed. To add one
(a cluster, a pool of GPUs), register a class here whose `map` and `device` follow that
contract; `ray_executor.py` is one.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from ..registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

EXECUTORS = Registry("executor", default="local")

Compute = Callable[[Any], "tuple[dict, nn.Module]"]


@EXECUTORS.register("local")
class LocalExecutor:
    """Computes the runs one after another in this process (the default)."""

    def device(self, spec: str | None) -> torch.device:
        """The device of --device `spec` (auto, cpu, cuda, cuda:N), checked on this machine."""
        from .device import resolve_device
        return resolve_device(spec)

    def map(self, runs: Iterable[Any], compute: Compute) -> Iterator[tuple[Any, dict, nn.Module]]:
        for run in runs:
            record, model = compute(run)
            yield run, record, model


from . import ray_executor  # noqa: E402,F401  (registers "ray"; imports Ray only when used)
