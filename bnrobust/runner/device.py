"""Choosing the device a sweep runs on, and moving host tensors there without waiting for it."""
from __future__ import annotations

import torch

from ..errors import BnrobustError


def resolve_device(device: str | None) -> torch.device:
    """auto (a CUDA GPU if there is one, else the CPU), cpu, cuda or cuda:N; anything else is a
    one-line error (other backends, e.g. mps or meta, are not supported)."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise BnrobustError(f"unsupported device {device!r}: use cpu, cuda, cuda:N or auto")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BnrobustError(f"--device {device} was asked for but no CUDA GPU is available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BnrobustError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return dev


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A CPU tensor (e.g. random numbers drawn by a seeded CPU generator) on `device`. To a GPU
    the copy is asynchronous (pinned memory, non_blocking): a plain `.to("cuda")` waits for the
    GPU to finish its queued work, one host sync per batch in the training loop."""
    device = torch.device(device)
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
