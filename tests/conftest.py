"""Shared fixtures. Tests that need real MNIST use `mnist_root`, which skips with a reason
when ../shared/data (or $BNROBUST_DATA) does not hold it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from bnrobust.data import Dataset
from bnrobust.data.synthetic import gaussian_2d

REPO = Path(__file__).resolve().parents[1]


def _find_mnist() -> Path | None:
    for cand in (os.environ.get("BNROBUST_DATA"), REPO.parent / "shared" / "data"):
        if cand and (Path(cand) / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").exists():
            return Path(cand)
    return None


def _find_cifar10() -> Path | None:
    for cand in (os.environ.get("BNROBUST_DATA"), REPO.parent / "shared" / "data"):
        if cand and any((Path(cand) / d / "test_batch.bin").exists() or (Path(cand) / d / "test_batch").exists()
                        for d in ("cifar-10-batches-bin", "cifar-10-batches-py")):
            return Path(cand)
    return None


@pytest.fixture(scope="session")
def cifar_root() -> Path:
    root = _find_cifar10()
    if root is None:
        pytest.skip("real CIFAR-10 not found: set BNROBUST_DATA or put ../shared/data/cifar-10-batches-bin beside "
                    "the repo")
    return root


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Tests never download: a missing file must fail fast with the offline message."""
    monkeypatch.setenv("BNROBUST_NO_DOWNLOAD", "1")


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    root = _find_mnist()
    if root is None:
        pytest.skip("real MNIST not found: set BNROBUST_DATA or put ../shared/data/MNIST/raw beside the repo")
    return root


@pytest.fixture(scope="session")
def blobs() -> Dataset:
    """A small nonlinear 2-class task in 20-D (so PGD can beat FGSM), values in [0, 1]."""
    g = torch.Generator().manual_seed(0)
    n, d = 1200, 20
    x = torch.rand(n, d, generator=g)
    y = ((x[:, :5].sum(1) - 2.5) * (x[:, 5:10].sum(1) - 2.5) > 0).long()
    return Dataset("blobs", x[:1000], y[:1000], x[1000:], y[1000:], 2, (0.0, 1.0))


@pytest.fixture(scope="session")
def toy() -> Dataset:
    return gaussian_2d(Path("."), seed=0, n_train=400, n_test=2000)
