import gzip
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from bnrobust.data import mnist as mnist_data, root, synthetic, transforms
from bnrobust.errors import BnrobustError


def write_idx(path: Path, arr: np.ndarray) -> None:
    """Write an array in the official IDX format (big-endian header, gzipped)."""
    code = {np.uint8: 0x08, np.int32: 0x0C}[arr.dtype.type]
    header = bytes([0, 0, code, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(arr.dtype.newbyteorder(">")).tobytes())


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("BNROBUST_DATA", str(tmp_path / "env"))
    assert root.data_root(tmp_path / "arg") == tmp_path / "arg"
    assert root.data_root() == tmp_path / "env"
    monkeypatch.delenv("BNROBUST_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert root.data_root() == tmp_path / "cache" / "bnrobust"


def test_read_idx_roundtrip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", arr)
    np.testing.assert_array_equal(mnist_data.read_idx(tmp_path / "a.gz"), arr)
    labels = np.array([5, -3, 7], dtype=np.int32)
    write_idx(tmp_path / "b.gz", labels)
    np.testing.assert_array_equal(mnist_data.read_idx(tmp_path / "b.gz"), labels)


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x01\x02\x08\x01" + b"\0" * 8))
    with pytest.raises(BnrobustError, match="bad magic"):
        mnist_data.read_idx(tmp_path / "bad.gz")
    arr = np.zeros((4, 5), dtype=np.uint8)
    write_idx(tmp_path / "t.gz", arr)
    raw = gzip.decompress((tmp_path / "t.gz").read_bytes())[:-3]  # truncated payload
    (tmp_path / "t.gz").write_bytes(gzip.compress(raw))
    with pytest.raises(BnrobustError, match="holds"):
        mnist_data.read_idx(tmp_path / "t.gz")
    (tmp_path / "notgz.gz").write_bytes(b"this is not gzip")
    with pytest.raises(BnrobustError, match="cannot read"):
        mnist_data.read_idx(tmp_path / "notgz.gz")


def test_missing_mnist_is_one_clear_error(tmp_path):
    with pytest.raises(BnrobustError) as e:
        mnist_data.mnist_files(tmp_path, download=False)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "MNIST" / "raw") in msg


def test_corrupt_mnist_detected_by_md5(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in mnist_data.MNIST_FILES:
        (raw / name).write_bytes(b"not mnist")
    with pytest.raises(BnrobustError, match="corrupt"):
        mnist_data.mnist_files(tmp_path, download=False)


def test_download_verifies_md5_and_writes_atomically(tmp_path, monkeypatch):
    payload = b"pretend mnist"
    good = hashlib.md5(payload).hexdigest()
    calls = []

    def fake_urlopen(url, timeout):
        calls.append(url)
        if "bad-mirror" in url:
            return io.BytesIO(b"garbage")
        return io.BytesIO(payload)

    monkeypatch.setattr(root.urllib.request, "urlopen", fake_urlopen)
    dest = tmp_path / "raw" / "f.gz"
    root._download(["http://bad-mirror/f.gz", "http://good/f.gz"], dest, good)
    assert dest.read_bytes() == payload and len(calls) == 2
    dest2 = tmp_path / "raw" / "g.gz"
    with pytest.raises(OSError, match="md5"):
        root._download(["http://bad-mirror/g.gz"], dest2, good)
    assert not dest2.exists() and list(dest2.parent.glob(".g.gz*")) == []


def test_offline_download_failure_says_where_to_put_files(tmp_path, monkeypatch):
    def no_net(url, timeout):
        raise OSError("network unreachable")
    monkeypatch.setattr(root.urllib.request, "urlopen", no_net)
    with pytest.raises(BnrobustError, match="could not be downloaded.*put the four"):
        mnist_data.mnist_files(tmp_path, download=True)


def test_gaussian_2d_matches_its_parameters():
    ds = synthetic.gaussian_2d(Path("."), seed=1, n_train=20000, n_test=10)
    x, y = ds.x_train.double(), ds.y_train
    assert abs(y.float().mean() - 0.5) < 0.02
    for k, mean in ((0, [-5.0, 0.0]), (1, [5.0, 0.0])):
        xs = x[y == k]
        assert torch.allclose(xs.mean(0), torch.tensor(mean, dtype=torch.float64), atol=0.03)
        assert torch.allclose(torch.cov(xs.T), torch.tensor([[1.0, 0.05], [0.05, 0.01]], dtype=torch.float64),
                              atol=0.03)
    with pytest.raises(BnrobustError, match="positive definite"):
        synthetic.gaussian_2d(Path("."), seed=0, cov=[[1, 2], [2, 1]])


def test_preprocess_modes():
    g = torch.Generator().manual_seed(0)
    # images are stored as uint8 and decoded (to [0, 1], then preprocessed) batch by batch
    xtr = torch.randint(0, 256, (100, 50), generator=g, dtype=torch.uint8)
    xte = torch.randint(0, 256, (10, 50), generator=g, dtype=torch.uint8)
    dec, clip = transforms.DecodeImages.fit("pixel-std", xtr)
    a, b = dec(xtr), dec(xte)
    assert torch.allclose(a.mean(0), torch.zeros(50), atol=1e-5) and torch.allclose(a.std(0), torch.ones(50), atol=1e-4)
    dec, clip = transforms.DecodeImages.fit("image-std", xtr)
    a, b = dec(xtr), dec(xte)
    assert torch.allclose(b.mean(1), torch.zeros(10), atol=1e-5)
    assert torch.allclose(b.std(1, unbiased=False), torch.ones(10), atol=1e-4)
    with pytest.raises(BnrobustError, match="unknown preprocessing"):
        transforms.DecodeImages.fit("zca", xtr)


def test_real_mnist(mnist_root):
    xtr, ytr, xte, yte = mnist_data.load_mnist_arrays(mnist_root)
    assert xtr.shape == (60000, 28, 28) and xte.shape == (10000, 28, 28) and xtr.dtype == np.uint8
    assert np.bincount(ytr).tolist()[3] == 6131 and np.bincount(yte).tolist()[7] == 1028


def test_loading_mnist_warns_nothing(mnist_root):
    """The datasets share the cached (read-only) arrays without torch's non-writable warning."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        full = mnist_data.mnist(mnist_root, seed=0, size=56)
        mnist_data.mnist_binary(mnist_root, seed=0)
    assert full.x_train.shape == (60000, 1, 28, 28)


def test_mnist_binary_subset_is_uniform_and_seeded(mnist_root):
    a = mnist_data.mnist_binary(mnist_root, seed=0)
    b = mnist_data.mnist_binary(mnist_root, seed=0)
    c = mnist_data.mnist_binary(mnist_root, seed=1)
    assert a.x_train.shape == (5000, 784) and a.y_train.sum() == 2500
    assert len(a.x_test) == 1010 + 1028 and a.clip == (0.0, 1.0)
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)
    x = a.inputs("train")  # stored as uint8, decoded to [0, 1]
    assert x.shape == (5000, 784) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    with pytest.raises(BnrobustError, match="n_per_class"):
        mnist_data.mnist_binary(mnist_root, seed=0, n_per_class=100000)
