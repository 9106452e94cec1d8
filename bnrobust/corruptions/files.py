"""Readers of the released MNIST-C and CIFAR-10-C .npy files: the reference data, which the
seeded generators of this package only approximate in distribution."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BnrobustError
from .common import _check_severity

MNIST_C_FILES = ("identity",) + (
    "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear", "scale", "rotate",
    "brightness", "translate", "stripe", "fog", "spatter", "dotted_line", "zigzag", "canny_edges")
CIFAR10_C_FILES = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
    "jpeg_compression", "speckle_noise", "gaussian_blur", "spatter", "saturate")
# Hendrycks & Dietterich (2019), Fig. 1 and appendix: the 15 benchmark corruptions in four
# categories, and the 4 held-out ones ("extra"; their validation set). The paper's Table 4 counts
# speckle_noise among the "noise" corruptions, i.e. the noise category plus one extra.
CIFAR10_C_CATEGORIES: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
    "extra": ("speckle_noise", "gaussian_blur", "spatter", "saturate"),
}
CIFAR10_C_DIR = "CIFAR-10-C"


def _load_npy(path: Path, shape: tuple, what: str, mmap: bool = False) -> np.ndarray:
    if not path.is_file():
        raise BnrobustError(f"{what} file {path} is missing")
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise BnrobustError(f"{what} file {path} is corrupt or not a .npy file ({str(e)[:120]})") from None
    if arr.dtype != np.uint8 or arr.shape != shape:
        raise BnrobustError(f"{what} file {path} holds {arr.dtype} {list(arr.shape)}, "
                            f"expected uint8 {list(shape)}")
    return arr


def load_mnist_c(root: Path, corruption: str) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-C test split of one corruption from `<root>/mnist_c/<corruption>/test_{images,labels}.npy`
    (the zenodo release): images uint8 [10000, 28, 28] (the file's channel axis dropped), labels."""
    if corruption not in MNIST_C_FILES:
        raise BnrobustError(f"unknown MNIST-C corruption {corruption!r}; choose from {', '.join(MNIST_C_FILES)}")
    d = Path(root) / "mnist_c" / corruption
    x = _load_npy(d / "test_images.npy", (10000, 28, 28, 1), "MNIST-C")
    y = _load_npy(d / "test_labels.npy", (10000,), "MNIST-C")
    return x[..., 0], y


def load_cifar10_c(root: Path, corruption: str, severity: int, n: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """One severity of CIFAR-10-C from `<root>/CIFAR-10-C/<corruption>.npy` ([50000, 32, 32, 3]
    uint8, severities 1..5 in blocks of 10000, each the CIFAR-10 test set in its official order)
    and `labels.npy`: images [10000, 32, 32, 3] and labels, or only the first n of each (read from
    the memory-mapped files, so n images cost n rows of I/O)."""
    if corruption not in CIFAR10_C_FILES:
        raise BnrobustError(f"unknown CIFAR-10-C corruption {corruption!r}; "
                            f"choose from {', '.join(CIFAR10_C_FILES)}")
    _check_severity("cifar10", severity)
    if n is not None and not (isinstance(n, (int, np.integer)) and 0 <= n <= 10000):
        raise BnrobustError(f"CIFAR-10-C holds 10,000 images per severity; cannot take the first {n!r}")
    d = Path(root) / CIFAR10_C_DIR
    x = _load_npy(d / f"{corruption}.npy", (50000, 32, 32, 3), "CIFAR-10-C", mmap=True)
    y = _load_npy(d / "labels.npy", (50000,), "CIFAR-10-C", mmap=True)
    start = (severity - 1) * 10000
    block = slice(start, start + (10000 if n is None else int(n)))
    try:
        return np.array(x[block]), np.array(y[block])
    except (OSError, ValueError) as e:  # a truncated file can fail only when read
        raise BnrobustError(f"CIFAR-10-C file in {d} is corrupt ({str(e)[:120]})") from None
