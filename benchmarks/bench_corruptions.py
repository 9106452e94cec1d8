"""Time every corruption of bnrobust.corruptions on 10k images: the MNIST test set (MNIST-C, one
severity) and 10k random 32x32x3 uint8 images (CIFAR-10-C, severities 1..5 summed). As a baseline
measured in the same run, a plain numpy pass over the same array (float copy + add + clip + cast
back) gives each row a ratio, so the table reads the same on a faster or slower machine.

    python benchmarks/bench_corruptions.py [--n 10000] [--only mnist|cifar10] [--names a,b]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from bnrobust import corruptions as C


def baseline(x: np.ndarray) -> float:
    """Seconds for one trivial full pass: uint8 -> float64, +1, clip, -> uint8 (best of 3)."""
    best = np.inf
    for _ in range(3):
        t = time.perf_counter()
        np.clip(x.astype(np.float64) + 1.0, 0, 255).astype(np.uint8)
        best = min(best, time.perf_counter() - t)
    return best


def mnist_images(n: int) -> tuple[np.ndarray, str]:
    root = Path(os.environ.get("BNROBUST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
    if (root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").exists():
        from bnrobust.data import load_mnist_arrays
        x = load_mnist_arrays(root, download=False)[2]
        return np.resize(x, (n, 28, 28)), f"MNIST test set ({root})"
    return C.synthetic_digits(n), "synthetic digits (no MNIST found)"


def run(suite: str, x: np.ndarray, names: list[str]) -> None:
    base = baseline(x)
    print(f"\n{suite}: {len(x)} images {list(x.shape[1:])}, baseline numpy pass {base * 1e3:.1f} ms")
    levels = C.SEVERITIES[suite]
    head = "".join(f"{'s' + str(s):>8}" for s in levels) if len(levels) > 1 else ""
    print(f"{'corruption':<18}{head}{'total s':>9}{'x base':>9}{'img/s':>9}")
    grand = 0.0
    for name in names:
        times = []
        for s in levels:
            t = time.perf_counter()
            y = C.corrupt(x, name, s, seed=0, suite=suite)
            times.append(time.perf_counter() - t)
            assert y.shape == x.shape and y.dtype == x.dtype
        total = sum(times)
        grand += total
        cols = "".join(f"{t:8.2f}" for t in times) if len(levels) > 1 else ""
        print(f"{name:<18}{cols}{total:9.2f}{total / base:9.0f}{len(x) * len(levels) / total:9.0f}")
    print(f"{'TOTAL':<18}{' ' * 8 * (len(levels) if len(levels) > 1 else 0)}{grand:9.2f}{grand / base:9.0f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--only", choices=("mnist", "cifar10"))
    ap.add_argument("--names", help="comma-separated corruption names (default: all)")
    args = ap.parse_args()
    pick = args.names.split(",") if args.names else None
    import scipy
    print(f"numpy {np.__version__}, scipy {scipy.__version__}, {os.cpu_count()} CPUs")
    if args.only in (None, "mnist"):
        x, what = mnist_images(args.n)
        print(f"MNIST images: {what}")
        run("mnist", x, pick or C.corruption_names("mnist"))
    if args.only in (None, "cifar10"):
        x = np.random.default_rng(0).integers(0, 256, (args.n, 32, 32, 3), dtype=np.uint8)
        run("cifar10", x, pick or C.corruption_names("cifar10"))


if __name__ == "__main__":
    main()
