"""Choosing the device a sweep runs on."""
from __future__ import annotations

import torch

from ..errors import BnrobustError


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise BnrobustError(f"unknown device {device!r} (use cpu, cuda, cuda:N or auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BnrobustError("--device cuda was asked for but no CUDA GPU is available")
    return dev
