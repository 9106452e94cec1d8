"""End-to-end wall time of whole experiments: `bnrobust run ID --scale paper` from a fresh
--out (process start to exit, report included), measured side by side in one run for:

- `now`: this checkout as it runs by default;
- `per-run loop`: this checkout with BNROBUST_STACK=0 (every run trained on its own, the loop
  before seed-stacked training; the same as `now` where this checkout cannot stack);
- `REV` (with --rev REV, e.g. the commit before issue 13): the package as it was at that git
  revision, extracted to a temporary folder.

Targets of issue 13: Table 1 (mnist37-linear) at most 5 s; bn-eps-sweep-mnist and
input-dim-linear 5x faster than before.

    python benchmarks/bench_experiments.py [--ids mnist37-linear,bn-eps-sweep-mnist,input-dim-linear]
                                           [--rev bb55aea] [--scale paper] [--limit 1800]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IDS = ("mnist37-linear", "bn-eps-sweep-mnist", "input-dim-linear")


def run(exp: str, scale: str, code: Path, extra_env: dict, limit: float) -> tuple[float, bool]:
    """Wall seconds of one fresh `bnrobust run` with the package at `code`, and whether it
    was stopped at `limit`."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(code), BNROBUST_NO_DOWNLOAD="1", **extra_env)
    env.setdefault("BNROBUST_DATA", str(REPO.parent / "shared" / "data"))
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        p = subprocess.Popen([sys.executable, "-m", "bnrobust", "run", exp, "--scale", scale, "--out", out],
                             cwd=out, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            _, err = p.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            return limit, True
        if p.returncode != 0:
            raise SystemExit(f"bnrobust run {exp} failed ({code}):\n{err[-2000:]}")
        return time.perf_counter() - t, False


def extract(rev: str, into: Path) -> Path:
    """The bnrobust package as it was at git revision `rev`, under `into`."""
    archive = into / "src.tar"
    with open(archive, "wb") as f:
        subprocess.run(["git", "-C", str(REPO), "archive", rev, "bnrobust"], stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ids", default=",".join(IDS))
    ap.add_argument("--scale", default="paper", choices=("quick", "paper"))
    ap.add_argument("--rev", help="also time the package at this git revision (e.g. the commit before issue 13)")
    ap.add_argument("--limit", type=float, default=1800, help="stop one run after this many seconds")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="set for every path, e.g. OMP_NUM_THREADS=1 (repeatable)")
    args = ap.parse_args()
    common = dict(item.split("=", 1) for item in args.env)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"now": (REPO, dict(common)), "per-run loop": (REPO, {**common, "BNROBUST_STACK": "0"})}
        if args.rev:
            paths[args.rev] = (extract(args.rev, Path(tmp)), dict(common))
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; wall seconds of "
              f"`bnrobust run ID --scale {args.scale}` from a fresh --out"
              + (f"; {' '.join(args.env)}" if args.env else ""))
        print(f"{'experiment':<22}" + "".join(f"{k:>16}" for k in paths) + "".join(
            f"{'now vs ' + k:>22}" for k in paths if k != "now"))
        for exp in args.ids.split(","):
            times = {}
            for name, (code, env) in paths.items():
                times[name] = run(exp, args.scale, code, env, args.limit)
            cells = "".join(f"{('>' if x else '') + f'{t:.1f}s':>16}" for t, x in times.values())
            ratios = "".join(f"{times[k][0] / times['now'][0]:21.2f}x" for k in paths if k != "now")
            print(f"{exp:<22}{cells}{ratios}", flush=True)
    print("ratios: how many times faster `now` is (a time marked > was stopped at --limit: its ratio is a lower bound)")


if __name__ == "__main__":
    main()
