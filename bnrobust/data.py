"""Datasets: where they live on disk, how they are read, and the tasks built from them.

Every dataset is held in memory as float32 tensors (MNIST is 180 MB as float32), so
training can batch by indexing instead of going through a DataLoader.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .errors import BnrobustError

# ---------------------------------------------------------------------------
# Data root


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """`--data-dir`, else `$BNROBUST_DATA`, else the user cache directory."""
    if data_dir:
        return Path(data_dir).expanduser()
    if os.environ.get("BNROBUST_DATA"):
        return Path(os.environ["BNROBUST_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "bnrobust"


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(urls: list[str], dest: Path, md5: str, timeout: float = 20.0) -> None:
    """Fetch `dest` from the first mirror that serves a file with the right md5."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in urls:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as r:
                shutil.copyfileobj(r, out)
            if _md5(Path(tmp)) != md5:
                raise OSError("md5 mismatch")
            os.replace(tmp, dest)
            return
        except Exception as e:  # noqa: BLE001 - any failure means "try the next mirror"
            errors.append(f"{url}: {e}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise OSError("; ".join(errors))


# ---------------------------------------------------------------------------
# MNIST (torchvision layout: <root>/MNIST/raw/*.gz)

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


def download_allowed() -> bool:
    return os.environ.get("BNROBUST_NO_DOWNLOAD", "") in ("", "0")


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


# ---------------------------------------------------------------------------
# In-memory datasets


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

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """A stored batch as the model's input."""
        return x if self.transform is None else self.transform(x)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one model input (after `transform`)."""
        return tuple(self.prepare(self.x_train[:1]).shape[1:])


PREPROCESS = ("unit", "pixel-std", "image-std")


def per_image_standardize(x: torch.Tensor) -> torch.Tensor:
    """(x - mean) / max(std, 1/sqrt(D)) per image, as tf.image.per_image_standardization."""
    flat = x.flatten(1)
    std = flat.std(dim=1, unbiased=False).clamp_min(flat.shape[1] ** -0.5)
    return ((flat - flat.mean(dim=1, keepdim=True)) / std[:, None]).view_as(x)


def apply_preprocess(x_train: torch.Tensor, x_test: torch.Tensor, mode: str):
    """Apply a preprocessing mode to [0,1] images; returns (train, test, clip range)."""
    if mode == "unit":
        return x_train, x_test, (0.0, 1.0)
    if mode == "pixel-std":  # statistics of the training set only
        mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-8)
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    elif mode == "image-std":
        x_train, x_test = per_image_standardize(x_train), per_image_standardize(x_test)
    else:
        raise BnrobustError(f"unknown preprocessing {mode!r}; choose from {', '.join(PREPROCESS)}")
    return x_train, x_test, (float(x_train.min()), float(x_train.max()))


class NearestUpscale:
    """Upscale [N, C, H, W] images by an integer factor with nearest-neighbour interpolation.

    For integer factors this is exactly PIL's Image.NEAREST resize (each pixel becomes a
    factor x factor block). Applied per batch, so a 112x112 MNIST never sits in memory.
    """

    def __init__(self, factor: int):
        self.factor = factor

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        k = self.factor
        n, c, h, w = x.shape
        return x[:, :, :, None, :, None].expand(n, c, h, k, w, k).reshape(n, c, h * k, w * k)

    def __repr__(self) -> str:
        return f"NearestUpscale({self.factor})"


def _subset(n: int | None, size: int, rng: np.random.Generator, what: str) -> np.ndarray | None:
    if n is None:
        return None
    if not (isinstance(n, int) and 0 < n <= size):
        raise BnrobustError(f"data.{what} must be an integer in 1..{size}, got {n!r}")
    return np.sort(rng.choice(size, size=n, replace=False))


def mnist(root: Path, seed: int, preprocess: str = "unit", n_train: int | None = None,
          n_test: int | None = None, size: int = 28) -> Dataset:
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
    to_t = lambda a: torch.from_numpy(a.astype(np.float32) / 255.0).unsqueeze(1)  # noqa: E731
    x_train, x_test, clip = apply_preprocess(to_t(xtr), to_t(xte), preprocess)
    return Dataset("mnist" if size == 28 else f"mnist{size}", x_train, torch.from_numpy(ytr.astype(np.int64)),
                   x_test, torch.from_numpy(yte.astype(np.int64)), 10, clip,
                   NearestUpscale(size // 28) if size > 28 else None)


def mnist_binary(root: Path, seed: int, classes: tuple[int, int] = (3, 7),
                 n_per_class: int | None = 2500, preprocess: str = "unit") -> Dataset:
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
    to_x = lambda arr: torch.from_numpy(arr.astype(np.float32) / 255.0).flatten(1)  # noqa: E731
    to_y = lambda arr: torch.from_numpy((arr == b).astype(np.int64))  # noqa: E731
    x_train, x_test, clip = apply_preprocess(to_x(xtr[tr]), to_x(xte[te]), preprocess)
    return Dataset(f"mnist{a}{b}", x_train, to_y(ytr[tr]), x_test, to_y(yte[te]), 2, clip)


def gaussian_2d(root: Path, seed: int, mean0=(-5.0, 0.0), mean1=(5.0, 0.0),
                cov=((1.0, 0.05), (0.05, 0.01)), n_train: int = 1000, n_test: int = 10000) -> Dataset:
    """Fig. 1 task: x | y=j ~ N(nu_j, Sigma), y ~ Ber(0.5). Test points are fresh samples."""
    try:
        cov_t = torch.tensor(cov, dtype=torch.float64)
        means = torch.tensor([mean0, mean1], dtype=torch.float64)
    except (TypeError, ValueError):
        raise BnrobustError(f"data.mean0, data.mean1 and data.cov must be numbers, got {mean0}, {mean1}, {cov}") from None
    if means.shape != (2, 2):
        raise BnrobustError(f"data.mean0 and data.mean1 must be 2-D points, got {mean0}, {mean1}")
    if cov_t.shape != (2, 2) or not torch.allclose(cov_t, cov_t.T) or torch.linalg.eigvalsh(cov_t).min() <= 0:
        raise BnrobustError(f"data.cov must be a 2x2 symmetric positive definite matrix, got {cov}")
    if n_train < 2 or n_test < 1:
        raise BnrobustError("data.n_train must be >= 2 and data.n_test >= 1")
    g = torch.Generator().manual_seed(seed)
    chol = torch.linalg.cholesky(cov_t)

    def sample(n):
        y = torch.bernoulli(torch.full((n,), 0.5, dtype=torch.float64), generator=g).long()
        z = torch.randn(n, 2, generator=g, dtype=torch.float64)
        return (means[y] + z @ chol.T).float(), y

    x_train, y_train = sample(n_train)
    x_test, y_test = sample(n_test)
    return Dataset("gaussian-2d", x_train, y_train, x_test, y_test, 2, None)


def spheres(root: Path, seed: int, n_train: int = 500, n_test_per_class: int = 10000,
            radii: tuple[float, float] = (1.0, 1.3), dim: int = 2) -> Dataset:
    """"Adversarial spheres" (Gilmer et al., 2018): points of N(0, I) projected onto two
    concentric spheres (class 0 inner, class 1 outer). A fixed finite training set of
    n_train points (half per class) and fresh test points, n_test_per_class of each."""
    if not (isinstance(n_train, int) and n_train >= 2 and n_test_per_class >= 1 and dim >= 1):
        raise BnrobustError("data.n_train must be >= 2, data.n_test_per_class >= 1 and data.dim >= 1")
    if len(radii) != 2 or not 0 < radii[0] < radii[1]:
        raise BnrobustError(f"data.radii must be two radii 0 < r0 < r1, got {radii}")
    g = torch.Generator().manual_seed(seed)

    def sample(n0: int, n1: int):
        z = torch.randn(n0 + n1, dim, generator=g, dtype=torch.float64)
        y = torch.cat([torch.zeros(n0, dtype=torch.long), torch.ones(n1, dtype=torch.long)])
        r = torch.tensor(radii, dtype=torch.float64)[y]
        return (z / z.norm(dim=1, keepdim=True) * r[:, None]).float(), y

    x_train, y_train = sample(n_train // 2, n_train - n_train // 2)
    x_test, y_test = sample(n_test_per_class, n_test_per_class)
    return Dataset("spheres", x_train, y_train, x_test, y_test, 2, None)


DATASETS: dict[str, Callable[..., Dataset]] = {
    "mnist": mnist,
    "mnist-binary": mnist_binary,
    "gaussian-2d": gaussian_2d,
    "spheres": spheres,
}


def load_dataset(spec: dict, seed: int, root: Path | None = None) -> Dataset:
    """Build a dataset from a config section {"name": ..., **kwargs}."""
    from .registry import call_registered
    return call_registered(DATASETS, "data", spec, root=root if root is not None else data_root(), seed=seed)
