"""The `svhn` dataset (bnrobust.data.svhn) on tiny files in the official cropped-digits format
(MATLAB v5, X uint8 [32, 32, 3, N], y [N, 1] with 10 for the digit 0), written by scipy.io.savemat:
reading and label mapping, md5 checks (once per process), missing files and the (offline)
download path, splits, decode and clip range."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from bnrobust.data import DATASETS, load_dataset
from bnrobust.data import svhn as svhn_mod
from bnrobust.data.cifar import StandardizeChannels
from bnrobust.data.svhn import CLIP, SVHN_FILES, load_svhn_arrays, read_svhn_mat
from bnrobust.errors import BnrobustError

N_TRAIN, N_TEST = 60, 20


@pytest.fixture(autouse=True)
def _fresh_cache():
    load_svhn_arrays.cache_clear()
    yield
    load_svhn_arrays.cache_clear()


def write_mat(path: Path, n: int, seed: int, y_dtype=np.uint8) -> tuple[np.ndarray, np.ndarray]:
    """One file as the official ones: X uint8 [32, 32, 3, n] (row, column, channel, image), y [n, 1]
    with digits 1..9 and 10 for 0 (every digit occurs). Returns (X, y) as written. The red channel
    is darker than the blue one, so per-channel statistics differ."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, n)).astype(np.float64)
    x[:, :, 0] *= 0.5
    x = x.astype(np.uint8)
    y = (np.arange(n) % 10 + 1).astype(y_dtype).reshape(n, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"X": x, "y": y}, format="5")
    return x, y


@pytest.fixture
def files(tmp_path, monkeypatch):
    """<tmp>/SVHN/{train,test}_32x32.mat made the 'official' files (their md5s patched in)."""
    d = tmp_path / "SVHN"
    tr = write_mat(d / "train_32x32.mat", N_TRAIN, 0)
    te = write_mat(d / "test_32x32.mat", N_TEST, 1)
    for name in SVHN_FILES:
        monkeypatch.setitem(SVHN_FILES, name, hashlib.md5((d / name).read_bytes()).hexdigest())
    return tmp_path, tr, te


def build(root, seed=0, **opts):
    return load_dataset({"name": "svhn", **opts}, seed=seed, root=root)


def one_line_error(fn, match: str) -> str:
    with pytest.raises(BnrobustError, match=match) as e:
        fn()
    assert "\n" not in str(e.value)
    return str(e.value)


def test_registered_with_documented_options_and_official_md5s():
    assert DATASETS.resolve("svhn") == {"name": "svhn", "n_train": None, "n_val": 5000, "n_test": None,
                                        "standardize": "train", "grayscale": False}
    assert SVHN_FILES == {"train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
                          "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3"}


@pytest.mark.parametrize("y_dtype", [np.uint8, np.float64])
def test_reads_the_official_layout_and_maps_label_10_to_0(tmp_path, y_dtype):
    x, y = write_mat(tmp_path / "t.mat", 12, 3, y_dtype)
    assert scipy.io.loadmat(str(tmp_path / "t.mat"))["X"].shape == (32, 32, 3, 12)  # the file is as official
    images, labels = read_svhn_mat(tmp_path / "t.mat")
    assert images.shape == (12, 32, 32, 3) and images.dtype == np.uint8 and images.flags.c_contiguous
    for i, r, c, ch in [(0, 0, 0, 0), (0, 0, 1, 0), (5, 7, 2, 1), (11, 31, 30, 2)]:
        assert images[i, r, c, ch] == x[r, c, ch, i]  # X(row, column, channel, image)
    assert not np.array_equal(images, x.transpose(3, 1, 0, 2))  # rows and columns are not swapped
    assert labels.dtype == np.int64 and labels.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]
    assert y[9, 0] == 10


def test_dataset_splits_storage_and_clip(files):
    root, (xtr, ytr), (xte, yte) = files
    ds = build(root, seed=3, n_val=10, n_train=40, n_test=15)
    perm = np.random.default_rng(3).permutation(N_TRAIN)
    va, tr = np.sort(perm[:10]), np.sort(perm[10:50])
    chw = lambda x, idx: torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)[idx]))  # noqa: E731
    assert ds.name == "svhn" and ds.num_classes == 10 and ds.clip == CLIP == (-1.0, 1.0)
    assert ds.x_train.dtype == torch.uint8 and tuple(ds.x_train.shape) == (40, 3, 32, 32)
    assert torch.equal(ds.x_train, chw(xtr, tr)) and torch.equal(ds.x_val, chw(xtr, va))
    assert torch.equal(ds.x_test, chw(xte, slice(0, 15)))  # the first n_test, in the file's order
    assert torch.equal(ds.y_train, torch.from_numpy(ytr[tr, 0].astype(np.int64) % 10))
    assert torch.equal(ds.y_test, torch.from_numpy(yte[:15, 0].astype(np.int64) % 10))
    assert ds.augment is None and ds.describe()["sizes"] == {"train": 40, "val": 10, "test": 15}
    full = build(root, seed=3, n_val=10)
    assert len(full.x_train) == 50 and len(full.x_test) == N_TEST
    assert not torch.equal(build(root, seed=4, n_val=10).x_val, full.x_val)  # seed-dependent split
    one_line_error(lambda: build(root, n_val=10, n_train=51), r"ask for 10 validation \+ 51 training images but "
                                                              r"the SVHN training files hold 60")
    one_line_error(lambda: build(root, n_val=10, n_test=21), r"data\.n_test must be at most 20 .*test_32x32\.mat.*got 21")
    one_line_error(lambda: build(root, standardize="gray"), r"^data\.standardize: Input should be 'train'")


def test_decode_modes(files):
    root, (xtr, _), _ = files
    ds = build(root, n_val=10)
    assert isinstance(ds.decode, StandardizeChannels) and "StandardizeChannels('train'" in ds.describe()["decode"]
    x = ds.inputs("train").double()
    assert torch.allclose(x.mean((0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(x.std((0, 2, 3), unbiased=False), torch.ones(3, dtype=torch.float64), atol=1e-6)
    assert ds.decode.mean[0] < 0.3 < 0.45 < ds.decode.mean[2]  # the channels differ
    full = build(root, n_val=10, standardize="full").decode
    allx = torch.from_numpy(xtr).double() / 255.0  # [32, 32, 3, N]
    assert np.allclose(full.mean, allx.mean((0, 1, 3)).numpy(), atol=1e-12)
    pm1 = build(root, n_val=10, standardize="pm1")
    assert pm1.decode.pixel(0).tolist() == [-1.0] * 3 and pm1.decode.pixel(255).tolist() == [1.0] * 3
    z = pm1.inputs("test")
    assert z.min() >= CLIP[0] and z.max() <= CLIP[1] and torch.equal(z, ((pm1.x_test.double() / 255 - 0.5) / 0.5).float())
    # per-channel standardization reaches beyond the clip range: attacks clip it to [-1, 1]
    assert float(ds.inputs("test").abs().max()) > 1.5


def test_md5_checked_once(files, monkeypatch):
    root, _, _ = files
    calls = []
    real = svhn_mod._md5
    monkeypatch.setattr(svhn_mod, "_md5", lambda p: calls.append(Path(p).name) or real(p))
    build(root, n_val=10)
    build(root, seed=1, n_val=5, standardize="full")
    assert sorted(calls) == ["test_32x32.mat", "train_32x32.mat"]


def test_corrupt_file_is_one_line_with_the_download_command(files, monkeypatch):
    root, _, _ = files
    monkeypatch.setitem(SVHN_FILES, "test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3")  # the real md5
    path = root / "SVHN" / "test_32x32.mat"
    msg = one_line_error(lambda: build(root), r"SVHN file .*test_32x32\.mat is corrupt \(md5 [0-9a-f]{32}, "
                                              r"expected eb5a983be6a315427106f1b164d9cef3\)")
    assert f"curl -L -o {path} http://ufldl.stanford.edu/housenumbers/test_32x32.mat" in msg


def test_missing_file_offline_and_download(tmp_path, monkeypatch):
    msg = one_line_error(lambda: build(tmp_path), r"SVHN file .*SVHN/train_32x32\.mat is missing")
    assert f"curl -L -o {tmp_path / 'SVHN' / 'train_32x32.mat'} http://ufldl.stanford.edu/housenumbers/" \
           f"train_32x32.mat" in msg
    # allowed to download: each file is fetched from the official URL into <root>/SVHN/, md5-checked there
    src = tmp_path / "server"
    write_mat(src / "train_32x32.mat", N_TRAIN, 0)
    write_mat(src / "test_32x32.mat", N_TEST, 1)
    for name in SVHN_FILES:
        monkeypatch.setitem(SVHN_FILES, name, hashlib.md5((src / name).read_bytes()).hexdigest())
    calls = []

    def fake_download(urls, dest, md5, timeout=20.0):
        calls.append((urls, dest, md5))
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes((src / dest.name).read_bytes())
    monkeypatch.setattr(svhn_mod, "_download", fake_download)
    root = tmp_path / "data"
    xtr, ytr, xte, yte = load_svhn_arrays(root, download=True)
    assert [c[0] for c in calls] == [["http://ufldl.stanford.edu/housenumbers/train_32x32.mat"],
                                     ["http://ufldl.stanford.edu/housenumbers/test_32x32.mat"]]
    assert [c[1] for c in calls] == [root / "SVHN" / "train_32x32.mat", root / "SVHN" / "test_32x32.mat"]
    assert [c[2] for c in calls] == [SVHN_FILES["train_32x32.mat"], SVHN_FILES["test_32x32.mat"]]
    assert xtr.shape == (N_TRAIN, 32, 32, 3) and xte.shape == (N_TEST, 32, 32, 3)

    def failing(urls, dest, md5, timeout=20.0):
        raise OSError("no network")
    monkeypatch.setattr(svhn_mod, "_download", failing)
    one_line_error(lambda: load_svhn_arrays(tmp_path / "other", download=True),
                   r"train_32x32\.mat is missing and could not be downloaded \(no network\): download it with `curl")


def test_torchvision_layout_files_directly_in_the_root(tmp_path):
    write_mat(tmp_path / "train_32x32.mat", N_TRAIN, 0)
    write_mat(tmp_path / "test_32x32.mat", N_TEST, 1)
    xtr, _, xte, _ = load_svhn_arrays(tmp_path, verify=False)
    assert len(xtr) == N_TRAIN and len(xte) == N_TEST


def test_damaged_files_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.mat"
    bad.write_bytes(b"MATLAB 5.0 MAT-file, garbage")
    one_line_error(lambda: read_svhn_mat(bad), r"bad\.mat is not a MATLAB file")
    scipy.io.savemat(str(bad), {"images": np.zeros((32, 32, 3, 2), np.uint8)})
    one_line_error(lambda: read_svhn_mat(bad), r"holds no X and y variables")
    scipy.io.savemat(str(bad), {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[0], [3]], np.uint8)})
    one_line_error(lambda: read_svhn_mat(bad), r"labels outside 1\.\.10 \(10 = digit 0\)")
    scipy.io.savemat(str(bad), {"X": np.zeros((28, 28, 3, 2), np.uint8), "y": np.array([[1], [3]], np.uint8)})
    one_line_error(lambda: read_svhn_mat(bad), r"holds X uint8 \[28, 28, 3, 2\] .*expected X uint8 \[32, 32, 3, N\]")


def test_unit_scale_and_grayscale_for_the_appendix_j2_cnn(files):
    root, (xtr, _), (xte, _) = files
    ds = build(root, n_val=0, standardize="unit", grayscale=True)
    assert ds.input_shape == (1, 32, 32) and ds.clip == (0.0, 1.0)
    rgb = torch.from_numpy(xte).double().permute(3, 2, 0, 1)  # [N, 3, 32, 32]
    luma = (0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]).round()
    assert (ds.x_test[:, 0].double() - luma).abs().max() <= 1  # float32 vs float64 rounding at .5
    x = ds.inputs("test")
    assert torch.equal(x, (ds.x_test.double() / 255).float()) and x.min() >= 0 and x.max() <= 1
    assert build(root, n_val=0, standardize="unit").input_shape == (3, 32, 32)
