"""The Dataset type every task returns: stored tensors (uint8 images where the source is
images) and the per-batch steps that turn them into model inputs.

A batch goes: stored -> `decode` (to float, preprocessing) -> [train: `augment`] -> [noise
"before the transform"] -> `transform` (e.g. upscaling) -> [attacks] -> model. Only the batch
is ever decoded, so a dataset that does not fit in memory as float32 stays uint8, on the
training device (`Dataset.to`), and augmentation runs there too.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from ..errors import BnrobustError
from ..runner.device import to_device

Batch = tuple[torch.Tensor, torch.Tensor]
SPLITS = ("train", "val", "test")


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor     # stored form (uint8 images, or float for synthetic data)
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    clip: tuple[float, float] | None  # valid (decoded) input range, used by attacks and noise
    # Applied to every batch before the model sees it (e.g. upscaling): the stored tensors stay
    # small, and noise can act before it while attacks act after it, in the model's input space.
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None  # stored batch -> float; None: as stored
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None  # training batches only
    x_val: torch.Tensor | None = None  # a validation split held out of the training set, if any
    y_val: torch.Tensor | None = None
    # Derived data (e.g. corrupted test sets) that lives and dies with this dataset object.
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_tensors(cls, x: torch.Tensor, y: torch.Tensor, num_classes: int | None = None,
                     clip: tuple[float, float] | None = None, name: str = "tensors") -> "Dataset":
        """A dataset whose training and test split are the given tensors (library use)."""
        k = int(y.max()) + 1 if num_classes is None else num_classes
        return cls(name, x, y, x, y, k, clip)

    def split(self, split: str) -> Batch:
        """The stored (x, y) of a split."""
        if split not in SPLITS:
            raise BnrobustError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
        x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
        if x is None:
            raise BnrobustError(f"dataset {self.name} has no {split} split")
        return x, y

    def take(self, split: str, index) -> torch.Tensor:
        """Decoded inputs (before `transform`) of some items of a split; for small analyses."""
        x = self.split(split)[0][index]
        return x if self.decode is None else self.decode(x)

    def inputs(self, split: str) -> torch.Tensor:
        """A whole split decoded; for analyses of small datasets (figures, centroids)."""
        return self.take(split, slice(None))

    def batches(self, split: str, batch_size: int, generator: torch.Generator | None = None,
                augment: bool = False) -> Iterator[Batch]:
        """Decoded (x, y) batches of a split, on the device the data lives on.

        With a generator the order is a fresh seeded permutation and a trailing batch of
        one is dropped (BN's batch statistics of one example are undefined); batch_size 0
        is the whole split as one batch."""
        x, y = self.split(split)
        n = len(x)
        bs = n if batch_size in (0, None) else min(batch_size, n)
        perm = to_device(torch.randperm(n, generator=generator), x.device) if generator is not None and bs < n else None
        for start in range(0, n, bs):
            if perm is None:
                xb, yb = (x, y) if bs == n else (x[start:start + bs], y[start:start + bs])
            else:
                idx = perm[start:start + bs]
                if len(idx) < 2 and start > 0:
                    continue
                xb, yb = x.index_select(0, idx), y.index_select(0, idx)  # = x[idx], many times faster on CPU
            if self.decode is not None:
                xb = self.decode(xb)
            if augment and self.augment is not None:
                xb = self.augment(xb, generator)
            yield xb, yb

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """A decoded batch as the model's input."""
        return x if self.transform is None else self.transform(x)

    def to(self, device: torch.device | str) -> "Dataset":
        """The dataset with its stored tensors on `device` (kept resident there; cached)."""
        device = torch.device(device)
        if self.x_train.device == device:
            return self
        key = ("on", str(device))
        if key not in self.cache:
            moved = {f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)
                     if isinstance(getattr(self, f.name), torch.Tensor)}
            self.cache[key] = dataclasses.replace(self, **moved, cache={})
        return self.cache[key]

    def head(self, n: int) -> "Dataset":
        """The same dataset with only the first n test items (e.g. for costly attacks)."""
        return dataclasses.replace(self, x_test=self.x_test[:n], y_test=self.y_test[:n], cache={})

    def describe(self) -> dict:
        """What data a run used, for its record: {"name", "num_classes", "sizes": {split: n}
        (None for a missing split), "sha256": the first 16 hex digits of a SHA-256 over every
        stored split in the order x_train, y_train, x_val, y_val, x_test, y_test (each as its
        name, dtype, shape and raw bytes; so a different subset, order or split changes it),
        "decode": repr of the decode step (it names e.g. the standardization statistics)}.
        Cached on the dataset object."""
        if "describe" not in self.cache:
            h = hashlib.sha256()
            for key in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
                t = getattr(self, key)
                if t is None:
                    h.update(f"{key}:none;".encode())
                    continue
                t = t.detach().contiguous()
                h.update(f"{key}:{t.dtype}:{list(t.shape)};".encode())
                h.update(t.reshape(-1).view(torch.uint8).cpu().numpy().data if t.numel() else b"")
            self.cache["describe"] = {
                "name": self.name, "num_classes": self.num_classes,
                "sizes": {s: (None if getattr(self, f"x_{s}") is None else len(getattr(self, f"x_{s}")))
                          for s in SPLITS},
                "sha256": h.hexdigest()[:16], "decode": None if self.decode is None else repr(self.decode)}
        return dict(self.cache["describe"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one model input (after `decode` and `transform`)."""
        return tuple(self.prepare(self.take("train", slice(0, 1))).shape[1:])
