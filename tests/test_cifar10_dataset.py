"""The `cifar10` dataset (bnrobust.data.cifar) on small synthetic files in the official binary format:
splits and seeding, size errors, per-channel standardization, crop+flip augmentation, the run-record
fingerprint, CIFAR-10.1 v6 loading; and a 1,000-image subset of the real files when present."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from bnrobust.data import DATASETS, load_dataset
from bnrobust.data import cifar, cifar10
from bnrobust.data.cifar import (CIFAR101_FILES, CLIP, KUANGLIU_MEAN, KUANGLIU_STD, Cifar101NotFound, CropFlip,
                                 StandardizeChannels, load_cifar101, split_indices, with_cifar101_test)
from bnrobust.errors import BnrobustError

REPO = Path(__file__).resolve().parents[1]
NAMES = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
PER_FILE, N_TEST = 40, 30


def write_bin(root: Path, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """cifar-10-batches-bin as the official files (per record: label byte, then the R, G, B planes,
    row-major): 5 x 40 training and 30 test images; returns the arrays (HWC) that were written.
    The red channel is darker on average than blue, so channel statistics differ."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-bin"
    d.mkdir(parents=True)
    xs, ys = [], []
    for name in NAMES:
        m = N_TEST if name == "test_batch" else PER_FILE
        x = rng.integers(0, 256, (m, 32, 32, 3)).astype(np.float64)
        x[..., 0] *= 0.6  # R in 0..153, G uniform, B biased to bright
        x[..., 2] = 255 - (255 - x[..., 2]) * 0.5
        x = x.astype(np.uint8)
        y = rng.integers(0, 10, m).astype(np.uint8)
        rec = np.concatenate([y[:, None], x.transpose(0, 3, 1, 2).reshape(m, 3072)], axis=1)
        (d / f"{name}.bin").write_bytes(rec.tobytes())
        xs.append(x), ys.append(y.astype(np.int64))
    return np.concatenate(xs[:5]), np.concatenate(ys[:5]), xs[5], ys[5]


@pytest.fixture
def synth(tmp_path, monkeypatch):
    """A data root with synthetic CIFAR-10 files; the dataset reads them without md5 checks."""
    cifar10.load_cifar10_arrays.cache_clear()
    monkeypatch.setattr(cifar, "load_cifar10_arrays", lambda root: cifar10.load_cifar10_arrays(root, verify=False))
    arrays = write_bin(tmp_path)
    yield tmp_path, arrays
    cifar10.load_cifar10_arrays.cache_clear()


def build(root, seed=0, **opts):
    return load_dataset({"name": "cifar10", **opts}, seed=seed, root=root)


def one_line_error(fn, match: str, cls=BnrobustError) -> str:
    with pytest.raises(cls, match=match) as e:
        fn()
    assert "\n" not in str(e.value)
    return str(e.value)


def chw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


# ---------------------------------------------------------------------------
# Splits


def test_registered_with_documented_options():
    assert "cifar10" in DATASETS
    assert DATASETS.resolve("cifar10") == {"name": "cifar10", "n_train": None, "n_val": 5000, "n_test": None,
                                           "standardize": "train", "augment": True}


def test_splits_follow_the_documented_permutation(synth):
    root, (xtr, ytr, xte, yte) = synth
    ds = build(root, seed=3, n_val=20, n_train=50, n_test=10)
    perm = np.random.default_rng(3).permutation(200)
    va, tr = np.sort(perm[:20]), np.sort(perm[20:70])
    assert ds.x_train.dtype == torch.uint8 and tuple(ds.x_train.shape) == (50, 3, 32, 32)
    assert torch.equal(ds.x_train, chw(xtr[tr])) and torch.equal(ds.y_train, torch.from_numpy(ytr[tr]))
    assert torch.equal(ds.x_val, chw(xtr[va])) and torch.equal(ds.y_val, torch.from_numpy(ytr[va]))
    assert torch.equal(ds.x_test, chw(xte[:10])) and torch.equal(ds.y_test, torch.from_numpy(yte[:10]))  # first N
    assert ds.y_train.dtype == torch.int64 and ds.num_classes == 10 and ds.clip == CLIP == (-2.0, 2.0)
    # all the rest for training by default; validation disjoint from training; whole test set
    ds = build(root, seed=3, n_val=20)
    got_tr, got_va = split_indices(200, 3, None, 20)
    assert len(ds.x_train) == 180 and len(ds.x_val) == 20 and len(ds.x_test) == N_TEST
    assert not set(got_tr) & set(got_va) and sorted(set(got_tr) | set(got_va)) == list(range(200))
    assert torch.equal(ds.x_val, chw(xtr[va]))


def test_seeding(synth):
    root, _ = synth
    a, b, c = build(root, seed=1, n_val=20, n_train=60), build(root, seed=1, n_val=20, n_train=60), \
        build(root, seed=2, n_val=20, n_train=60)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_val, b.x_val)
    assert not torch.equal(a.x_val, c.x_val) and not torch.equal(a.x_train, c.x_train)
    assert a.describe() == b.describe() and a.describe()["sha256"] != c.describe()["sha256"]


def test_no_validation_split(synth):
    root, (xtr, _, _, _) = synth
    ds = build(root, n_val=0)
    assert ds.x_val is None and ds.y_val is None and torch.equal(ds.x_train, chw(xtr))  # official order
    one_line_error(lambda: ds.split("val"), "has no val split")
    assert ds.describe()["sizes"] == {"train": 200, "val": None, "test": N_TEST}


def test_too_large_sizes_are_one_line_errors(synth):
    root, _ = synth
    msg = one_line_error(lambda: build(root, n_val=20, n_train=181), r"data\.n_train \+ data\.n_val ask for 20")
    assert "181 training" in msg and "hold 200" in msg
    one_line_error(lambda: build(root, n_val=200), r"hold 200 \(and at least one must be left for training\)")
    one_line_error(lambda: build(root, n_val=0, n_test=31), r"data\.n_test must be at most 30 .*got 31")
    one_line_error(lambda: build(root, n_val=-1), r"^data\.n_val: Input should be greater than or equal to 0")
    one_line_error(lambda: build(root, n_train=0), r"^data\.n_train: Input should be greater than or equal to 1")
    one_line_error(lambda: build(root, standardize="pixel"), r"^data\.standardize: Input should be 'train'")


# ---------------------------------------------------------------------------
# Decode


def test_decode_standardizes_the_training_images(synth):
    root, (xtr, _, _, _) = synth
    ds = build(root, n_val=20, augment=False)
    x = ds.inputs("train").double()
    assert x.dtype == torch.float64 and x.shape == (180, 3, 32, 32)
    assert torch.allclose(x.mean((0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(x.std((0, 2, 3), unbiased=False), torch.ones(3, dtype=torch.float64), atol=1e-6)
    # the channels really differ, and the table is the float64 result rounded once
    dec = ds.decode
    assert isinstance(dec, StandardizeChannels) and dec.mean[0] < 0.35 < 0.5 < dec.mean[2]
    raw = ds.x_train[:7]
    exact = (raw.double() / 255.0 - torch.tensor(dec.mean, dtype=torch.float64).view(1, 3, 1, 1)) / \
        torch.tensor(dec.std, dtype=torch.float64).view(1, 3, 1, 1)
    assert torch.equal(dec(raw), exact.float()) and dec(raw).dtype == torch.float32
    assert torch.equal(dec.pixel(0), exact.new_tensor([-m / s for m, s in zip(dec.mean, dec.std)]).float())
    one_line_error(lambda: dec(raw.float()), r"standardization needs uint8 images \[N, 3, H, W\], got torch\.float32")
    assert "StandardizeChannels('train'" in ds.describe()["decode"]


def test_standardize_modes(synth):
    root, (xtr, _, _, _) = synth
    full = build(root, n_val=20, standardize="full").decode
    allx = torch.from_numpy(xtr).double() / 255.0
    assert np.allclose(full.mean, allx.mean((0, 1, 2)).numpy(), atol=1e-12)
    assert np.allclose(full.std, allx.std((0, 1, 2), unbiased=False).numpy(), atol=1e-12)
    assert build(root, n_val=20, seed=5, standardize="full").decode.mean == full.mean  # split-independent
    assert build(root, n_val=20, seed=5).decode.mean != build(root, n_val=20, seed=6).decode.mean
    k = build(root, n_val=20, standardize="kuangliu").decode
    assert k.mean == KUANGLIU_MEAN and k.std == KUANGLIU_STD == (0.2023, 0.1994, 0.2010)


# ---------------------------------------------------------------------------
# Augmentation


def reference_crop_flip(x_uint8: np.ndarray, oy, ox, flip, pad: int = 4) -> np.ndarray:
    """torchvision's RandomCrop(32, padding=4) (fill 0 on the raw image) + horizontal flip, image by image."""
    out = np.empty_like(x_uint8)
    for i, img in enumerate(x_uint8):  # [3, 32, 32]
        p = np.pad(img, ((0, 0), (pad, pad), (pad, pad)), constant_values=0)
        crop = p[:, oy[i]:oy[i] + 32, ox[i]:ox[i] + 32]
        out[i] = crop[:, :, ::-1] if flip[i] else crop
    return out


def test_augment_equals_torchvision_semantics_on_raw_pixels(synth):
    root, _ = synth
    ds = build(root, n_val=20)
    assert isinstance(ds.augment, CropFlip) and ds.augment.padding == 4
    raw = ds.x_train[:64]
    out = ds.augment(ds.decode(raw), torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)  # the documented draw order
    oy, ox = torch.randint(0, 9, (64,), generator=g), torch.randint(0, 9, (64,), generator=g)
    flip = torch.randint(0, 2, (64,), generator=g).bool()
    ref = reference_crop_flip(raw.numpy(), oy.numpy(), ox.numpy(), flip.numpy())
    assert out.shape == (64, 3, 32, 32) and out.dtype == torch.float32
    assert torch.equal(out, ds.decode(torch.from_numpy(ref)))  # padding = decoded black, exactly
    # crops and flips really happen: every offset and both flip states, most images change
    assert set(oy.tolist()) == set(range(9)) and 0 < int(flip.sum()) < 64
    assert (out != ds.decode(raw)).flatten(1).any(1).float().mean() > 0.8


def test_augment_determinism_and_padding_value(synth):
    root, _ = synth
    ds = build(root, n_val=20)
    x = ds.decode(torch.full((16, 3, 32, 32), 255, dtype=torch.uint8))
    a = ds.augment(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, ds.augment(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, ds.augment(x, torch.Generator().manual_seed(2)))
    black, white = ds.decode.pixel(0), ds.decode.pixel(255)
    assert (black < 0).all() and not torch.allclose(black, torch.zeros(3))  # not zero after standardization
    # every output pixel is either the image (white) or the padding (decoded black), per channel
    is_white = a == white.view(1, 3, 1, 1)
    is_black = a == black.view(1, 3, 1, 1)
    assert (is_white | is_black).all() and is_black.any() and is_white.float().mean() > 0.7
    # a crop shows at most 4 padding rows and 4 padding columns
    assert (is_black.flatten(1).sum(1) <= 3 * (4 * 32 + 4 * 32)).all()


def test_batches_augment_only_when_asked(synth):
    root, _ = synth
    ds = build(root, n_val=20)
    g = torch.Generator().manual_seed(0)
    xb, yb = next(ds.batches("train", 32, g, augment=True))
    g = torch.Generator().manual_seed(0)
    xc, yc = next(ds.batches("train", 32, g, augment=False))
    assert torch.equal(yb, yc) and xb.shape == xc.shape == (32, 3, 32, 32) and not torch.equal(xb, xc)
    off = build(root, n_val=20, augment=False)
    assert off.augment is None
    g = torch.Generator().manual_seed(0)
    assert torch.equal(next(off.batches("train", 32, g, augment=True))[0], xc)
    assert torch.equal(next(ds.batches("test", 8))[0], ds.decode(ds.x_test[:8]))  # test batches: decode only


# ---------------------------------------------------------------------------
# Fingerprint (Dataset.describe, generic)


def test_describe_fingerprint(synth):
    root, _ = synth
    ds = build(root, n_val=20, n_train=100, n_test=10)
    d = ds.describe()
    assert d["name"] == "cifar10" and d["num_classes"] == 10
    assert d["sizes"] == {"train": 100, "val": 20, "test": 10} and len(d["sha256"]) == 16
    int(d["sha256"], 16)
    assert build(root, n_val=20, n_train=100, n_test=9).describe()["sha256"] != d["sha256"]
    assert ds.head(5).describe()["sha256"] != d["sha256"]
    d2 = ds.describe()
    d2["name"] = "changed"
    assert ds.describe()["name"] == "cifar10"  # a copy: the cache cannot be edited from outside


# ---------------------------------------------------------------------------
# CIFAR-10.1 v6


def write_cifar101(folder: Path, n: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, n).astype(np.int64)
    np.save(folder / "cifar10.1_v6_data.npy", x)
    np.save(folder / "cifar10.1_v6_labels.npy", y)
    return x, y


def test_official_cifar101_md5s():
    assert CIFAR101_FILES == {"cifar10.1_v6_data.npy": "4fcae82cb1326aec9ed1dc1fc62345b8",
                              "cifar10.1_v6_labels.npy": "09a97fb7c430502fcbd69d95093a3f85"}


def test_cifar101_loader(tmp_path, monkeypatch):
    msg = one_line_error(lambda: load_cifar101(tmp_path), "CIFAR-10.1 v6 not found under", Cifar101NotFound)
    assert "cifar10.1_v6_labels.npy" in msg and "github.com/modestyachts/CIFAR-10.1" in msg
    x, y = write_cifar101(tmp_path / "CIFAR-10.1")
    one_line_error(lambda: load_cifar101(tmp_path), r"cifar10\.1_v6_data\.npy is corrupt \(md5 [0-9a-f]{32}, "
                                                    r"expected 4fcae82cb1326aec9ed1dc1fc62345b8\)")
    for name in CIFAR101_FILES:  # make the synthetic files the 'official' ones
        digest = hashlib.md5((tmp_path / "CIFAR-10.1" / name).read_bytes()).hexdigest()
        monkeypatch.setitem(CIFAR101_FILES, name, digest)
    gx, gy = load_cifar101(tmp_path)
    assert np.array_equal(gx, x) and np.array_equal(gy, y) and gy.dtype == np.int64
    # damaged contents: wrong shape / labels, a missing labels file, not an npy file
    (tmp_path / "bad").mkdir()
    np.save(tmp_path / "bad" / "cifar10.1_v6_data.npy", x[:, :16])
    np.save(tmp_path / "bad" / "cifar10.1_v6_labels.npy", y)
    one_line_error(lambda: load_cifar101(tmp_path / "bad", verify=False), r"hold uint8 \[12, 16, 32, 3\] images")
    np.save(tmp_path / "bad" / "cifar10.1_v6_data.npy", x)
    np.save(tmp_path / "bad" / "cifar10.1_v6_labels.npy", y + 10)
    one_line_error(lambda: load_cifar101(tmp_path / "bad", verify=False), r"N labels in 0\.\.9")
    (tmp_path / "bad" / "cifar10.1_v6_labels.npy").unlink()
    one_line_error(lambda: load_cifar101(tmp_path / "bad", verify=False), r"cifar10\.1_v6_labels\.npy is missing")
    (tmp_path / "bad" / "cifar10.1_v6_labels.npy").write_bytes(b"not numpy")
    one_line_error(lambda: load_cifar101(tmp_path / "bad", verify=False), r"is not a \.npy array")
    # a clone of the repository works too (<root>/CIFAR-10.1/datasets/)
    write_cifar101(tmp_path / "clone" / "CIFAR-10.1" / "datasets", n=5)
    assert len(load_cifar101(tmp_path / "clone", verify=False)[0]) == 5


def test_cifar101_test_split_uses_the_same_decode(synth):
    root, _ = synth
    ds = build(root, n_val=20)
    one_line_error(lambda: with_cifar101_test(ds, root), "CIFAR-10.1 v6 not found", Cifar101NotFound)
    x, y = write_cifar101(root)  # files directly under the data root
    t = with_cifar101_test(ds, root, verify=False)
    assert t.name == "cifar10.1-v6" and tuple(t.x_test.shape) == (12, 3, 32, 32) and t.x_test.dtype == torch.uint8
    assert torch.equal(t.y_test, torch.from_numpy(y)) and t.decode is ds.decode
    assert torch.equal(t.inputs("test"), ds.decode(chw(x))) and torch.equal(t.x_train, ds.x_train)
    assert len(ds.x_test) == N_TEST  # the original is unchanged


# ---------------------------------------------------------------------------
# The real files


def _find_cifar_bin() -> Path | None:
    for cand in (os.environ.get("BNROBUST_DATA"), REPO.parent / "shared" / "data"):
        if cand and (Path(cand) / "cifar-10-batches-bin" / "test_batch.bin").exists():
            return Path(cand)
    return None


def test_real_cifar10_subset():
    root = _find_cifar_bin()
    if root is None:
        pytest.skip("real CIFAR-10 (binary version) not found: set BNROBUST_DATA or put "
                    "../shared/data/cifar-10-batches-bin beside the repo")
    ds = build(root, seed=0, n_train=1000, n_val=200, n_test=500)
    assert tuple(ds.x_train.shape) == (1000, 3, 32, 32) and ds.x_train.dtype == torch.uint8
    assert ds.describe()["sizes"] == {"train": 1000, "val": 200, "test": 500}
    assert ds.y_test[0] == 3 and ds.x_test[0, :, 0, 0].tolist() == [158, 112, 49]  # the first test image
    x = ds.inputs("train").double()
    assert torch.allclose(x.mean((0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(x.std((0, 2, 3), unbiased=False), torch.ones(3, dtype=torch.float64), atol=1e-6)
    # the natural-image statistics: means near the well-known full-set values, within the subset's noise
    assert np.allclose(ds.decode.mean, (0.4914, 0.4822, 0.4465), atol=0.02)
    assert np.allclose(ds.decode.std, (0.2470, 0.2435, 0.2616), atol=0.02)
    # [-2, 2] holds nearly all decoded pixels: none below, a few percent above (bright pixels)
    assert float((x < -2).double().mean()) < 1e-3 and 0.005 < float((x > 2).double().mean()) < 0.06
    xb, _ = next(ds.batches("train", 128, torch.Generator().manual_seed(0), augment=True))
    assert xb.shape == (128, 3, 32, 32) and torch.isfinite(xb).all()
