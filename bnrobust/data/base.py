"""The Dataset type every task returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass
class Dataset:
    """Train/test tensors plus what models and attacks need to know about them."""
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    clip: tuple[float, float] | None  # valid input range, used by attacks and noise
    # Applied to every batch before the model sees it (e.g. upscaling): the stored tensors stay
    # small, and noise can act before it while attacks act after it, in the model's input space.
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    # Derived data (e.g. corrupted test sets) that lives and dies with this dataset object.
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """A stored batch as the model's input."""
        return x if self.transform is None else self.transform(x)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one model input (after `transform`)."""
        return tuple(self.prepare(self.x_train[:1]).shape[1:])
