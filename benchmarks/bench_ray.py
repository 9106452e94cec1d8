"""Wall time of one sweep with the in-process executor against the Ray executor on this machine
(a local Ray, one run per core, one torch thread per run), end to end: `bnrobust run` as a user
types it, start-up of Python and Ray included. Each variant runs in a fresh --out, so nothing is
reused. Two in-process baselines: torch's default threads (one per core: what a plain `bnrobust
run` does) and one thread (OMP_NUM_THREADS=1, the setting the README asks for on a shared
machine). The Ray sweep must give the same records as the one-thread sweep (same threads per
run, so the same bits); the script checks that.

    python benchmarks/bench_ray.py [--experiment input-dim-mlp] [--scale quick] [--seeds N] [--set KEY=VALUE ...]
                                   [--skip-one-thread]

`make bench` runs the default, input-dim-mlp at quick scale (16 runs; ~15 min on 2 cores). A short
check: `--seeds 1 --set train.epochs=1`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(label: str, out: Path, argv: list[str], env: dict) -> float:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bnrobust", "run", *argv, "--out", str(out), "--no-report"],
                          env=env, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if proc.returncode:
        sys.exit(f"{label} failed:\n{proc.stderr[-3000:]}")
    print(f"  {label:<34} {seconds:7.1f} s", flush=True)
    return seconds


def records(out: Path) -> dict[str, dict]:
    """Each run's record without what differs between processes (time, device, versions)."""
    found = {}
    for rec in sorted(out.glob("*/runs/*/record.json")):
        r = json.loads(rec.read_text())
        found[rec.parent.name] = {k: v for k, v in r.items() if k not in ("seconds", "device", "torch", "bnrobust")}
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--experiment", default="input-dim-mlp")
    ap.add_argument("--scale", default="quick")
    ap.add_argument("--seeds", type=int)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--skip-one-thread", action="store_true", help="skip the OMP_NUM_THREADS=1 in-process baseline")
    args = ap.parse_args()
    argv = [args.experiment, "--scale", args.scale] + (["--seeds", str(args.seeds)] if args.seeds else [])
    for item in args.set:
        argv += ["--set", item]
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAY_ADDRESS")}
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    cores = os.cpu_count()
    print(f"bnrobust run {' '.join(argv)}: {cores} cores; wall time of the whole command")
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        tmp = Path(tmp)
        local = run(f"in-process, {cores} torch threads", tmp / "local", argv, base)
        ray = run(f"ray, {cores} runs x 1 thread", tmp / "ray", argv + ["--executor", "ray"], base)
        one = None
        if not args.skip_one_thread:
            one = run("in-process, 1 thread", tmp / "one", argv, dict(base, OMP_NUM_THREADS="1"))
            same = records(tmp / "ray") == records(tmp / "one")
            print(f"  Ray's records equal the one-thread in-process records: {'yes' if same else 'NO'}")
    print(f"ratio in-process / ray: {local / ray:.2f}x (torch's {cores} threads)"
          + (f", {one / ray:.2f}x (1 thread)" if one else ""))
    if one is not None and not same:
        sys.exit("the Ray sweep computed other results than the in-process one")


if __name__ == "__main__":
    main()
