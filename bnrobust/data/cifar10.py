"""CIFAR-10 (Krizhevsky, 2009) from its official files, md5-checked.

Two official distributions hold the same images in the same order, and a user may have either:
the python version (`<root>/cifar-10-batches-py/`, pickled dicts, what torchvision reads) or the
binary version (`<root>/cifar-10-batches-bin/`, fixed-size records). `load_cifar10_arrays` reads
whichever is there. Only loader functions live here: no dataset is registered yet.
"""
from __future__ import annotations

import functools
import hashlib
import io
import os
import pickle
import shutil
import tarfile
import tempfile
import warnings
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import BnrobustError
from .root import _download, _md5, download_allowed

CIFAR10_PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_TGZ_MD5 = "c58f30108f718f92721af3b95e74349a"
PY_DIR, BIN_DIR = "cifar-10-batches-py", "cifar-10-batches-bin"

# Official md5s of the python-version batches (cs.toronto.edu/~kriz/cifar.html; torchvision's CIFAR10).
CIFAR10_BATCHES = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
# Official md5s of the binary-version batches (what cifar-10-binary.tar.gz unpacks to).
CIFAR10_BIN_BATCHES = {
    "data_batch_1.bin": "5dd7e06a14cb22eb9f671a540d1b7c25",
    "data_batch_2.bin": "5ea93a67294ea407fff1d09f752e9692",
    "data_batch_3.bin": "942cd6a4bcdd0dd3c604fbe906cb4421",
    "data_batch_4.bin": "ae636b3ba5c66a11e91e8cb52e771fcb",
    "data_batch_5.bin": "53f37980c15c3d472c316c40844f3f0d",
    "test_batch.bin": "803d5f7f4d78ea53de84dbe85f74fb6d",
}
RECORD_BYTES = 1 + 3 * 32 * 32  # label byte, then 1,024 R, 1,024 G, 1,024 B bytes (row-major)
RECORDS_PER_FILE = 10000


def _where(root: Path) -> str:
    return (f"put data_batch_1..5 and test_batch in {root / PY_DIR}/ or data_batch_1..5.bin and "
            f"test_batch.bin in {root / BIN_DIR}/ (cifar-10-python.tar.gz or cifar-10-binary.tar.gz "
            f"from {CIFAR10_PAGE} unpack there), or point --data-dir / BNROBUST_DATA at a folder with them")


class _BatchUnpickler(pickle.Unpickler):
    """Unpickle only what a CIFAR batch holds (dicts, lists, bytes, numpy arrays): a pickle can
    run arbitrary code, and an unverified file may not be the official one."""
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            with warnings.catch_warnings():  # numpy 2 warns on the numpy.core names old pickles use
                warnings.simplefilter("ignore", DeprecationWarning)
                return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected object {module}.{name}")


def _read_cifar_batch(path: Path, verify: bool) -> tuple[np.ndarray, np.ndarray]:
    """One python-version batch: images uint8 [N, 32, 32, 3] (HWC), labels int64 [N]."""
    if not path.is_file():
        raise BnrobustError(f"CIFAR-10 file {path} is missing: extract cifar-10-python.tar.gz so that "
                            f"{path.parent}/ holds data_batch_1..5 and test_batch")
    raw = path.read_bytes()
    if verify and hashlib.md5(raw).hexdigest() != CIFAR10_BATCHES[path.name]:
        raise BnrobustError(f"CIFAR-10 file {path} is corrupt (md5 {hashlib.md5(raw).hexdigest()}, "
                            f"expected {CIFAR10_BATCHES[path.name]}): replace it with the official file")
    try:
        d = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
    except Exception as e:  # noqa: BLE001 - any failure here means "not a CIFAR batch"
        raise BnrobustError(f"CIFAR-10 file {path} is not a CIFAR-10 python batch ({str(e)[:120]})") from None
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (len(data),) or \
            (labels.size and not (0 <= labels.min() and labels.max() <= 9)):
        raise BnrobustError(f"CIFAR-10 file {path} holds data {list(data.shape)} and "
                            f"{list(labels.shape)} labels, expected [N, 3072] and N labels in 0..9")
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)), labels


def _read_cifar_bin(path: Path, verify: bool) -> tuple[np.ndarray, np.ndarray]:
    """One binary-version batch: records of 1 label byte + 3,072 pixel bytes (CHW planes), read
    as images uint8 [N, 32, 32, 3] (HWC) and labels int64 [N], like the python version. The size
    is checked before the md5 so that a truncated download says so; with verify=False any whole
    number of records is accepted (small files in tests)."""
    if not path.is_file():
        raise BnrobustError(f"CIFAR-10 file {path} is missing: extract cifar-10-binary.tar.gz so that "
                            f"{path.parent}/ holds data_batch_1..5.bin and test_batch.bin")
    raw = path.read_bytes()
    full = RECORDS_PER_FILE * RECORD_BYTES
    if verify and len(raw) != full:
        raise BnrobustError(f"CIFAR-10 file {path} has the wrong size ({len(raw):,} bytes, expected {full:,}: "
                            f"10,000 records of {RECORD_BYTES:,} bytes): it is truncated or not the official "
                            "file; replace it")
    if not raw or len(raw) % RECORD_BYTES:
        raise BnrobustError(f"CIFAR-10 file {path} has the wrong size ({len(raw):,} bytes, not a whole number "
                            f"of {RECORD_BYTES:,}-byte records): it is truncated or not a CIFAR-10 binary batch")
    if verify and hashlib.md5(raw).hexdigest() != CIFAR10_BIN_BATCHES[path.name]:
        raise BnrobustError(f"CIFAR-10 file {path} is corrupt (md5 {hashlib.md5(raw).hexdigest()}, "
                            f"expected {CIFAR10_BIN_BATCHES[path.name]}): replace it with the official file")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise BnrobustError(f"CIFAR-10 file {path} holds labels up to {labels.max()}, expected 0..9: "
                            "it is not a CIFAR-10 binary batch")
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _holds_any(folder: Path, names) -> bool:
    """A layout counts as present once its folder holds one of its batch files, so that a missing
    batch is reported by name while an empty leftover folder does not hide the other layout."""
    return folder.is_dir() and any((folder / n).exists() for n in names)


def cifar10_layout(root: Path) -> str | None:
    """Which official layout `load_cifar10_arrays` would read under `root`: "python" (preferred,
    as torchvision's), "binary", or None."""
    root = Path(root)
    if _holds_any(root / PY_DIR, CIFAR10_BATCHES):
        return "python"
    if _holds_any(root / BIN_DIR, CIFAR10_BIN_BATCHES):
        return "binary"
    return None


@functools.lru_cache(maxsize=2)  # a sweep reads (and md5-checks) the files once
def load_cifar10_arrays(root: Path, verify: bool = True, download: bool | None = None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train uint8 [50000, 32, 32, 3], y_train int64, x_test [10000, 32, 32, 3], y_test) in the
    official order, from `<root>/cifar-10-batches-py/` or else `<root>/cifar-10-batches-bin/`;
    md5-checked unless verify=False. With neither there, the python version is downloaded when
    allowed (`download`, default: download_allowed())."""
    root = Path(root)
    layout = cifar10_layout(root)
    if layout is None:
        if not (download_allowed() if download is None else download):
            raise BnrobustError(f"CIFAR-10 not found under {root}: {_where(root)}")
        download_cifar10(root)
        layout = "python"
    if layout == "python":
        folder, read, names = root / PY_DIR, _read_cifar_batch, list(CIFAR10_BATCHES)
    else:
        folder, read, names = root / BIN_DIR, _read_cifar_bin, list(CIFAR10_BIN_BATCHES)
    train = [read(folder / name, verify) for name in names[:5]]
    x_test, y_test = read(folder / names[5], verify)
    return (np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train]), x_test, y_test)


def download_cifar10(root: Path) -> Path:
    """Fetch the official python-version tarball (md5-checked) and unpack its batches into
    `<root>/cifar-10-batches-py/`; the tarball is deleted afterwards unless it was already there."""
    root = Path(root)
    tgz = root / "cifar-10-python.tar.gz"
    fetched = False
    if not (tgz.is_file() and _md5(tgz) == CIFAR10_TGZ_MD5):
        try:
            _download([CIFAR10_URL], tgz, CIFAR10_TGZ_MD5)
        except OSError as e:
            raise BnrobustError(f"CIFAR-10 not found under {root} and could not be downloaded "
                                f"({str(e)[:200]}): {_where(root)}") from None
        fetched = True
    folder = _extract_python_tarball(tgz, root)
    if fetched:
        tgz.unlink()
    return folder


def _extract_python_tarball(tgz: Path, root: Path) -> Path:
    """Unpack only regular files named cifar-10-batches-py/<known name>, to paths built here (so an
    archive cannot write outside the folder: no '..', absolute paths or links), into a temporary
    folder that is moved into place once complete (an interrupted run leaves nothing half-done)."""
    wanted = set(CIFAR10_BATCHES) | {"batches.meta", "readme.html"}
    dest = root / PY_DIR
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{PY_DIR}."))
    try:
        try:
            with tarfile.open(tgz, "r:gz") as tar:
                for member in tar:
                    parts = PurePosixPath(member.name).parts
                    if member.isfile() and len(parts) == 2 and parts[0] == PY_DIR and parts[1] in wanted:
                        with tar.extractfile(member) as src, open(tmp / parts[1], "wb") as out:
                            shutil.copyfileobj(src, out)
        except (OSError, tarfile.TarError, EOFError) as e:
            raise BnrobustError(f"cannot unpack {tgz} ({str(e)[:120]}): {_where(root)}") from None
        missing = [n for n in CIFAR10_BATCHES if not (tmp / n).is_file()]
        if missing:
            raise BnrobustError(f"{tgz} holds no {PY_DIR}/{missing[0]}: it is not the official archive")
        if not dest.exists():
            os.replace(tmp, dest)
        else:
            for f in tmp.iterdir():
                os.replace(f, dest / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
