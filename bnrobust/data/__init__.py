"""Datasets: where they live on disk, how they are read and checked, and the tasks built
from them (`DATASETS`). To add a dataset, write one module here whose builder carries
`@DATASETS.register("name")` and takes `root` and `seed`, and import it below."""
from __future__ import annotations

from pathlib import Path

from ..registry import Registry, Spec

DATASETS = Registry("dataset", context=("root", "seed"))

from .base import Dataset  # noqa: E402
from .root import data_root, download_allowed  # noqa: E402
from .transforms import DecodeImages, NearestUpscale, per_image_standardize  # noqa: E402
from . import cifar, mnist, svhn, synthetic  # noqa: E402,F401  (register the datasets)
from . import imagenet  # noqa: E402,F401  (the ILSVRC2012 validation set, user-supplied)
from .mnist import load_mnist_arrays, mnist_files, read_idx  # noqa: E402


def load_dataset(spec: Spec, seed: int, root: Path | None = None) -> Dataset:
    """Build a dataset from a config section {"name": ..., **options}."""
    return DATASETS.build(spec, "data", root=root if root is not None else data_root(), seed=seed)


__all__ = ["DATASETS", "Dataset", "data_root", "download_allowed", "load_dataset", "load_mnist_arrays",
           "mnist_files", "read_idx", "NearestUpscale", "DecodeImages", "per_image_standardize"]
