"""SVHN (Netzer et al., 2011), the cropped-digits format, as the `svhn` task of DATASETS.

Files: the two official MATLAB files `train_32x32.mat` (73,257 images) and `test_32x32.mat`
(26,032), from http://ufldl.stanford.edu/housenumbers/ ("extra" is not used, as in the paper's
appendix J.2), in `<root>/SVHN/` (or directly in `<root>/`, where torchvision's `SVHN(root)`
puts them); md5-checked once per process and downloaded there when missing and allowed. Each
holds X, uint8 [32, 32, 3, N] (row, column, RGB, image), and y, [N, 1] with digits 1..9 and
10 for the digit 0; read with scipy.io.loadmat, stored like the `cifar10` task (uint8
[N, 3, 32, 32], int64 labels 0..9) so that decode, devices and the corruption metric are shared.

Preprocessing and clip range. The paper standardizes SVHN "to zero mean and unit variance" and
clips attacks and noise to [-1, 1] (appendix B; the catalogue's value). standardize="train"
(default) and "full" do the former, per channel as for CIFAR-10; with the usual SVHN statistics
(mean ~0.44, std ~0.20) a pixel of 0 / 255 decodes to about -2.2 / 2.8, so [-1, 1] cuts the
darkest and brightest pixel values (we had no SVHN files to measure how many). standardize="pm1"
is the other reading of "[-1, 1]": (x / 255 - 0.5) / 0.5, torchvision's Normalize(0.5, 0.5),
whose decoded range is exactly [-1, 1]. No augmentation: the paper's SVHN training has none
(its CIFAR-10 training differs from it by the crops and flips)."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Literal, Optional

import numpy as np
import torch
from pydantic import Field

from ..errors import BnrobustError
from . import DATASETS
from .base import Dataset
from .cifar import StandardizeChannels, _chw, channel_stats, split_indices
from .root import _download, _md5, download_allowed

PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]

SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
# Official md5s (as listed by torchvision's datasets/svhn.py).
SVHN_FILES = {
    "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
    "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
}
SVHN_DIR = "SVHN"
CLIP = (-1.0, 1.0)


def svhn_folder(root: Path) -> Path:
    """`<root>/SVHN/`, unless only `<root>/` itself holds an SVHN file (torchvision's layout)."""
    root = Path(root)
    sub = root / SVHN_DIR
    if not any((sub / n).exists() for n in SVHN_FILES) and any((root / n).is_file() for n in SVHN_FILES):
        return root
    return sub


def _fetch_command(path: Path) -> str:
    return f"curl -L -o {path} {SVHN_URL}{path.name}"


def svhn_file(root: Path, name: str, verify: bool = True, download: bool | None = None) -> Path:
    """The path of one official SVHN file, md5-checked unless verify=False; a missing file is
    downloaded into `<root>/SVHN/` when allowed (`download`, default: download_allowed())."""
    path = svhn_folder(root) / name
    md5 = SVHN_FILES[name]
    if not path.exists():
        if not (download_allowed() if download is None else download):
            raise BnrobustError(f"SVHN file {path} is missing: download it with `{_fetch_command(path)}` "
                                f"(or point --data-dir / BNROBUST_DATA at a folder with SVHN/{name})")
        try:
            _download([SVHN_URL + name], path, md5, timeout=60.0)
        except OSError as e:
            raise BnrobustError(f"SVHN file {path} is missing and could not be downloaded ({str(e)[:200]}): "
                                f"download it with `{_fetch_command(path)}`") from None
    elif verify and (got := _md5(path)) != md5:
        raise BnrobustError(f"SVHN file {path} is corrupt (md5 {got}, expected {md5}): delete it and "
                            f"download it again with `{_fetch_command(path)}`")
    return path


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One cropped-digits file: images uint8 [N, 32, 32, 3] (HWC) and labels int64 [N] in 0..9
    (the file's label 10 is the digit 0)."""
    import scipy.io
    try:
        mat = scipy.io.loadmat(str(path), variable_names=["X", "y"])
    except Exception as e:  # noqa: BLE001 - scipy raises many types for a file that is not MATLAB
        raise BnrobustError(f"SVHN file {path} is not a MATLAB file ({str(e)[:120]})") from None
    x, y = mat.get("X"), mat.get("y")
    if x is None or y is None:
        raise BnrobustError(f"SVHN file {path} holds no X and y variables: it is not an SVHN cropped-digits file")
    y = np.asarray(y).reshape(-1)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or len(y) != x.shape[3] or \
            not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise BnrobustError(f"SVHN file {path} holds X {x.dtype} {list(x.shape)} and y {y.dtype} "
                            f"{list(y.shape)}, expected X uint8 [32, 32, 3, N] and N labels")
    if y.size and not (np.all(y == np.round(y)) and y.min() >= 1 and y.max() <= 10):
        raise BnrobustError(f"SVHN file {path} holds labels outside 1..10 (10 = digit 0): it is not an "
                            "SVHN cropped-digits file")
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)), y.astype(np.int64) % 10


@functools.lru_cache(maxsize=2)  # a sweep reads (and md5-checks) the files once
def load_svhn_arrays(root: Path, verify: bool = True, download: bool | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train uint8 [73257, 32, 32, 3], y_train int64 0..9, x_test [26032, 32, 32, 3], y_test)
    in the files' order."""
    xtr, ytr = read_svhn_mat(svhn_file(root, "train_32x32.mat", verify, download))
    xte, yte = read_svhn_mat(svhn_file(root, "test_32x32.mat", verify, download))
    return xtr, ytr, xte, yte


def _luma(x: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] -> uint8 [N, H, W, 1]: ITU-R 601 luma, rounded."""
    y = x.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)[..., None]


@DATASETS.register("svhn")
def svhn(root: Path, seed: int, n_train: Optional[PosInt] = None, n_val: NonNegInt = 5000,
         n_test: Optional[PosInt] = None, standardize: Literal["train", "full", "pm1", "unit"] = "train",
         grayscale: bool = False) -> Dataset:
    """SVHN digits (train_32x32.mat, test_32x32.mat in <root>/SVHN/), standardized per channel,
    with a seeded validation split held out of the training set; clip [-1, 1] (the paper's).

    Splits as `cifar10`: perm = np.random.default_rng(seed).permutation(73257); validation = the
    first n_val of perm, training = the next n_train (None: all the rest); both sorted back to the
    file's order. Test = the first n_test test images (None: all 26,032).
    standardize: "train" = exact per-channel mean/std of the training images used; "full" = those
    of all 73,257 training images; "pm1" = (x / 255 - 0.5) / 0.5, exactly [-1, 1]; "unit" = x / 255,
    pixels in [0, 1] (clip [0, 1]), for models that normalize their own input (appendix J.2).
    grayscale: one channel, ITU-R 601 luma 0.299 R + 0.587 G + 0.114 B rounded to uint8 (Table 15's
    CNN reads one input channel)."""
    xtr, ytr, xte, yte = load_svhn_arrays(root)
    tr, va = split_indices(len(xtr), seed, n_train, n_val, "SVHN")
    if n_test is not None and n_test > len(xte):
        raise BnrobustError(f"data.n_test must be at most {len(xte):,} (the images test_32x32.mat holds), "
                            f"got {n_test:,}")
    if grayscale:
        xtr, xte = _luma(xtr), _luma(xte)
    x_train = xtr[tr]
    channels = xtr.shape[-1]
    if standardize == "unit":
        mean, std = (0.0,) * channels, (1.0,) * channels
    elif standardize == "pm1":
        mean, std = (0.5,) * channels, (0.5,) * channels
    else:
        mean, std = channel_stats(x_train if standardize == "train" else xtr)
    to_y = lambda a: torch.from_numpy(np.asarray(a, dtype=np.int64))  # noqa: E731
    nt = len(xte) if n_test is None else n_test
    return Dataset("svhn", _chw(x_train), to_y(ytr[tr]), _chw(xte[:nt]), to_y(yte[:nt]), 10,
                   (0.0, 1.0) if standardize == "unit" else CLIP,
                   decode=StandardizeChannels(mean, std, standardize),
                   x_val=_chw(xtr[va]) if n_val else None, y_val=to_y(ytr[va]) if n_val else None)
