"""Training throughput of the toolkit's trainer on the section B/C MLPs against a plain PyTorch
loop written here: same model (same initial weights), same data, same batches, same upscaling,
timed alternately in the same run. Prints examples/s and the ratio ours / plain (goal: <= 1.10).

    python benchmarks/bench_mlp.py [--repeats 3] [--n 4096]
"""
from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F

from bnrobust.data import Dataset, NearestUpscale
from bnrobust.models.mlp import MLP
from bnrobust.train import TrainConfig, train


def plain_train(model, x, y, lr, bs, seed, transform=None):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    perm = torch.randperm(len(x), generator=g)
    for i in range(0, len(x), bs):
        idx = perm[i:i + bs]
        xb = x[idx] if transform is None else transform(x[idx])
        loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=4096, help="training examples per timed epoch")
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    x28 = torch.rand(args.n, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (args.n,), generator=g)
    cases = [  # (name, model, batch size, transform)
        ("input-dim MLP sqrt(d)=28", MLP(784, 10, 2, 392), 128, None),
        ("input-dim MLP sqrt(d)=28 BN", MLP(784, 10, 2, 392, norm="bn", norm_layers=[1]), 128, None),
        ("input-dim MLP sqrt(d)=56 BN", MLP(3136, 10, 2, 1568, norm="bn", norm_layers=[1]), 128, NearestUpscale(2)),
        ("depth-grid MLP L=20 w=384 BN", MLP(784, 10, 20, 384, norm={"name": "bn", "c": 1e-3}, init="he"), 50, None),
        ("depth-grid MLP L=20 w=384", MLP(784, 10, 20, 384, init="he"), 50, None),
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.n} examples per epoch, "
          f"best of {args.repeats} alternating repeats")
    worst = 0.0
    for name, model, bs, transform in cases:
        cfg = TrainConfig(lr=0.01, epochs=1, batch_size=bs)
        data = Dataset("bench", x28, y, x28, y, 10, (0.0, 1.0), transform)  # upscaled batch by batch
        ours_t, plain_t = [], []
        for _ in range(args.repeats):  # alternate, so load changes hit both alike
            m = copy.deepcopy(model)
            t = time.perf_counter()
            train(m, data, cfg, 0)
            ours_t.append(time.perf_counter() - t)
            m = copy.deepcopy(model)
            t = time.perf_counter()
            plain_train(m, x28, y, 0.01, bs, 0, transform)
            plain_t.append(time.perf_counter() - t)
        o, p = min(ours_t), min(plain_t)
        worst = max(worst, o / p)
        print(f"{name:<30} ours {args.n / o:8.0f} ex/s  plain {args.n / p:8.0f} ex/s  ratio {o / p:.3f}")
    print(f"worst ratio {worst:.3f} ({'within' if worst <= 1.10 else 'OVER'} the 10% budget)")


if __name__ == "__main__":
    main()
