"""The ImageNet (ILSVRC2012) validation set, read from the user's files and decoded batch by batch.

Nothing here downloads: the images are only available from image-net.org after registering.
Two layouts are read, from `<root>/imagenet/` (or `<root>/` itself if it holds `val/`):

- torchvision's `ImageFolder` layout, `val/<wnid>/*.JPEG` with the 1,000 class folders (what
  torchvision's `ImageNet(root, split="val")` leaves behind);
- the flat files of ILSVRC2012_img_val.tar, `val/ILSVRC2012_val_00000001.JPEG` ..., labelled by the
  devkit (`ILSVRC2012_devkit_t12/data/{meta.mat,ILSVRC2012_validation_ground_truth.txt}`, or both
  files directly in the imagenet folder) or by a labels file (`val_labels.txt` / Caffe's `val.txt`:
  "<file> <wnid or class index>" per line; or Kaggle's `LOC_val_solution.csv`).

Class i is torchvision's: the i-th of the sorted wnids (`imagenet_classes.WNIDS`). Every image
goes through torchvision's evaluation transform (RGB, resize the short side to 256 with
bilinear filtering, centre crop 224, /255, ImageNet mean/std), so the model inputs, the noise and
the attacks all live in the normalized space; the valid range (`clip`) is the catalogue's [-2, 2].

The stored "images" of the test split are file indices: `decode` reads and transforms the
files of one batch (Pillow, on a thread pool; Pillow-SIMD, a faster drop-in build of Pillow, is
used when it is installed in its place), so the validation set is never held in memory. The test
split is a seeded permutation of the files (a seeded subset of n_test of them), so its first n
items are a uniform random sample. Every chosen file is checked to decode before any run starts.
"""
from __future__ import annotations

import csv
import functools
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import torch
from pydantic import Field

from ..errors import BnrobustError
from . import DATASETS
from .base import Dataset
from .imagenet_classes import WNID_INDEX, WNIDS
from .transforms import DecodeImages

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP = (-2.0, 2.0)  # the catalogue's (and the paper's, appendix B) valid range of normalized inputs
N_VAL = 50000
PAGE = "https://image-net.org/download-images.php"
DEVKIT = "ILSVRC2012_devkit_t12"
GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
LABEL_FILES = ("val_labels.txt", "val.txt", "LOC_val_solution.csv")
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's
FLAT_NAME = re.compile(r"^ILSVRC2012_val_(\d{8})$")
WNID_NAME = re.compile(r"^n\d{8}$")

PosInt = Annotated[int, Field(ge=1)]


def _where(root: Path) -> str:
    return (f"put the ILSVRC2012 validation images in {root / 'imagenet' / 'val'}/ either as torchvision's "
            "ImageFolder layout (val/<wnid>/*.JPEG, 1,000 class folders) or as the 50,000 files of "
            f"ILSVRC2012_img_val.tar with the devkit ({DEVKIT}.tar.gz unpacked beside val/) or a labels file "
            f"(see the README); both from {PAGE} (registration required)")


def imagenet_dir(root: Path) -> Path:
    """The folder that holds `val/`: `<root>/imagenet`, else `<root>` itself."""
    root = Path(root)
    for cand in (root / "imagenet", root):
        if (cand / "val").is_dir():
            return cand
    raise BnrobustError(f"ImageNet validation set not found under {root}: {_where(root)}")


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS) and not name.startswith(".")


def _scandir(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as e:
        raise BnrobustError(f"cannot read ImageNet folder {folder}: {e.strerror or e}") from None


def _image_folder(val: Path, entries: list[os.DirEntry]) -> tuple[list[str], list[int]]:
    """val/<wnid>/<image>: every one of the 1,000 class folders must be there (a missing one
    means a partial copy or another class set, whose labels would not be torchvision's)."""
    dirs = {e.name for e in entries if e.is_dir() and not e.name.startswith(".")}
    stray = sorted(d for d in dirs if d not in WNID_INDEX)
    if stray:
        raise BnrobustError(f"ImageNet folder {val / stray[0]} is not one of the 1,000 ILSVRC2012 class folders "
                            "(val/ must hold exactly the folders n01440764 ... n15075141)")
    missing = [w for w in WNIDS if w not in dirs]
    if missing:
        raise BnrobustError(f"ImageNet class folder {val / missing[0]} is missing ({len(missing)} of the 1,000 "
                            "class folders missing): copy the whole validation set (torchvision's ImageFolder layout)")
    paths, labels = [], []
    for wnid in WNIDS:
        for e in _scandir(val / wnid):
            if _is_image(e.name):
                paths.append(e.path)
                labels.append(WNID_INDEX[wnid])
    return paths, labels


def read_meta_mat(path: Path) -> dict[int, str]:
    """ILSVRC2012_ID -> wnid of the 1,000 leaf synsets of the devkit's data/meta.mat (a struct
    array `synsets` with fields ILSVRC2012_ID, WNID, words, gloss, num_children, ...)."""
    import scipy.io
    try:
        synsets = scipy.io.loadmat(str(path), squeeze_me=True)["synsets"]
        ids, wnids, children = (np.atleast_1d(synsets[k]) for k in ("ILSVRC2012_ID", "WNID", "num_children"))
        leaf = {int(i): str(w) for i, w, c in zip(ids, wnids, children) if int(c) == 0}
    except Exception as e:  # noqa: BLE001 - any failure means "not the devkit's meta.mat"
        raise BnrobustError(f"ImageNet devkit file {path} is not the devkit's meta.mat ({str(e)[:100]})") from None
    if sorted(leaf) != list(range(1, 1001)) or sorted(leaf.values()) != list(WNIDS):
        raise BnrobustError(f"ImageNet devkit file {path} does not list the 1,000 ILSVRC2012 classes with ids "
                            "1..1000: it is not the ILSVRC2012 devkit's meta.mat")
    return leaf


def read_ground_truth(path: Path) -> list[int]:
    """The devkit's ILSVRC2012_ID of validation image 1, 2, ... (one integer per line)."""
    try:
        values = [int(line) for line in path.read_text().split()]
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise BnrobustError(f"cannot read ImageNet ground truth {path} ({str(e)[:100]}): it must hold one "
                            "class id (1..1000) per line") from None
    bad = [v for v in values if not 1 <= v <= 1000]
    if bad:
        raise BnrobustError(f"ImageNet ground truth {path} holds class id {bad[0]}, expected 1..1000")
    return values


def read_labels_file(path: Path) -> dict[str, int]:
    """{image stem: class index} from `val_labels.txt` / `val.txt` ("<file> <wnid or index>") or
    Kaggle's `LOC_val_solution.csv` (ImageId, PredictionString starting with the wnid)."""
    out: dict[str, int] = {}
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise BnrobustError(f"cannot read ImageNet labels file {path}: {e}") from None
    if path.suffix == ".csv":
        rows = [(r[0], r[1].split()[0] if r[1].split() else "") for r in csv.reader(text.splitlines()[1:]) if len(r) >= 2]
    else:
        rows = [tuple(line.split()[:2]) for line in text.splitlines() if line.strip()]
    for n, row in enumerate(rows, start=1 + (path.suffix == ".csv")):
        if len(row) != 2:
            raise BnrobustError(f"ImageNet labels file {path}, line {n}: expected '<file> <wnid or class index>'")
        name, label = row
        if label in WNID_INDEX:
            out[Path(name).stem] = WNID_INDEX[label]
        elif label.isdigit() and int(label) < 1000:
            out[Path(name).stem] = int(label)
        else:
            raise BnrobustError(f"ImageNet labels file {path}, line {n}: {label!r} is neither an ILSVRC2012 wnid "
                                "nor a class index 0..999")
    return out


def _first(cands: list[Path]) -> Path | None:
    return next((p for p in cands if p.is_file()), None)


def _flat(imdir: Path, val: Path, entries: list[os.DirEntry]) -> tuple[list[str], list[int]]:
    files = [(FLAT_NAME.match(Path(e.name).stem), e) for e in entries if _is_image(e.name)]
    files = [(int(m.group(1)), e) for m, e in files if m]
    if not files:
        raise BnrobustError(f"ImageNet folder {val} holds neither the 1,000 class folders nor "
                            f"ILSVRC2012_val_*.JPEG files: {_where(imdir.parent)}")
    homes = [imdir / DEVKIT / "data", imdir]
    meta, truth = _first([h / "meta.mat" for h in homes]), _first([h / GROUND_TRUTH for h in homes])
    if meta is not None and truth is not None:
        id_to_wnid, gt = read_meta_mat(meta), read_ground_truth(truth)
        too_far = [k for k, _ in files if k > len(gt)]
        if too_far:
            raise BnrobustError(f"ImageNet ground truth {truth} has {len(gt)} lines, but val/ holds image number "
                                f"{too_far[0]}")
        return [e.path for _, e in files], [WNID_INDEX[id_to_wnid[gt[k - 1]]] for k, _ in files]
    labels_path = _first([imdir / name for name in LABEL_FILES])
    if labels_path is None:
        raise BnrobustError(f"no labels for the ImageNet images in {val}: put the devkit's meta.mat and {GROUND_TRUTH} "
                            f"in {imdir / DEVKIT / 'data'}/ ({DEVKIT}.tar.gz from {PAGE}), or a labels file "
                            f"({' or '.join(LABEL_FILES)}) in {imdir}/")
    labels = read_labels_file(labels_path)
    unlabelled = [e.name for _, e in files if Path(e.name).stem not in labels]
    if unlabelled:
        raise BnrobustError(f"ImageNet labels file {labels_path} has no label for {unlabelled[0]} "
                            f"({len(unlabelled)} images are unlabelled)")
    return [e.path for _, e in files], [labels[Path(e.name).stem] for _, e in files]


@functools.lru_cache(maxsize=2)
def list_validation_set(imdir: Path) -> tuple[tuple[str, ...], np.ndarray, str]:
    """(image paths, labels int64, layout name) of the validation set in `imdir`/val, sorted as
    torchvision lists them (by class, then file name; flat: by file name)."""
    val = imdir / "val"
    entries = _scandir(val)
    if any(e.is_dir() and WNID_NAME.match(e.name) for e in entries):
        paths, labels = _image_folder(val, entries)
        layout = "ImageFolder (val/<wnid>/)"
    else:
        paths, labels = _flat(imdir, val, entries)
        layout = "flat ILSVRC2012_val_*.JPEG"
    if not paths:
        raise BnrobustError(f"ImageNet folder {val} holds no images ({', '.join(IMG_EXTENSIONS)})")
    return tuple(paths), np.asarray(labels, dtype=np.int64), layout


# ---------------------------------------------------------------------------
# Decoding


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """Threads that decode images (Pillow releases the GIL while it decodes and resizes)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1), thread_name_prefix="bnrobust-jpeg")
        return _POOL


def _unreadable(path: str, e: BaseException) -> BnrobustError:
    text = str(e).strip().split("\n")[0].replace(f"'{path}'", "").replace(path, "").strip()[:120] or type(e).__name__
    return BnrobustError(f"cannot read ImageNet image {path} ({text}): replace it with the original file")


def load_image(path: str, resize: int, size: int) -> np.ndarray:
    """torchvision's evaluation transform up to ToTensor: RGB, Resize(resize) (short side, bilinear,
    long side int(resize * long / short)), CenterCrop(size) (offsets rounded as torchvision does);
    uint8 [size, size, 3]."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise _unreadable(path, e) from None
    w, h = im.size
    if w <= h:
        new_w, new_h = resize, int(resize * h / w)
    else:
        new_w, new_h = int(resize * w / h), resize
    if (new_w, new_h) != (w, h):
        im = im.resize((new_w, new_h), Image.Resampling.BILINEAR)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return np.array(im.crop((left, top, left + size, top + size)), dtype=np.uint8)


def _check_image(path: str) -> None:
    """Decode the whole file (at 1/8 scale, which still reads every coded block) or fail."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            im.draft("RGB", (1, 1))
            im.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise _unreadable(path, e) from None


def check_images(paths: list[str]) -> None:
    """One-line BnrobustError naming the first file (in list order) that does not decode."""
    for _ in _pool().map(_check_image, paths):
        pass


class DecodeJpegs:
    """A batch of file indices -> normalized float images [B, 3, size, size] on the indices'
    device, decoded from the files now (nothing is cached)."""

    def __init__(self, paths: tuple[str, ...], size: int = 224, resize: int = 256):
        self.paths, self.size, self.resize = paths, size, resize
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        dev = idx.device
        if len(idx) == 0:
            return torch.zeros(0, 3, self.size, self.size, device=dev)
        files = [self.paths[i] for i in idx.tolist()]
        arrays = list(_pool().map(lambda p: load_image(p, self.resize, self.size), files))
        x = torch.from_numpy(np.stack(arrays)).to(dev).permute(0, 3, 1, 2)
        x = DecodeImages.LUT.to(dev)[x.long()].contiguous()  # exact k / 255
        return (x - self.mean.to(dev)) / self.std.to(dev)

    def __repr__(self) -> str:
        return f"DecodeJpegs({len(self.paths)} files, resize {self.resize}, crop {self.size})"


@DATASETS.register("imagenet")
def imagenet(root: Path, seed: int, n_test: Optional[PosInt] = None,
             size: Annotated[int, Field(ge=16)] = 224, resize: Annotated[int, Field(ge=16)] = 256) -> Dataset:
    """The ILSVRC2012 validation set (1,000 classes in torchvision's order) with torchvision's
    evaluation transform (resize 256, centre crop 224, ImageNet mean/std), decoded batch by batch;
    a seeded random subset of n_test images (default: all). No training split."""
    if resize < size:
        raise BnrobustError(f"data.resize must be >= data.size (the crop), got resize {resize}, size {size}")
    imdir = imagenet_dir(Path(root))
    paths, labels, _ = list_validation_set(imdir)
    n = len(paths)
    if n_test is not None and n_test > n:
        raise BnrobustError(f"data.n_test must be at most {n} (the images in {imdir / 'val'}), got {n_test}")
    order = np.random.default_rng(seed).permutation(n)[:n_test]
    check_images([paths[i] for i in order])
    x = torch.from_numpy(order.astype(np.int64))
    y = torch.from_numpy(labels[order])
    return Dataset("imagenet-val", x[:0], y[:0], x, y, len(WNIDS), CLIP, decode=DecodeJpegs(paths, size, resize))
