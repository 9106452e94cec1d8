"""Which training path is fastest for VGG8 on this CPU: our trainer in fp32 (the CPU default,
channels_last), against the same trainer in NCHW, with bf16 autocast (`train.precision: bf16`),
and a plain PyTorch loop in fp32 with channels_last, all timed alternately in the same run on the same synthetic
CIFAR-shaped data (uint8, decoded, cropped and flipped per batch as the real task is).
Prints images/s and ratios to our fp32 path.

    python benchmarks/bench_vgg_cpu.py [--width 0.5] [--n 1024] [--repeats 2]
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from bnrobust.data import Dataset
from bnrobust.data.cifar import CropFlip, StandardizeChannels
from bnrobust.models import build_model
from bnrobust.train import TrainConfig, train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (args.n, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (args.n,), generator=g)
    decode = StandardizeChannels((0.49, 0.48, 0.45), (0.25, 0.24, 0.26))
    black = decode(torch.zeros(1, 3, 1, 1, dtype=torch.uint8)).view(3)  # the decoded value of a black pixel
    ds = Dataset("synthetic-cifar", x, y, x[:256], y[:256], 10, (-2.0, 2.0), decode=decode, augment=CropFlip(black))
    spec = {"name": "vgg8", "width_factor": args.width}

    def ours(precision, channels_last=True):
        def run():
            torch.manual_seed(0)
            model = build_model({**spec, "norm": "bn"}, ds)
            train(model, ds, TrainConfig(lr=0.01, epochs=1, batch_size=128, momentum=0.9, precision=precision), 0,
                  channels_last=channels_last)
        return run

    def plain_channels_last():
        torch.manual_seed(0)
        model = build_model({**spec, "norm": "bn"}, ds).to(memory_format=torch.channels_last).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        gen = torch.Generator().manual_seed(0)
        for xb, yb in ds.batches("train", 128, gen, augment=True):
            loss = F.cross_entropy(model(xb.contiguous(memory_format=torch.channels_last)), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()

    paths = {"ours fp32": ours("fp32"), "ours fp32 NCHW": ours("fp32", False), "ours bf16 autocast": ours("bf16"),
             "plain fp32 channels_last": plain_channels_last}
    best = {k: float("inf") for k in paths}
    for _ in range(args.repeats):
        for name, fn in paths.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    base = best["ours fp32"]
    print(f"VGG8 (width {args.width}, BN), {args.n} images per epoch, batch 128, {torch.get_num_threads()} threads")
    print(f"{'path':28s} {'images/s':>9s} {'time vs ours fp32':>18s}")
    for name, t in best.items():
        print(f"{name:28s} {args.n / t:9.0f} {t / base:17.2f}x")


if __name__ == "__main__":
    main()
