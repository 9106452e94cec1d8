"""Training and attack throughput of bnrobust against plain PyTorch written here, same model,
same data, same batch, measured in the same run. Prints ratios (ours / plain); ~1.0 is the goal.

    python benchmarks/bench_train.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from bnrobust import attacks
from bnrobust.data import Dataset
from bnrobust.models.linear import LinearClassifier
from bnrobust.train import TrainConfig, train

BNGD = {"name": "bn", "affine": "fixed"}  # the paper's BNGD: BN with gamma = 1, beta = 0


def plain_train(model, x, y, lr, epochs, bs, seed):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), bs):
            idx = perm[i:i + bs]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


def plain_fgsm(model, x, y, eps):
    x = x.clone().requires_grad_(True)
    F.cross_entropy(model(x), y, reduction="sum").backward()
    return (x + eps * x.grad.sign()).clamp(0, 1).detach()


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(5000, 784, generator=g), torch.randint(0, 2, (5000,), generator=g)
    data = Dataset.from_tensors(x, y, 2, clip=(0.0, 1.0))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; 5000 x 784, batch 128, 5 epochs")
    for bn, norm in (("none", "none"), ("fixed", BNGD)):
        def ours():
            torch.manual_seed(0)
            train(LinearClassifier(784, 2, norm=norm), data, TrainConfig(lr=0.1, epochs=5, batch_size=128), 0)

        def plain():
            torch.manual_seed(0)
            plain_train(LinearClassifier(784, 2, norm=norm), x, y, 0.1, 5, 128, 0)
        t_ours, t_plain = best_of(ours, args.repeats), best_of(plain, args.repeats)
        print(f"train linear bn={bn:<5}  ours {t_ours:.3f}s  plain {t_plain:.3f}s  ratio {t_ours / t_plain:.2f}")
    model = LinearClassifier(784, 2, norm=BNGD).eval()
    t_ours = best_of(lambda: attacks.fgsm(model, x, y, 0.1, clip=(0, 1)), args.repeats * 3)
    t_plain = best_of(lambda: plain_fgsm(model, x, y, 0.1), args.repeats * 3)
    print(f"fgsm 5000 images        ours {t_ours:.3f}s  plain {t_plain:.3f}s  ratio {t_ours / t_plain:.2f}")


if __name__ == "__main__":
    main()
