"""Two `bnrobust run` processes at once on one machine: how much slower is each than alone?

Runs a fixed CPU job (by default one seed of Table 1 at paper scale: 4 runs of 50 epochs on
MNIST 3 vs 7) as separate `python -m bnrobust run` processes, each into its own temporary
--out (so both compute everything), first alone and then two started together, under each
thread policy, alternating so that changes in the machine's load hit all of them alike:

- `torch defaults`: BNROBUST_THREADS=torch, PyTorch's one spinning OpenMP thread per core
  in every process (bnrobust before issue 13);
- `bnrobust auto`: the command's default (idle threads spin only briefly, live bnrobust
  processes of the host split the cores; bnrobust/threads.py);
- `OMP_NUM_THREADS=1`: one thread per process, for reference.

Prints wall seconds (process start to exit) and compute seconds (the runs' own `seconds`),
alone and side by side, and the slowdown ratio pair / alone (goal: <= 2.5).

    python benchmarks/bench_concurrency.py [--job table1-seed|table1|quick] [--repeats 1]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
JOBS = {
    "table1-seed": ["mnist37-linear", "--scale", "paper", "--seeds", "1"],
    "table1": ["mnist37-linear", "--scale", "paper"],
    "quick": ["mnist37-linear", "--scale", "quick"],
}
MODES = {
    "torch defaults": {"BNROBUST_THREADS": "torch"},
    "bnrobust auto": {},
    "OMP_NUM_THREADS=1": {"OMP_NUM_THREADS": "1"},
}


def env_for(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "BNROBUST_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("BNROBUST_DATA", str(REPO.parent / "shared" / "data"))
    env["BNROBUST_NO_DOWNLOAD"] = "1"
    return {**env, **MODES[mode]}


def launch(job: list[str], mode: str, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "bnrobust", "run", *job, "--no-report", "--out", str(out)]
    out.mkdir(parents=True)
    with open(out / "stderr.txt", "w") as log:  # a file, not a pipe: a chatty child never blocks on it
        return subprocess.Popen(cmd, env=env_for(mode), stdout=subprocess.DEVNULL, stderr=log)


def compute_seconds(out: Path) -> float:
    return sum(json.loads(p.read_text())["seconds"] for p in out.glob("*/runs/*/record.json"))


def together(job: list[str], mode: str, k: int, limit: float) -> list[tuple[float, float, bool]]:
    """(wall s, compute s, stopped) of each of k processes started at once; a process still
    running after `limit` seconds is stopped: (limit, compute of its finished runs, True)."""
    with tempfile.TemporaryDirectory() as tmp:
        outs = [Path(tmp) / f"out{i}" for i in range(k)]
        t0 = time.perf_counter()
        procs = [launch(job, mode, out) for out in outs]
        walls: dict[int, tuple[float, bool]] = {}
        try:
            while len(walls) < k:  # each process's own end time
                for i, p in enumerate(procs):
                    if i not in walls and p.poll() is not None:
                        walls[i] = (time.perf_counter() - t0, False)
                        if p.returncode != 0:
                            raise SystemExit(f"bnrobust run failed ({mode}):\n"
                                             f"{(outs[i] / 'stderr.txt').read_text()[-2000:]}")
                if time.perf_counter() - t0 > limit:
                    walls.update({i: (limit, True) for i in range(k) if i not in walls})
                time.sleep(0.05)
        finally:
            for p in procs:  # only our own children
                if p.poll() is None:
                    p.kill()
                    p.wait()
        return [(walls[i][0], compute_seconds(out), walls[i][1]) for i, out in enumerate(outs)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--job", choices=JOBS, default="table1-seed")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--limit", type=float, default=600, help="stop a process group after this many seconds")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of: " + ", ".join(MODES))
    args = ap.parse_args()
    modes = [m.strip() for m in args.modes.split(",")]
    job = JOBS[args.job]
    alone = {m: [] for m in modes}
    pair = {m: [] for m in modes}
    for _ in range(args.repeats):
        for k, store in ((1, alone), (2, pair)):
            for m in modes:
                got = together(job, m, k, args.limit)
                store[m] += got
                print(f"  {m}, {k} at once: " + ", ".join(f"{'>' if x else ''}{w:.1f}s wall / {c:.1f}s cpu"
                                                           for w, c, x in got), flush=True)
    print(f"job: bnrobust run {' '.join(job)}  ({os.cpu_count()} CPUs; median of {args.repeats} repeat(s), "
          f"load average now {os.getloadavg()[0]:.1f})")
    print(f"{'threads':<20}{'alone wall':>11}{'pair wall':>11}{'slowdown':>10}"
          f"{'alone cpu':>11}{'pair cpu':>10}{'slowdown':>10}")
    for m in modes:
        aw, ac = (statistics.median(v) for v in zip(*[r[:2] for r in alone[m]]))
        pw, pc = (statistics.median(v) for v in zip(*[r[:2] for r in pair[m]]))
        a_stop, p_stop = any(r[2] for r in alone[m]), any(r[2] for r in pair[m])
        wall = lambda t, stop: f"{'>' if stop else ''}{t:.1f}s"  # noqa: E731
        ratio = "?" if a_stop else f"{'>' if p_stop else ''}{pw / aw:.2f}x"
        print(f"{m:<20}{wall(aw, a_stop):>11}{wall(pw, p_stop):>11}{ratio:>10}{ac:10.1f}s{pc:9.1f}s"
              + (f"{pc / ac:9.2f}x" if not (a_stop or p_stop) else f"{'?':>10}  (> : stopped at --limit)"))
    print("wall: process start to exit; cpu: the runs' own recorded seconds (of the runs finished); slowdown: "
          "side by side / alone (goal <= 2.5x)")


if __name__ == "__main__":
    main()
