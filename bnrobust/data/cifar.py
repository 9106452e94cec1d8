"""The CIFAR-10 task (`cifar10` in DATASETS) and the CIFAR-10.1 v6 test set.

Stored form: uint8 images [N, 3, 32, 32] (CHW, RGB) and int64 labels, read by
`load_cifar10_arrays` (data/cifar10.py, md5-checked, python or binary layout). Per batch:
`decode` = per-channel standardization (`StandardizeChannels`), then on training batches
`augment` = random crop of the 4-pixel padded image + horizontal flip (`CropFlip`).

Clip range (attacks and noise): [-2, 2] in standardized units, the paper's (appendix B: "most
of the pixels fall within this range") and the catalogue's value for CIFAR-10. It does not hold
the whole decoded range. Measured on the real files (45,000 training images, seed 0):
standardize="train" (or "full": std 0.247, 0.243, 0.262) decodes pixel 0 / 255 to
R -1.99 / 2.06, G -1.98 / 2.13, B -1.71 / 2.12, so no value lies below -2 and 2.7% of the
training pixel values (R 2.0%, G 2.9%, B 3.2%; test set 2.7%) lie above 2: [-2, 2] cuts only
the brightest pixel values (R >= 252, G >= 247, B >= 248). standardize="kuangliu" (std about 0.2) decodes 0 / 255
to -2.43..-2.22 / 2.51..2.75 and puts 11.4% of the training values outside [-2, 2] (3.8% below,
7.6% above).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Literal, Optional

import numpy as np
import torch
from pydantic import Field

from ..errors import BnrobustError
from ..runner.device import to_device
from . import DATASETS
from .base import Dataset
from .cifar10 import load_cifar10_arrays
from .root import _md5

PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]

CLIP = (-2.0, 2.0)
# The paper's preprocessing (its footnote 7: kuangliu/pytorch-cifar main.py), also used by the
# authors' released Fixup code. The "std" values are not the per-channel standard deviations of
# CIFAR-10 (those are about 0.247, 0.243, 0.262): inputs decoded with them have variance ~1.5.
KUANGLIU_MEAN = (0.4914, 0.4822, 0.4465)
KUANGLIU_STD = (0.2023, 0.1994, 0.2010)


# ---------------------------------------------------------------------------
# Decode and augment


class StandardizeChannels:
    """uint8 images [N, C, H, W] -> float32 (x / 255 - mean_c) / std_c, by lookup in a [C, 256]
    table computed in float64 and rounded once: every value is the correctly rounded float32 of
    the exact result, identical on every device (no float32 arithmetic per pixel).

    `label` names where the statistics came from ("train", "full", "kuangliu"); it is in repr,
    so a run record (`Dataset.describe()`) says which standardization was used."""

    def __init__(self, mean, std, label: str = "custom"):
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if len(self.mean) != len(self.std) or min(self.std) <= 0:
            raise BnrobustError(f"standardization needs one mean and one positive std per channel, "
                                f"got mean {self.mean} and std {self.std}")
        self.label = label
        m, s = np.asarray(self.mean)[:, None], np.asarray(self.std)[:, None]
        self.table = torch.from_numpy(((np.arange(256.0)[None, :] / 255.0 - m) / s).astype(np.float32))
        self._on: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _lut(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = str(device)
        if key not in self._on:
            c = len(self.mean)
            self._on[key] = (self.table.reshape(-1).to(device),
                             (torch.arange(c, device=device) * 256).view(1, c, 1, 1))
        return self._on[key]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != len(self.mean):
            raise BnrobustError(f"standardization needs uint8 images [N, {len(self.mean)}, H, W], got "
                                f"{x.dtype} {list(x.shape)}")
        flat, offset = self._lut(x.device)
        return flat[x.long() + offset]

    def pixel(self, value: int) -> torch.Tensor:
        """The decoded value [C] of a raw pixel value (e.g. 0, black) in every channel."""
        return self.table[:, value].clone()

    def __repr__(self) -> str:
        f = lambda v: "(" + ", ".join(f"{a:.4f}" for a in v) + ")"  # noqa: E731
        return f"StandardizeChannels({self.label!r}, mean={f(self.mean)}, std={f(self.std)})"


class CropFlip:
    """Random crops of the image padded by `padding` pixels on every side, then a horizontal flip
    with probability 1/2: torchvision's RandomCrop(32, padding=4) + RandomHorizontalFlip() as the
    CIFAR literature (and the paper) uses them, on a whole batch with torch ops on its device.

    As in torchvision, the padding is raw pixel value 0 (black) *before* normalization: on the
    decoded batch it is `fill` = the decoded value of pixel 0 in each channel (-mean_c / std_c),
    so augment(decode(x)) equals decode(augment of the uint8 image) exactly.

    Randomness: from `generator` (on the CPU; the default generator when None), per batch of N,
    drawn in this order: row offsets randint(0, 2p+1, N), column offsets randint(0, 2p+1, N),
    flips randint(0, 2, N) (1 = flip); then moved to the batch's device."""

    def __init__(self, fill: torch.Tensor, padding: int = 4):
        self.fill, self.padding = fill.float(), int(padding)
        self._fill_on: dict[tuple[str, torch.dtype], torch.Tensor] = {}  # copied to a device once, not per batch

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n, c, h, w = x.shape
        p = self.padding
        oy = torch.randint(0, 2 * p + 1, (n,), generator=generator)
        ox = torch.randint(0, 2 * p + 1, (n,), generator=generator)
        flip = torch.randint(0, 2, (n,), generator=generator).bool()
        dev = x.device
        key = (str(dev), x.dtype)
        if key not in self._fill_on:
            self._fill_on[key] = self.fill.to(dev, x.dtype).view(1, c, 1, 1)
        padded = self._fill_on[key].repeat(n, 1, h + 2 * p, w + 2 * p)
        padded[:, :, p:p + h, p:p + w] = x
        rows = oy[:, None] + torch.arange(h)
        cols = torch.where(flip[:, None], ox[:, None] + (w - 1 - torch.arange(w)), ox[:, None] + torch.arange(w))
        rows, cols = to_device(rows, dev), to_device(cols, dev)
        return padded[torch.arange(n, device=dev).view(n, 1, 1, 1), torch.arange(c, device=dev).view(1, c, 1, 1),
                      rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]

    def __repr__(self) -> str:
        return f"CropFlip(padding={self.padding})"


def channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and (population) std of uint8 images [N, H, W, C] on the [0, 1]
    scale: from integer histograms (float64 sums of integers, exact), in chunks."""
    c = x.shape[-1]
    hist = np.zeros((c, 256), dtype=np.int64)
    for start in range(0, len(x), 2048):
        chunk = x[start:start + 2048]
        for ch in range(c):
            hist[ch] += np.bincount(chunk[..., ch].ravel(), minlength=256)
    v = np.arange(256, dtype=np.float64)
    n = hist.sum(1).astype(np.float64)
    mean = (hist @ v) / n
    var = (hist @ (v * v)) / n - mean ** 2
    return tuple(mean / 255.0), tuple(np.sqrt(np.maximum(var, 0.0)) / 255.0)


# ---------------------------------------------------------------------------
# The task


def split_indices(n_total: int, seed: int, n_train: int | None, n_val: int,
                  source: str = "CIFAR-10") -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices into the official training set: perm = default_rng(seed).permutation
    (n_total); val = sorted(perm[:n_val]); train = sorted(perm[n_val:n_val + n_train]) (all the
    rest when n_train is None). One-line error, naming `source`, when more are asked for than there are."""
    want = (n_total - n_val) if n_train is None else n_train
    if n_val + want > n_total or want < 1:
        asked = f"{n_val:,} validation" + ("" if n_train is None else f" + {n_train:,} training")
        raise BnrobustError(f"data.n_train + data.n_val ask for {asked} images but the {source} training files "
                            f"hold {n_total:,} (and at least one must be left for training)")
    perm = np.random.default_rng(seed).permutation(n_total)
    return np.sort(perm[n_val:n_val + want]), np.sort(perm[:n_val])


def _chw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


@DATASETS.register("cifar10")
def cifar10(root: Path, seed: int, n_train: Optional[PosInt] = None, n_val: NonNegInt = 5000,
            n_test: Optional[PosInt] = None, standardize: Literal["train", "full", "kuangliu"] = "train",
            augment: bool = True) -> Dataset:
    """CIFAR-10 from the official files, standardized per channel, with a seeded validation split
    held out of the training set and crop+flip augmentation of training batches.

    Splits: perm = np.random.default_rng(seed).permutation(50000) over the official training
    order; validation = the first n_val of perm (0: no validation split), training = the next
    n_train (None: all the rest, 50,000 - n_val); both sorted back to the official order. Test =
    the first n_test test images in the official order (None: all 10,000).

    standardize: "train" = the exact per-channel mean/std of the training images actually used
    (the catalogue's "zero mean, unit variance"; seed- and subset-dependent in the 4th digit);
    "full" = those of all 50,000 official training images (0.4914, 0.4822, 0.4465 /
    0.2470, 0.2435, 0.2616; the same for every seed and subset); "kuangliu" = the paper's own
    preprocessing constants (std 0.2023, 0.1994, 0.2010; variance ~1.5, see KUANGLIU_STD).
    augment: random 32x32 crops of the zero-padded (black, before standardization) 40x40 image
    and horizontal flips (`CropFlip`); False: training batches are used as stored. clip: [-2, 2]."""
    xtr, ytr, xte, yte = load_cifar10_arrays(root)
    tr, va = split_indices(len(xtr), seed, n_train, n_val)
    if n_test is not None and n_test > len(xte):
        raise BnrobustError(f"data.n_test must be at most {len(xte):,} (the images the CIFAR-10 test file holds), "
                            f"got {n_test:,}")
    x_train = xtr[tr]
    if standardize == "kuangliu":
        mean, std = KUANGLIU_MEAN, KUANGLIU_STD
    else:
        mean, std = channel_stats(x_train if standardize == "train" else xtr)
    decode = StandardizeChannels(mean, std, standardize)
    to_y = lambda a: torch.from_numpy(np.asarray(a, dtype=np.int64))  # noqa: E731
    nt = len(xte) if n_test is None else n_test
    return Dataset("cifar10", _chw(x_train), to_y(ytr[tr]), _chw(xte[:nt]), to_y(yte[:nt]), 10, CLIP,
                   decode=decode, augment=CropFlip(decode.pixel(0)) if augment else None,
                   x_val=_chw(xtr[va]) if n_val else None, y_val=to_y(ytr[va]) if n_val else None)


# ---------------------------------------------------------------------------
# CIFAR-10.1 v6 (Recht et al., 2018)

CIFAR101_URL = "https://github.com/modestyachts/CIFAR-10.1/raw/master/datasets/"
# md5s of the published v6 files (as in the MIT rai-toolbox's CIFAR10P1 and other loaders)
CIFAR101_FILES = {
    "cifar10.1_v6_data.npy": "4fcae82cb1326aec9ed1dc1fc62345b8",
    "cifar10.1_v6_labels.npy": "09a97fb7c430502fcbd69d95093a3f85",
}
CIFAR101_DIRS = ("CIFAR-10.1", "CIFAR-10.1/datasets", ".")  # under the data root, in this order


class Cifar101NotFound(BnrobustError):
    """The CIFAR-10.1 v6 files are not under the data root (a metric can report "not found")."""


def cifar101_folder(root: Path) -> Path | None:
    """The first of <root>/CIFAR-10.1/, <root>/CIFAR-10.1/datasets/ (a clone of the repository),
    <root>/ that holds cifar10.1_v6_data.npy; None if none does."""
    for sub in CIFAR101_DIRS:
        if (Path(root) / sub / "cifar10.1_v6_data.npy").exists():
            return Path(root) / sub
    return None


def load_cifar101(root: Path, verify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10.1 v6: (images uint8 [2000, 32, 32, 3] HWC, labels int64 [2000]), md5-checked unless
    verify=False. Raises Cifar101NotFound when absent, BnrobustError (one line) when damaged."""
    folder = cifar101_folder(root)
    if folder is None:
        raise Cifar101NotFound(
            f"CIFAR-10.1 v6 not found under {root}: put cifar10.1_v6_data.npy and cifar10.1_v6_labels.npy "
            f"(from {CIFAR101_URL}) in {Path(root) / 'CIFAR-10.1'}/")
    arrays = []
    for name, md5 in CIFAR101_FILES.items():
        path = folder / name
        if not path.is_file():
            raise BnrobustError(f"CIFAR-10.1 file {path} is missing: download it from {CIFAR101_URL}{name}")
        if verify and _md5(path) != md5:
            raise BnrobustError(f"CIFAR-10.1 file {path} is corrupt (md5 {_md5(path)}, expected {md5}): "
                                f"replace it with {CIFAR101_URL}{name}")
        try:
            arrays.append(np.load(path, allow_pickle=False))
        except (OSError, ValueError, EOFError) as e:
            raise BnrobustError(f"CIFAR-10.1 file {path} is not a .npy array ({str(e)[:120]})") from None
    x, y = arrays
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3) or y.shape != (len(x),) or \
            not np.issubdtype(y.dtype, np.integer) or (y.size and not (y.min() >= 0 and y.max() <= 9)):
        raise BnrobustError(f"CIFAR-10.1 files in {folder} hold {x.dtype} {list(x.shape)} images and {y.dtype} "
                            f"{list(y.shape)} labels, expected uint8 [N, 32, 32, 3] and N labels in 0..9")
    return x, y.astype(np.int64)


def with_cifar101_test(ds: Dataset, root: Path, verify: bool = True) -> Dataset:
    """`ds` (a cifar10 Dataset) with CIFAR-10.1 v6 as its test split: stored as uint8 [2000, 3, 32,
    32] on ds's device and decoded by ds.decode (the same standardization), so every metric runs
    on it unchanged. Raises Cifar101NotFound when the files are absent."""
    if ds.x_test.dim() != 4 or tuple(ds.x_test.shape[1:]) != (3, 32, 32) or ds.x_test.dtype != torch.uint8:
        raise BnrobustError(f"CIFAR-10.1 needs a CIFAR-10 dataset (uint8 [N, 3, 32, 32]), got {ds.name}")
    x, y = load_cifar101(root, verify)
    dev = ds.x_test.device
    return dataclasses.replace(ds, name=f"{ds.name}.1-v6", x_test=_chw(x).to(dev),
                               y_test=torch.from_numpy(y).to(dev), cache={})
