"""PGD-20 l_inf throughput: bnrobust's `attacks.pgd` against Foolbox 3's LinfPGD and a plain
PyTorch loop written here, on the same model and the same inputs, timed alternately in one run
(best of --repeats). Foolbox is timed on `attack.run` (its loop only, no success criterion),
the least work it can do. Also prints the model's accuracy on ours and on Foolbox's examples
(they agree; on conv nets the examples themselves differ where float rounding flips a sign).

    python benchmarks/bench_attacks.py [--repeats 3] [--threads N]
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from bnrobust import attacks
from bnrobust.models.lenet import LeNet5
from bnrobust.models.linear import LinearClassifier
from bnrobust.models.mlp import MLP

STEPS = 20


def plain_pgd(model, x, y, eps, step):
    """The textbook loop: x_adv.requires_grad, loss.backward(), sign step, project, clip."""
    x_adv = x.clone()
    for _ in range(STEPS):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, reduction="sum")
        grad, = torch.autograd.grad(loss, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + step * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return x_adv


def best_of(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        import foolbox as fb
    except ImportError:
        fb = None
        print("foolbox is not installed (pip install foolbox==3.3.4): its column is skipped")
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    cases = [  # name, model, inputs, eps
        ("linear 784->2 BN (Table 1)", LinearClassifier(784, 2, norm={"name": "bn", "affine": "fixed"}),
         torch.rand(2000, 784, generator=g), 0.02),
        ("MLP 784-392-392-10 BN", MLP(784, 10, 2, 392, norm="bn", norm_layers=[1]),
         torch.rand(1000, 1, 28, 28, generator=g), 0.02),
        ("LeNet-5 BN (MNIST)", LeNet5(1, 10, 28, norm="bn"), torch.rand(500, 1, 28, 28, generator=g), 0.02),
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; PGD-{STEPS} l_inf, step eps/10, "
          f"no random start, best of >= {args.repeats} alternating rounds")
    print(f"{'model':<28}{'images':>7}{'ours img/s':>12}{'plain img/s':>13}{'foolbox img/s':>15}"
          f"{'ours/plain':>12}{'ours/foolbox':>14}{'acc ours/foolbox':>18}")
    for name, model, x, eps in cases:
        model.eval()
        with torch.no_grad():
            y = model(x).argmax(1)  # attack the model's own predictions: every image starts correct
        step = eps / 10
        ours = lambda: attacks.pgd(model, x, y, eps, STEPS, step, clip=(0.0, 1.0))  # noqa: E731
        plain = lambda: plain_pgd(model, x, y, eps, step)  # noqa: E731
        fns = {"ours": ours, "plain": plain}
        if fb is not None:
            fmodel = fb.PyTorchModel(model, bounds=(0, 1))
            attack = fb.attacks.LinfPGD(abs_stepsize=step, steps=STEPS, random_start=False)
            fns["foolbox"] = lambda: attack.run(fmodel, x, y, epsilon=eps)
        times = {k: best_of(fn, 1) for k, fn in fns.items()}  # also a warm-up
        rounds = min(20, max(args.repeats, int(2.0 / min(times.values()))))  # fast cases: more rounds
        for _ in range(rounds):  # alternate, so load changes hit all alike
            for k, fn in fns.items():
                times[k] = min(times[k], best_of(fn, 1))
        rate = {k: len(x) / t for k, t in times.items()}
        same = "-"
        if fb is not None:
            advs = (ours(), fns["foolbox"]())
            with torch.no_grad():
                acc = [100.0 * float((model(a).argmax(1) == y).float().mean()) for a in advs]
            same = f"{acc[0]:.1f} / {acc[1]:.1f}"
        fool = f"{rate['foolbox']:15.0f}" if "foolbox" in rate else f"{'-':>15}"
        ratio = f"{rate['ours'] / rate['foolbox']:13.2f}x" if "foolbox" in rate else f"{'-':>14}"
        print(f"{name:<28}{len(x):7d}{rate['ours']:12.0f}{rate['plain']:13.0f}{fool}"
              f"{rate['ours'] / rate['plain']:11.2f}x{ratio}{same:>18}")
    print("ratios are throughput ours / theirs (goal vs Foolbox: >= 1.5x); acc: the model's accuracy (%) on "
          "each one's adversarial examples")


if __name__ == "__main__":
    main()
