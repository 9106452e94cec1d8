"""GPU throughput of bnrobust's training and attack paths against plain fp32 PyTorch loops on the
same GPU, measured in one run (issue 13). Skips, saying so, without a CUDA GPU.

1. Training images/s on CIFAR-shaped data: VGG8 and WRN-28-10 (the `wrn` model, when registered),
   with BN. Ours: `bnrobust.train.train` as a run uses it on CUDA (uint8 data resident on the GPU,
   decoded and cropped/flipped there, bf16 autocast, channels_last, no host sync per step;
   on the CPU of --smoke: fp32, NCHW, as a CPU run);
   `--compile` adds a row with `train.compile`. Plain: a float32 NCHW loop over a float copy of
   the same images on the GPU, no augmentation, the fastest loop one writes without thinking.
2. PGD-20 l_inf images/s (eps 0.03, step 0.003, batch 500, as the CIFAR experiments): ours on the
   model as our trainer leaves it (channels_last, fp32) against a plain fp32 loop on an NCHW copy.
3. Seeds together: how many seeds of LeNet-5 (MNIST-shaped) and VGG8 train as one stacked model
   (`bnrobust.train.stacked`, when it exists and stacks the family) before images/s stops rising.

Runs in well under 5 minutes on one H100 (epochs of a few thousand images, one warm-up each).
`--smoke` runs the same code on the CPU with tiny sizes (to check the script, not to time it).

    python benchmarks/bench_gpu.py [--n 10240] [--compile] [--smoke]
"""
from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F

from bnrobust import attacks
from bnrobust.data import Dataset
from bnrobust.data.cifar import CropFlip, StandardizeChannels
from bnrobust.data.transforms import DecodeImages
from bnrobust.models import MODELS, build_model
from bnrobust.train import TrainConfig, train

SGD = dict(lr=0.01, momentum=0.9, weight_decay=5e-4)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def cifar_like(n: int, device: torch.device) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g)
    decode = StandardizeChannels((0.49, 0.48, 0.45), (0.25, 0.24, 0.26), "bench")
    ds = Dataset("cifar-like", x, y, x[:1000], y[:1000], 10, (-2.0, 2.0), decode=decode,
                 augment=CropFlip(decode.pixel(0)))
    return ds.to(device)


def mnist_like(n: int, device: torch.device) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g)
    return Dataset("mnist-like", x, y, x[:1000], y[:1000], 10, (0.0, 1.0), decode=DecodeImages("unit")).to(device)


def plain_train(model, x, y, bs: int) -> None:
    """fp32, NCHW, float images already on the GPU, a permutation per epoch."""
    opt = torch.optim.SGD(model.parameters(), **SGD)
    model.train()
    perm = torch.randperm(len(x), device=x.device)
    for i in range(0, len(x), bs):
        idx = perm[i:i + bs]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


def plain_pgd(model, x, y, eps, step, steps=20):
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, reduction="sum")
        grad, = torch.autograd.grad(loss, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + step * grad.sign(), x - eps), x + eps).clamp(-2, 2)
    return x_adv


def models(smoke: bool) -> list[tuple[str, dict]]:
    rows = [("VGG8 BN", {"name": "vgg8", "norm": "bn", **({"width_factor": 0.125} if smoke else {})})]
    if "wrn" in MODELS:
        rows.append(("WRN-28-10 BN", {"name": "wrn", "depth": 10 if smoke else 28, "widen": 1 if smoke else 10,
                                      "norm": "bn"}))
    else:
        print("WRN-28-10: no `wrn` model registered in this checkout (bnrobust list models): its rows are skipped")
    return rows


def bench_train_and_pgd(args, device: torch.device) -> None:
    ds = cifar_like(args.n, device)
    x_plain = ds.decode(ds.x_train)  # float32 NCHW on the GPU, for the plain loop
    x_att, y_att = ds.decode(ds.x_test[:args.pgd_n]), ds.y_test[:args.pgd_n]
    print(f"\n1-2. CIFAR-shaped data, {args.n} training images, batch 128; PGD-20 on {len(x_att)} images, batch 500")
    print(f"{'model':<14}{'path':<34}{'train img/s':>12}{'vs plain':>10}{'PGD-20 img/s':>14}{'vs plain':>10}")
    for name, spec in models(args.smoke):
        torch.manual_seed(0)
        base = build_model(spec, ds).to(device)
        paths = {"plain fp32 NCHW": None, "ours (as a run trains)": {}}
        if args.compile:
            paths["ours + torch.compile"] = {"compile": True}
        rates, pgd_rates, trained = {}, {}, {}
        for path, extra in paths.items():
            model = copy.deepcopy(base)
            if extra is None:
                run = lambda: plain_train(model, x_plain, ds.y_train, 128)  # noqa: E731
            else:
                cfg = TrainConfig(epochs=1, batch_size=128, **SGD, **extra)
                run = lambda: train(model, ds, cfg, 0)  # noqa: E731
            run()  # warm-up: cuDNN autotuning, compilation, allocator
            rates[path] = args.n / min(timed(run, device) for _ in range(args.repeats))
            trained[path] = model.eval()
        for path, model in trained.items():
            if path.endswith("compile"):
                continue
            def pgd_all(model=model, plain=path.startswith("plain")):
                for i in range(0, len(x_att), 500):
                    xb, yb = x_att[i:i + 500], y_att[i:i + 500]
                    if plain:
                        plain_pgd(model, xb, yb, 0.03, 0.003)
                    else:
                        attacks.pgd(model, xb, yb, 0.03, 20, 0.003, clip=(-2.0, 2.0))
            pgd_all()
            pgd_rates[path] = len(x_att) / min(timed(pgd_all, device) for _ in range(args.repeats))
        plain = "plain fp32 NCHW"
        for path in paths:
            p = f"{pgd_rates[path]:14.0f}{pgd_rates[path] / pgd_rates[plain]:9.2f}x" if path in pgd_rates else ""
            print(f"{name:<14}{path:<34}{rates[path]:12.0f}{rates[path] / rates[plain]:9.2f}x{p}")
        del trained, base
        if device.type == "cuda":
            torch.cuda.empty_cache()


def bench_seeds_together(args, device: torch.device) -> None:
    print("\n3. Seeds trained together as one stacked model (images/s summed over the seeds)")
    try:
        from bnrobust.train.stacked import NotStackable, train_stacked
    except ImportError:
        print("no stacked trainer (bnrobust/train/stacked.py) in this checkout: skipped")
        return
    cases = [("LeNet-5 BN (MNIST)", {"name": "lenet5", "norm": "bn"}, mnist_like(args.n, device), 50),
             ("VGG8 BN (CIFAR)", {"name": "vgg8", "norm": "bn", **({"width_factor": 0.125} if args.smoke else {})},
              cifar_like(args.n, device), 128)]
    for name, spec, ds, bs in cases:
        best, line = 0.0, []
        for s in (1, 2, 4, 8, 16):
            torch.manual_seed(0)
            group = [build_model(spec, ds).to(device) for _ in range(s)]
            cfgs = [TrainConfig(epochs=1, batch_size=bs, **SGD)] * s
            try:
                train_stacked(group, [ds] * s, cfgs, list(range(s)))  # warm-up
                t = min(timed(lambda: train_stacked(group, [ds] * s, cfgs, list(range(s))), device)
                        for _ in range(args.repeats))
            except NotStackable as e:
                line.append(f"not stackable ({e})")
                break
            except torch.cuda.OutOfMemoryError:
                line.append(f"S={s}: out of memory")
                break
            rate = s * args.n / t
            line.append(f"S={s}: {rate:.0f}")
            if rate < best * 1.05:  # stopped rising (less than 5% more)
                break
            best = max(best, rate)
        print(f"{name:<22}" + ", ".join(line))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10240, help="training images per timed epoch")
    ap.add_argument("--pgd-n", type=int, default=1000, help="images attacked per timing")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="add a row with train.compile (compiles for minutes)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks the script, times nothing")
    args = ap.parse_args()
    if args.smoke:
        device = torch.device("cpu")
        args.n, args.pgd_n, args.repeats = 256, 500, 1
    elif not torch.cuda.is_available():
        print("bench_gpu: no CUDA GPU on this machine: skipped (run it where one is; --smoke checks the script "
              "on the CPU)")
        return
    else:
        device = torch.device("cuda")
        print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    bench_train_and_pgd(args, device)
    bench_seeds_together(args, device)


if __name__ == "__main__":
    main()
