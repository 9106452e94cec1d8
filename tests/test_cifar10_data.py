"""CIFAR-10 reader (bnrobust.data.cifar10): both official layouts on small synthetic files written
in the exact official formats, their errors, the (offline) download path, and the real binary
files when ../shared/data holds them."""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from bnrobust import corruptions
from bnrobust.data import cifar10
from bnrobust.data.cifar10 import CIFAR10_BIN_BATCHES, cifar10_layout, load_cifar10_arrays
from bnrobust.errors import BnrobustError

REPO = Path(__file__).resolve().parents[1]
NAMES = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]


@pytest.fixture(autouse=True)
def _fresh_cache():
    """load_cifar10_arrays caches by (root, verify, download); these tests rewrite files in place."""
    load_cifar10_arrays.cache_clear()
    yield
    load_cifar10_arrays.cache_clear()


def synthetic_batches(n: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Six (images uint8 [n, 32, 32, 3] HWC, labels) batches; the test batch is smaller so the
    splits cannot be mixed up."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 256, (m, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, m))
            for m in [n] * 5 + [n - 2]]


def write_bin(root: Path, batches) -> Path:
    """cifar-10-batches-bin as the official files: per image 1 label byte, then the 1,024 R, the
    1,024 G and the 1,024 B bytes, each plane row-major."""
    d = root / "cifar-10-batches-bin"
    d.mkdir(parents=True)
    for name, (x, y) in zip(NAMES, batches):
        out = bytearray()
        for img, label in zip(x, y):
            out.append(int(label))
            for ch in range(3):
                out += img[:, :, ch].tobytes()  # C order: row by row
        (d / f"{name}.bin").write_bytes(bytes(out))
    return d


def write_pickles(root: Path, batches) -> Path:
    """cifar-10-batches-py as the official files: dicts with bytes keys, data uint8 [N, 3072] CHW."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for name, (x, y) in zip(NAMES, batches):
        blob = {b"batch_label": name.encode(), b"labels": [int(v) for v in y],
                b"data": x.transpose(0, 3, 1, 2).reshape(len(x), 3072), b"filenames": [b"x.png"] * len(x)}
        (d / name).write_bytes(pickle.dumps(blob, protocol=2))
    return d


def official_md5s(monkeypatch, d: Path) -> None:
    """Make the synthetic binary files the 'official' ones, so verify=True runs every check."""
    monkeypatch.setattr(cifar10, "RECORDS_PER_FILE", 5)
    for name in CIFAR10_BIN_BATCHES:
        size = len((d / name).read_bytes()) // cifar10.RECORD_BYTES
        if name == "test_batch.bin":  # the test batch has 3 records: pad it to 5 for this check
            (d / name).write_bytes((d / name).read_bytes() + bytes(cifar10.RECORD_BYTES * (5 - size)))
        monkeypatch.setitem(CIFAR10_BIN_BATCHES, name, hashlib.md5((d / name).read_bytes()).hexdigest())


def one_line_error(fn, match: str) -> str:
    with pytest.raises(BnrobustError, match=match) as e:
        fn()
    assert "\n" not in str(e.value)
    return str(e.value)


# ---------------------------------------------------------------------------
# Binary layout


def test_binary_record_layout(tmp_path):
    """A byte at offset 1 + ch * 1024 + row * 32 + col of a record is pixel (row, col) of channel ch."""
    batches = synthetic_batches()
    d = write_bin(tmp_path, batches)
    raw = (d / "test_batch.bin").read_bytes()
    assert len(raw) == 3 * 3073
    xtr, ytr, xte, yte = load_cifar10_arrays(tmp_path, verify=False)
    assert xtr.shape == (25, 32, 32, 3) and xte.shape == (3, 32, 32, 3)
    assert xtr.dtype == xte.dtype == np.uint8 and ytr.dtype == yte.dtype == np.int64
    for i, (row, col, ch) in enumerate([(0, 0, 0), (0, 1, 0), (5, 7, 1), (31, 31, 2)]):
        rec = i % 3
        assert xte[rec, row, col, ch] == raw[rec * 3073 + 1 + ch * 1024 + row * 32 + col]
        assert yte[rec] == raw[rec * 3073]
    assert np.array_equal(xtr, np.concatenate([b[0] for b in batches[:5]]))  # official order
    assert np.array_equal(ytr, np.concatenate([b[1] for b in batches[:5]]))
    assert np.array_equal(xte, batches[5][0]) and np.array_equal(yte, batches[5][1])


def test_pickle_and_binary_layouts_agree(tmp_path):
    batches = synthetic_batches(seed=1)
    write_pickles(tmp_path / "py", batches)
    write_bin(tmp_path / "bin", batches)
    assert cifar10_layout(tmp_path / "py") == "python" and cifar10_layout(tmp_path / "bin") == "binary"
    a = load_cifar10_arrays(tmp_path / "py", verify=False)
    b = load_cifar10_arrays(tmp_path / "bin", verify=False)
    for u, v in zip(a, b):
        assert u.dtype == v.dtype and u.shape == v.shape and np.array_equal(u, v)
    # both layouts in one root: the python version is read (as torchvision would)
    write_pickles(tmp_path / "both", batches)
    write_bin(tmp_path / "both", synthetic_batches(seed=2))
    assert cifar10_layout(tmp_path / "both") == "python"
    assert np.array_equal(load_cifar10_arrays(tmp_path / "both", verify=False)[0], a[0])
    # an empty leftover pickle folder does not hide the binary files
    (tmp_path / "bin" / "cifar-10-batches-py").mkdir()
    assert cifar10_layout(tmp_path / "bin") == "binary"


def test_corruptions_reexports_the_reader():
    assert corruptions.load_cifar10_arrays is load_cifar10_arrays
    assert "load_cifar10_arrays" in corruptions.__all__


def test_truncated_binary_file_is_named(tmp_path):
    d = write_bin(tmp_path, synthetic_batches())
    raw = (d / "data_batch_3.bin").read_bytes()
    (d / "data_batch_3.bin").write_bytes(raw[:-100])
    one_line_error(lambda: load_cifar10_arrays(tmp_path, verify=False),
                   r"data_batch_3\.bin has the wrong size \(15,265 bytes, not a whole number of 3,073-byte")
    # verified: anything but 10,000 records is the wrong size, before any md5 is computed
    (d / "data_batch_3.bin").write_bytes(raw)
    msg = one_line_error(lambda: load_cifar10_arrays(tmp_path, verify=True),
                         r"data_batch_1\.bin has the wrong size \(15,365 bytes, expected 30,730,000")
    assert "truncated" in msg
    (d / "data_batch_3.bin").write_bytes(b"")
    one_line_error(lambda: load_cifar10_arrays(tmp_path, verify=False), r"data_batch_3\.bin has the wrong size")


def test_corrupt_binary_md5(tmp_path, monkeypatch):
    d = write_bin(tmp_path, synthetic_batches())
    official_md5s(monkeypatch, d)
    xtr, ytr, xte, yte = load_cifar10_arrays(tmp_path)  # verify=True: sizes and md5s match
    assert xtr.shape == (25, 32, 32, 3) and xte.shape == (5, 32, 32, 3)
    raw = bytearray((d / "data_batch_4.bin").read_bytes())
    raw[2000] ^= 0xFF  # one pixel flipped: same size, other md5
    (d / "data_batch_4.bin").write_bytes(bytes(raw))
    load_cifar10_arrays.cache_clear()
    msg = one_line_error(lambda: load_cifar10_arrays(tmp_path), r"data_batch_4\.bin is corrupt \(md5 [0-9a-f]{32}")
    assert CIFAR10_BIN_BATCHES["data_batch_4.bin"] in msg
    assert len(load_cifar10_arrays(tmp_path, verify=False)[0]) == 25  # verify=False skips the md5


def test_official_binary_md5s():
    """The published values, as in ../shared/data/cifar-10-batches-bin/MD5SUMS."""
    assert CIFAR10_BIN_BATCHES["data_batch_1.bin"] == "5dd7e06a14cb22eb9f671a540d1b7c25"
    assert CIFAR10_BIN_BATCHES["test_batch.bin"] == "803d5f7f4d78ea53de84dbe85f74fb6d"
    assert list(CIFAR10_BIN_BATCHES) == [n + ".bin" for n in NAMES]


def test_missing_or_bad_binary_file(tmp_path):
    d = write_bin(tmp_path, synthetic_batches())
    (d / "test_batch.bin").unlink()
    one_line_error(lambda: load_cifar10_arrays(tmp_path, verify=False),
                   r"test_batch\.bin is missing: extract cifar-10-binary\.tar\.gz")
    write_bin(tmp_path / "b", synthetic_batches())
    raw = bytearray((tmp_path / "b" / "cifar-10-batches-bin" / "data_batch_2.bin").read_bytes())
    raw[3073] = 10  # the second record's label byte
    (tmp_path / "b" / "cifar-10-batches-bin" / "data_batch_2.bin").write_bytes(bytes(raw))
    one_line_error(lambda: load_cifar10_arrays(tmp_path / "b", verify=False),
                   r"data_batch_2\.bin holds labels up to 10, expected 0\.\.9")


def test_neither_layout_says_where_to_put_the_files(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("tests never download")
    monkeypatch.setattr(cifar10, "_download", no_network)
    (tmp_path / "cifar-10-batches-py").mkdir()  # an empty folder is not a layout
    msg = one_line_error(lambda: load_cifar10_arrays(tmp_path), "CIFAR-10 not found under")
    for part in (str(tmp_path / "cifar-10-batches-py"), str(tmp_path / "cifar-10-batches-bin"),
                 "data_batch_1..5.bin", "cifar-10-python.tar.gz", "cifar-10-binary.tar.gz",
                 "https://www.cs.toronto.edu/~kriz/cifar.html"):
        assert part in msg, part
    assert os.environ["BNROBUST_NO_DOWNLOAD"] == "1"  # conftest: download_allowed() is False
    one_line_error(lambda: load_cifar10_arrays(tmp_path, download=False), "CIFAR-10 not found under")


# ---------------------------------------------------------------------------
# Download path, offline: `_download` replaced by a copy of a local archive


def python_tarball(batches, extra: list[tarfile.TarInfo] = (), skip: str | None = None) -> bytes:
    src = io.BytesIO()
    with tarfile.open(fileobj=src, mode="w:gz") as tar:
        for name, (x, y) in zip(NAMES, batches):
            if name == skip:
                continue
            blob = pickle.dumps({b"labels": [int(v) for v in y],
                                 b"data": x.transpose(0, 3, 1, 2).reshape(len(x), 3072)}, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        for info in extra:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return src.getvalue()


def hostile_members() -> list[tarfile.TarInfo]:
    out = []
    for name in ("../escaped", "/tmp/bnrobust-absolute-escape", "cifar-10-batches-py/../../escaped2",
                 "cifar-10-batches-py/extra_file"):
        info = tarfile.TarInfo(name)
        info.size = 1
        out.append(info)
    link = tarfile.TarInfo("cifar-10-batches-py/readme.html")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    out.append(link)
    return out


def fake_download(blob: bytes, calls: list):
    def download(urls, dest, md5, timeout=20.0):
        calls.append((urls, md5))
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(blob)
    return download


def test_download_path_unpacks_only_the_batches(tmp_path, monkeypatch):
    batches = synthetic_batches(seed=3)
    calls = []
    monkeypatch.setattr(cifar10, "_download", fake_download(python_tarball(batches, hostile_members()), calls))
    root = tmp_path / "data" / "root"
    got = load_cifar10_arrays(root, verify=False, download=True)
    assert calls == [([cifar10.CIFAR10_URL], "c58f30108f718f92721af3b95e74349a")]
    assert cifar10.CIFAR10_URL == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    write_bin(tmp_path / "ref", batches)
    for u, v in zip(got, load_cifar10_arrays(tmp_path / "ref", verify=False)):
        assert np.array_equal(u, v)
    assert sorted(p.name for p in (root / "cifar-10-batches-py").iterdir()) == sorted(NAMES)
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py"]  # tarball and temp folder gone
    assert not (tmp_path / "data" / "escaped").exists() and not (root / "escaped2").exists()
    assert not Path("/tmp/bnrobust-absolute-escape").exists()


def test_download_of_an_incomplete_archive_fails_cleanly(tmp_path, monkeypatch):
    blob = python_tarball(synthetic_batches(), skip="data_batch_2")
    monkeypatch.setattr(cifar10, "_download", fake_download(blob, []))
    one_line_error(lambda: load_cifar10_arrays(tmp_path, verify=False, download=True),
                   r"holds no cifar-10-batches-py/data_batch_2: it is not the official archive")
    assert not (tmp_path / "cifar-10-batches-py").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["cifar-10-python.tar.gz"]

    def offline(urls, dest, md5, timeout=20.0):
        raise OSError("network is unreachable")
    monkeypatch.setattr(cifar10, "_download", offline)
    (tmp_path / "cifar-10-python.tar.gz").unlink()
    msg = one_line_error(lambda: load_cifar10_arrays(tmp_path, download=True), "could not be downloaded")
    assert "network is unreachable" in msg and "cifar-10-binary.tar.gz" in msg


# ---------------------------------------------------------------------------
# The real files


def _find_cifar_bin() -> Path | None:
    for cand in (os.environ.get("BNROBUST_DATA"), REPO.parent / "shared" / "data"):
        if cand and (Path(cand) / "cifar-10-batches-bin" / "test_batch.bin").exists():
            return Path(cand)
    return None


def test_real_binary_cifar10(tmp_path):
    root = _find_cifar_bin()
    if root is None:
        pytest.skip("real CIFAR-10 (binary version) not found: set BNROBUST_DATA or put "
                    "../shared/data/cifar-10-batches-bin beside the repo")
    # a root holding only the binary folder, so the python version cannot be read instead
    (tmp_path / "cifar-10-batches-bin").symlink_to(root / "cifar-10-batches-bin", target_is_directory=True)
    xtr, ytr, xte, yte = load_cifar10_arrays(tmp_path, verify=True)
    assert xtr.shape == (50000, 32, 32, 3) and xte.shape == (10000, 32, 32, 3)
    assert xtr.dtype == xte.dtype == np.uint8 and ytr.shape == (50000,) and yte.shape == (10000,)
    assert np.bincount(ytr, minlength=10).tolist() == [5000] * 10
    assert np.bincount(yte, minlength=10).tolist() == [1000] * 10
    # the first images of each split: a frog and a cat, top-left pixel as in every CIFAR-10 copy
    assert ytr[0] == 6 and xtr[0, 0, 0].tolist() == [59, 62, 63]
    assert yte[0] == 3 and xte[0, 0, 0].tolist() == [158, 112, 49]
