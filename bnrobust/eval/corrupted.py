"""Test sets under common corruptions (MNIST-C, CIFAR-10-C) for the `corruptions` metric, and the
paper's mean corruption error.

A corrupted test set is the dataset's *stored* test images (uint8 pixels) corrupted and stored
again as uint8, as the released files are, then decoded per batch by the dataset's own `decode`
(e.g. CIFAR-10's per-channel standardization): the model sees corrupted images through exactly
the preprocessing of its clean test images, and the identity corruption gives the clean accuracy.
The images come either from the seeded generators of bnrobust.corruptions ("generated") or, for
the `cifar10` task, from the released CIFAR-10-C files when `<root>/CIFAR-10-C/` holds them
("released"): rows 0..n-1 of each severity block, since the task's test split is the first n
test images in the official order, the order of the release (its labels are checked against it).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from ..data import Dataset
from ..errors import BnrobustError

# The stored test image each suite corrupts, as [C, H, W].
_IMAGE = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
RELEASED_FOR = "cifar10"  # the dataset whose test images the released CIFAR-10-C files are


def released_folder(ds: Dataset, suite: str, root: Path | None) -> Path | None:
    """`<root>/CIFAR-10-C` when it holds the release's labels.npy and both suite and dataset are
    CIFAR-10's; else None."""
    if suite != "cifar10" or ds.name != RELEASED_FOR or root is None:
        return None
    from ..corruptions.files import CIFAR10_C_DIR
    folder = Path(root) / CIFAR10_C_DIR
    return folder if (folder / "labels.npy").is_file() else None


def choose_source(ds: Dataset, suite: str, names: Sequence[str], root: Path | None, source: str) -> str:
    """"released" or "generated" for `source` in auto / generated / released; with the released
    files chosen, every requested corruption file must be there (checked before any work)."""
    if source == "generated":
        return "generated"
    folder = released_folder(ds, suite, root)
    if folder is None:
        if source == "released":
            if suite != "cifar10" or ds.name != RELEASED_FOR:
                raise BnrobustError(f"the 'corruptions' metric: released files exist only for CIFAR-10-C on the "
                                    f"cifar10 dataset (got suite {suite!r}, dataset {ds.name!r}); use source: "
                                    "generated")
            raise BnrobustError(f"the 'corruptions' metric: source 'released' needs the CIFAR-10-C files in "
                                f"{Path(root) / 'CIFAR-10-C' if root else '<data root>/CIFAR-10-C'}/ (labels.npy "
                                "and <corruption>.npy from https://zenodo.org/record/2535967)")
        return "generated"
    for name in names:
        if not (folder / f"{name}.npy").is_file():
            raise BnrobustError(f"CIFAR-10-C file {folder / (name + '.npy')} is missing while {folder} holds the "
                                "release's labels.npy: add it, or set the metric's source to 'generated'")
    return "released"


def _check_images(ds: Dataset, suite: str) -> None:
    x = ds.x_test
    want = _IMAGE[suite]
    if x.dtype == torch.uint8:
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise BnrobustError(f"the 'corruptions' metric with suite {suite!r} needs uint8 test images "
                                f"[N, {', '.join(map(str, want))}], dataset {ds.name} stores {list(x.shape)}")
        return
    lo, hi = ds.clip if ds.clip is not None else (0.0, 1.0)
    if (lo, hi) != (0.0, 1.0) or x.dim() != 4 or tuple(x.shape[1:]) != want:
        raise BnrobustError(f"the 'corruptions' metric with suite {suite!r} needs uint8 test images "
                            f"[N, {', '.join(map(str, want))}] or float ones in [0, 1]; dataset {ds.name} stores "
                            f"{x.dtype} {list(x.shape)} with clip {ds.clip}")


def _generate(ds: Dataset, suite: str, name: str, severity: int, seed: int) -> torch.Tensor:
    """The stored test images corrupted by bnrobust.corruptions (seeded), on the CPU, in the dataset's
    storage form: uint8 [N, C, H, W] for uint8 storage, float in [0, 1] otherwise (quantized to uint8
    on the way, as before)."""
    from .. import corruptions
    x = ds.x_test.detach().cpu()
    uint8 = x.dtype == torch.uint8
    if not uint8:  # float images in [0, 1]: decoded, then quantized like the released files
        x = torch.from_numpy(np.round(ds.inputs("test").cpu().numpy() * 255.0).astype(np.uint8))
    hwc = np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())
    out = torch.from_numpy(np.ascontiguousarray(
        corruptions.corrupt(hwc, name, severity, seed, suite).transpose(0, 3, 1, 2)))
    return out if uint8 else out.float() / 255.0


def _released(ds: Dataset, folder: Path, name: str, severity: int) -> torch.Tensor:
    from ..corruptions.files import load_cifar10_c
    n = len(ds.y_test)
    x, y = load_cifar10_c(folder.parent, name, severity, n)
    if not np.array_equal(y.astype(np.int64), ds.y_test.cpu().numpy()):
        raise BnrobustError(f"the CIFAR-10-C labels in {folder / 'labels.npy'} (severity {severity}) are not the "
                            f"first {n:,} CIFAR-10 test labels: not the released files, or another order")
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def corrupted_test_set(ds: Dataset, suite: str, name: str, severity: int, seed: int,
                       released: Path | None = None, device: torch.device | str | None = None) -> Dataset:
    """`ds` (on `device`) with its test split replaced by the corrupted one: read from the released
    folder when given, else generated with `seed`. Generated sets are cached in ds.cache (in storage
    form, e.g. uint8: N x 3 KB per corruption and severity for CIFAR-10), so every model of a sweep
    that shares the dataset object reuses them; released ones are read again (memory-mapped)."""
    _check_images(ds, suite)
    if released is not None:
        x = _released(ds, released, name, severity)
    else:
        key = ("corrupted", suite, name, int(severity), int(seed))
        if key not in ds.cache:
            ds.cache[key] = _generate(ds, suite, name, severity, seed)
        x = ds.cache[key]
    base = ds if device is None else ds.to(device)
    extra = {} if x.dtype == torch.uint8 else {"decode": None}  # float sets are model inputs already
    return dataclasses.replace(base, x_test=x.to(base.x_test.device), **extra, cache={})


def mean_corruption_error(by_severity: Mapping[str, Mapping[str, float] | Sequence[float]]) -> float:
    """The paper's mCE (%): 100 minus the mean accuracy (%) over every corruption and severity given,
    {corruption: {severity: accuracy}} (or a list of accuracies per corruption).

    Section 4 of the paper: "We report the mean error on the corrupted test set (mCE) by averaging
    over all intensity levels and corruptions." So it is unnormalized, unlike Hendrycks & Dietterich's
    mCE (each corruption's error summed over severities and divided by AlexNet's): a difference of
    two models' mCE is their difference in mean accuracy."""
    accs = [float(a) for per in by_severity.values() for a in (per.values() if isinstance(per, Mapping) else per)]
    if not accs:
        raise BnrobustError("mean_corruption_error needs at least one accuracy")
    return 100.0 - float(np.mean(accs))
