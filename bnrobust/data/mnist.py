"""MNIST (torchvision layout: <root>/MNIST/raw/*.gz) and the tasks built from it."""
from __future__ import annotations

import functools
import gzip
import warnings
from pathlib import Path
from typing import Annotated, Literal, Optional

import numpy as np
import torch
from pydantic import Field

from ..errors import BnrobustError
from . import DATASETS
from .base import Dataset
from .root import _download, _md5, download_allowed
from .transforms import DecodeImages, NearestUpscale, _subset

PosInt = Annotated[int, Field(ge=1)]
Digit = Annotated[int, Field(ge=0, le=9)]
Preprocess = Literal["unit", "pixel-std", "image-std"]

MNIST_MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
]
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


def mnist_files(root: Path, download: bool | None = None) -> dict[str, Path]:
    """Paths of the four verified MNIST files, downloading missing ones if allowed."""
    raw = root / "MNIST" / "raw"
    download = download_allowed() if download is None else download
    paths = {}
    for name, md5 in MNIST_FILES.items():
        path = raw / name
        if not path.exists():
            if not download:
                raise BnrobustError(
                    f"MNIST file {path} is missing: put the four official MNIST .gz files in "
                    f"{raw}/ (or pass --data-dir / set BNROBUST_DATA to a folder with MNIST/raw/)")
            try:
                _download([m + name for m in MNIST_MIRRORS], path, md5)
            except OSError as e:
                raise BnrobustError(
                    f"MNIST file {path} is missing and could not be downloaded ({str(e)[:200]}): "
                    f"put the four official MNIST .gz files in {raw}/") from None
        elif _md5(path) != md5:
            raise BnrobustError(
                f"MNIST file {path} is corrupt (md5 {_md5(path)}, expected {md5}): "
                "delete it and re-download, or replace it with the official file")
        paths[name] = path
    return paths


def read_idx(path: Path) -> np.ndarray:
    """Read a (gzipped) IDX file as used by MNIST: magic, dims, then raw big-endian data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise BnrobustError(f"cannot read IDX file {path}: {e}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise BnrobustError(f"{path} is not an IDX file (bad magic number)")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise BnrobustError(f"{path}: unknown IDX data type {data[2]:#x}")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=dtypes[data[2]], offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise BnrobustError(f"{path}: IDX header says {shape} but the file holds {arr.size} values")
    return arr.reshape(shape)


@functools.lru_cache(maxsize=2)  # a sweep reads (and md5-checks) the files once
def load_mnist_arrays(root: Path, download: bool | None = None):
    """(x_train uint8 [60000,28,28], y_train, x_test, y_test) from the official files."""
    p = mnist_files(root, download)
    return (read_idx(p["train-images-idx3-ubyte.gz"]), read_idx(p["train-labels-idx1-ubyte.gz"]),
            read_idx(p["t10k-images-idx3-ubyte.gz"]), read_idx(p["t10k-labels-idx1-ubyte.gz"]))


def _shared_tensor(a: np.ndarray) -> torch.Tensor:
    """A tensor over `a`'s memory, also where `a` is the read-only cached array of
    load_mnist_arrays (every dataset of a sweep shares the one copy in memory). Nothing writes
    stored images (decoding makes new tensors), so torch's warning about non-writable arrays,
    which every user would see, does not apply."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(a))


@DATASETS.register("mnist")
def mnist(root: Path, seed: int, preprocess: Preprocess = "unit", n_train: Optional[PosInt] = None,
          n_test: Optional[PosInt] = None, size: Annotated[int, Field(ge=28, multiple_of=28)] = 28) -> Dataset:
    """10-class MNIST in [1, 28, 28] layout, upscaled to size x size (a multiple of 28) by
    nearest-neighbour interpolation; optionally seeded uniform subsets of n_train / n_test."""
    if not (isinstance(size, int) and size >= 28 and size % 28 == 0):
        raise BnrobustError(f"data.size must be a multiple of 28 (28, 56, 84, 112, ...), got {size!r}")
    xtr, ytr, xte, yte = load_mnist_arrays(root)
    rng = np.random.default_rng(seed)
    idx = _subset(n_train, len(xtr), rng, "n_train")
    if idx is not None:
        xtr, ytr = xtr[idx], ytr[idx]
    idx = _subset(n_test, len(xte), rng, "n_test")
    if idx is not None:
        xte, yte = xte[idx], yte[idx]
    x_train, x_test = (_shared_tensor(a).unsqueeze(1) for a in (xtr, xte))
    decode, clip = DecodeImages.fit(preprocess, x_train)
    return Dataset("mnist" if size == 28 else f"mnist{size}", x_train, torch.from_numpy(ytr.astype(np.int64)),
                   x_test, torch.from_numpy(yte.astype(np.int64)), 10, clip,
                   NearestUpscale(size // 28) if size > 28 else None, decode)


@DATASETS.register("mnist-binary")
def mnist_binary(root: Path, seed: int, classes: Annotated[list[Digit], Field(min_length=2, max_length=2)] = [3, 7],
                 n_per_class: Optional[PosInt] = 2500, preprocess: Preprocess = "unit") -> Dataset:
    """Two MNIST digits relabelled 0/1; n_per_class training images of each drawn uniformly
    (seeded) from the training set; the whole test set of the two digits."""
    a, b = classes
    if a == b or not all(0 <= c <= 9 for c in classes):
        raise BnrobustError(f"data.classes must be two different digits, got {list(classes)}")
    xtr, ytr, xte, yte = load_mnist_arrays(root)
    rng = np.random.default_rng(seed)
    parts = []
    for c in (a, b):
        idx = np.flatnonzero(ytr == c)
        if n_per_class is not None:
            if not 0 < n_per_class <= len(idx):
                raise BnrobustError(f"data.n_per_class must be in 1..{len(idx)}, got {n_per_class}")
            idx = np.sort(rng.choice(idx, size=n_per_class, replace=False))
        parts.append(idx)
    tr = np.concatenate(parts)
    te = np.flatnonzero((yte == a) | (yte == b))
    to_x = lambda arr: _shared_tensor(arr).flatten(1)  # noqa: E731
    to_y = lambda arr: torch.from_numpy((arr == b).astype(np.int64))  # noqa: E731
    x_train, x_test = to_x(xtr[tr]), to_x(xte[te])
    decode, clip = DecodeImages.fit(preprocess, x_train)
    return Dataset(f"mnist{a}{b}", x_train, to_y(ytr[tr]), x_test, to_y(yte[te]), 2, clip, decode=decode)
