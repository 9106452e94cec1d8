"""Training throughput of bnrobust's trainer against a plain PyTorch loop written here: same
model (same initial weights), same data, same batches in the same order, timed alternately in
one run (best of --repeats). The plain loop holds the images already decoded as float32 (what
one would write by hand); ours decodes the stored uint8 images batch by batch, as every run does,
and keeps its per-epoch loss/accuracy bookkeeping. Prints examples/s and the time ratio
ours / plain (goal: <= 1.05).

Cases: Table 1's logistic regression (GD and BNGD, batch 128), one seed of the input-dim MLP
(784-392-392-10, BN on the first layer, batch 128) and one of the MNIST-C LeNet-5 (BN, batch 50,
momentum 0.9), on MNIST when it is found ($BNROBUST_DATA), else on random images.

    python benchmarks/bench_train.py [--repeats 3] [--n 5000] [--epochs 1] [--only LeNet]
"""
from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bnrobust.data import Dataset
from bnrobust.data.transforms import DecodeImages
from bnrobust.models.lenet import LeNet5
from bnrobust.models.linear import LinearClassifier
from bnrobust.models.mlp import MLP
from bnrobust.train import TrainConfig, train

BNGD = {"name": "bn", "affine": "fixed"}  # the paper's BNGD: BN with gamma = 1, beta = 0


def mnist_uint8(n: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """n MNIST training images [n, 1, 28, 28] uint8 and labels, or random ones."""
    root = Path(os.environ.get("BNROBUST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
    if (root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").exists():
        from bnrobust.data import load_mnist_arrays
        x, y = load_mnist_arrays(root, download=False)[:2]
        return torch.from_numpy(x[:n].copy()).unsqueeze(1), torch.from_numpy(y[:n].astype("int64")), f"MNIST ({root})"
    g = torch.Generator().manual_seed(0)
    return (torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8),
            torch.randint(0, 10, (n,), generator=g), "random images (no MNIST found)")


def plain_train(model, x, y, cfg: TrainConfig, seed: int):
    """The loop one writes by hand: float images in memory, a seeded permutation per epoch."""
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=5000, help="training images per epoch")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--only", help="run only the cases whose name contains this text (e.g. LeNet)")
    args = ap.parse_args()
    x8, y, what = mnist_uint8(args.n)
    decode = DecodeImages("unit")
    xf = decode(x8)
    data = Dataset("bench", x8, y, x8[:100], y[:100], 10, (0.0, 1.0), decode=decode)
    y2 = y % 2
    data2 = Dataset("bench2", x8.flatten(1), y2, x8[:100].flatten(1), y2[:100], 2, (0.0, 1.0), decode=decode)
    torch.manual_seed(0)
    e = args.epochs
    cases = [  # name, model, data, plain x, plain y, config
        ("linear GD (Table 1)", LinearClassifier(784, 2), data2, xf.flatten(1), y2,
         TrainConfig(lr=0.1, epochs=5 * e, batch_size=128)),
        ("linear BNGD (Table 1)", LinearClassifier(784, 2, norm=BNGD), data2, xf.flatten(1), y2,
         TrainConfig(lr=0.1, epochs=5 * e, batch_size=128)),
        ("MLP 784-392-392-10 BN", MLP(784, 10, 2, 392, norm="bn", norm_layers=[1]), data, xf, y,
         TrainConfig(lr=0.01, epochs=e, batch_size=128)),
        ("LeNet-5 BN (MNIST-C)", LeNet5(1, 10, 28, norm="bn"), data, xf, y,
         TrainConfig(lr=0.01, epochs=e, batch_size=50, momentum=0.9)),
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {what}, {args.n} images; "
          f"best of {args.repeats} alternating repeats")
    print(f"{'model':<24}{'epochs':>7}{'ours ex/s':>11}{'plain ex/s':>12}{'ours/plain time':>17}")
    worst = 0.0
    for name, model, ds, px, py, cfg in cases:
        if args.only and args.only.lower() not in name.lower():
            continue
        best = {"ours": float("inf"), "plain": float("inf")}
        for _ in range(args.repeats):  # alternate, so load changes hit both alike
            m = copy.deepcopy(model)
            t = time.perf_counter()
            train(m, ds, cfg, 0)
            best["ours"] = min(best["ours"], time.perf_counter() - t)
            m = copy.deepcopy(model)
            t = time.perf_counter()
            plain_train(m, px, py, cfg, 0)
            best["plain"] = min(best["plain"], time.perf_counter() - t)
        ratio = best["ours"] / best["plain"]
        worst = max(worst, ratio)
        n = len(px) * cfg.epochs
        print(f"{name:<24}{cfg.epochs:7d}{n / best['ours']:11.0f}{n / best['plain']:12.0f}{ratio:16.3f}x")
    print(f"worst ratio {worst:.3f} ({'within' if worst <= 1.05 else 'OVER'} the 5% budget)")


if __name__ == "__main__":
    main()
