"""Where a run in progress keeps its training state, and how the bytes get there.

A checkpoint is named by its path on the machine that keeps the run store (the driver of a
sweep); the trainer only reads and writes bytes. In-process, `open_checkpoint(path)` is that
file. An executor that trains elsewhere (a Ray worker on another machine, where the path may not
exist) installs a transport for the duration of a run (`checkpoint_transport`) whose checkpoints
send the bytes to the driver, which writes the same file: so a run whose worker dies resumes
from its last checkpoint wherever it is retried. No torch here: a Ray worker that only keeps
files imports this module and nothing heavy.
"""
from __future__ import annotations

import contextvars
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Protocol, runtime_checkable


@runtime_checkable
class Checkpoint(Protocol):
    """The saved training state of one run: whole or absent."""
    name: str  # for messages (the file's name)

    def read(self) -> bytes | None:
        """The last state written, or None if there is none."""

    def write(self, data: bytes | memoryview) -> None:
        """Replace the state, atomically."""


class FileCheckpoint:
    """A checkpoint file, written atomically (a temporary file renamed into place)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.name = self.path.name

    def read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def write(self, data: bytes | memoryview) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, self.path)

    def __str__(self) -> str:
        return str(self.path)


Transport = Callable[[Path], Checkpoint]
_TRANSPORT: contextvars.ContextVar[Transport] = contextvars.ContextVar("bnrobust_checkpoints", default=FileCheckpoint)


def open_checkpoint(where: Path | str | Checkpoint | None) -> Checkpoint | None:
    """The checkpoint named by `where` (a path on the driver) through the current transport; a
    Checkpoint is used as it is."""
    if where is None or isinstance(where, Checkpoint):
        return where
    return _TRANSPORT.get()(Path(where))


@contextmanager
def checkpoint_transport(transport: Transport) -> Iterator[None]:
    """Within the block, checkpoint paths open through `transport` (path -> Checkpoint)."""
    token = _TRANSPORT.set(transport)
    try:
        yield
    finally:
        _TRANSPORT.reset(token)
