"""Datasets as loaders: uint8 storage, per-batch decoding, seeded order, on-device residency."""
import numpy as np
import pytest
import torch

from bnrobust.data import Dataset, DecodeImages, load_dataset
from bnrobust.errors import BnrobustError


def _uint8_dataset(n=10):
    x = torch.arange(n * 4, dtype=torch.uint8).view(n, 1, 2, 2)
    y = torch.arange(n) % 2
    dec, clip = DecodeImages.fit("unit", x)
    return Dataset("u8", x, y, x[:4], y[:4], 2, clip, decode=dec)


def test_decode_is_exact_division_by_255():
    x = torch.arange(256, dtype=torch.uint8)
    expected = np.arange(256, dtype=np.uint8).astype(np.float32) / 255.0
    assert np.array_equal(DecodeImages("unit")(x).numpy(), expected)


def test_pixel_std_uses_training_statistics():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (50, 1, 3, 3), generator=g, dtype=torch.uint8)
    dec, clip = DecodeImages.fit("pixel-std", x)
    z = dec(x)
    assert torch.allclose(z.mean(0), torch.zeros(1, 3, 3), atol=1e-5)
    assert clip == (float(z.min()), float(z.max()))


def test_seeded_batches_cover_the_split_once_and_drop_a_trailing_singleton():
    ds = _uint8_dataset(11)
    seen = [yb for _, yb in ds.batches("train", 5, torch.Generator().manual_seed(0))]
    assert [len(b) for b in seen] == [5, 5]           # the 11th item would be a batch of one
    again = [yb for _, yb in ds.batches("train", 5, torch.Generator().manual_seed(0))]
    assert all(torch.equal(a, b) for a, b in zip(seen, again))
    ordered = torch.cat([xb for xb, _ in ds.batches("train", 4)])
    assert torch.equal(ordered, ds.inputs("train")) and ordered.dtype == torch.float32


def test_full_batch_and_unknown_split():
    ds = _uint8_dataset()
    (xb, yb), = list(ds.batches("test", 0))
    assert len(xb) == 4
    with pytest.raises(BnrobustError, match="no val split"):
        list(ds.batches("val", 2))
    with pytest.raises(BnrobustError, match="unknown split"):
        ds.split("dev")


def test_augmentation_applies_to_training_batches_only():
    ds = _uint8_dataset()
    ds.augment = lambda x, g: -x
    tr = next(ds.batches("train", 4, torch.Generator().manual_seed(0), augment=True))[0]
    te = next(ds.batches("test", 4))[0]
    assert (tr <= 0).all() and (te >= 0).all()


def test_to_device_keeps_storage_dtype_and_is_cached():
    ds = _uint8_dataset()
    assert ds.to("cpu") is ds
    meta = ds.to("meta")
    assert meta.x_train.dtype == torch.uint8 and meta.x_train.device.type == "meta"
    assert ds.to("meta") is meta


def test_mnist_is_stored_as_uint8(mnist_root):
    ds = load_dataset({"name": "mnist", "n_train": 100, "n_test": 50, "size": 56}, seed=0, root=mnist_root)
    assert ds.x_train.dtype == torch.uint8 and ds.x_train.shape == (100, 1, 28, 28)
    assert ds.input_shape == (1, 56, 56)
    x = ds.inputs("train")
    assert x.dtype == torch.float32 and float(x.max()) <= 1.0
