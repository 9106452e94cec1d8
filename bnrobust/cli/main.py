"""The `bnrobust` command: list, run and report experiments."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from ..errors import BnrobustError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise BnrobustError(f"{message} (see `{self.prog} --help`)")


def _parse_set(items: list[str]) -> dict:
    overrides = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BnrobustError(f"--set expects KEY=VALUE (e.g. train.epochs=5), got {item!r}")
        try:
            parsed = yaml.safe_load(value)
            if isinstance(parsed, str):  # YAML 1.1 reads 1e30 as a string
                try:
                    parsed = float(parsed)
                except ValueError:
                    pass
            overrides[key.strip()] = parsed
        except yaml.YAMLError:
            raise BnrobustError(f"--set {key}: cannot parse value {value!r}") from None
    return overrides


def _parse_shard(text: str | None) -> tuple[int, int]:
    if not text:
        return (0, 1)
    try:
        i, n = (int(t) for t in text.split("/"))
    except ValueError:
        raise BnrobustError(f"--shard expects I/N (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise BnrobustError(f"--shard I/N needs 0 <= I < N, got {text!r}")
    return (i, n)


def _executor(args) -> str | dict:
    """The --executor spec, with the Ray options when given; they go with --executor ray only."""
    ray_opts = {"address": args.address, "gpus_per_run": args.gpus_per_run, "cpus_per_run": args.cpus_per_run}
    given = [f"--{k.replace('_', '-')}" for k, v in ray_opts.items() if v is not None]
    if args.executor != "ray":
        if given:
            what = "is an option" if len(given) == 1 else "are options"
            raise BnrobustError(f"{', '.join(given)} {what} of --executor ray (this is --executor {args.executor})")
        return args.executor
    if args.gpus_per_run is not None and not args.gpus_per_run >= 0:
        raise BnrobustError(f"--gpus-per-run must be >= 0, got {args.gpus_per_run:g}")
    if args.cpus_per_run is not None and not args.cpus_per_run > 0:
        raise BnrobustError(f"--cpus-per-run must be > 0, got {args.cpus_per_run:g}")
    if args.address is not None and not args.address.strip():
        raise BnrobustError("--address must name a Ray cluster (HEAD_IP:6379 or auto)")
    return {"name": "ray", **{k: v for k, v in ray_opts.items() if v is not None}}


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="bnrobust", description="Reproduce 'Batch Normalization Increases Adversarial "
                                             "Vulnerability' experiment by experiment.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    lst = sub.add_parser("list", help="list experiments, or models, datasets, norms, attacks, metrics, corruptions")
    lst.add_argument("what", nargs="?", default="experiments", choices=LISTABLE,
                     help="what to list (default: experiments)")

    def common(sp):
        sp.add_argument("experiment", nargs="+", help="experiment id(s), see `bnrobust list`")
        sp.add_argument("--scale", choices=("quick", "paper"), default="quick",
                        help="quick: minutes on a laptop CPU; paper: the paper's settings (default: quick)")
        sp.add_argument("--out", default="results", help="results directory (default: ./results)")
        sp.add_argument("--data-dir", help="dataset root (default: $BNROBUST_DATA, else ~/.cache/bnrobust)")
        sp.add_argument("--weights", metavar="DIR", help="folder of pretrained weights files (default: "
                        "$BNROBUST_WEIGHTS, then the torch hub cache $TORCH_HOME/hub/checkpoints)")

    r = sub.add_parser("run", help="run an experiment's sweep (resumes; skips finished runs) and report it")
    common(r)
    r.add_argument("--seeds", type=int, help="number of seeds (default: the experiment's for this scale)")
    r.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value for every run, e.g. --set train.epochs=5 (repeatable)")
    r.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    r.add_argument("--force", action="store_true", help="re-run finished runs")
    r.add_argument("--shard", help="I/N: run only every N-th run starting at I (split a sweep over machines)")
    r.add_argument("--variant", action="append", metavar="NAME",
                   help="run only this variant (a row of the report, e.g. 'ResNet32 Fixup'; repeatable; "
                        "one experiment only)")
    r.add_argument("--no-report", action="store_true", help="skip writing the report (e.g. for shards)")
    r.add_argument("--no-stack", action="store_true",
                   help="train every run alone (default: runs that can, train seed-stacked; $BNROBUST_STACK=0 too)")
    r.add_argument("--executor", default="local", help="how runs are computed (`bnrobust list executors`; "
                                                       "default: local, one after another in this process; ray: "
                                                       "as Ray tasks on every core/GPU of this machine or a cluster)")
    r.add_argument("--address", help="with --executor ray: join the Ray cluster at ADDR (HEAD_IP:6379, or auto for "
                                     "the one this machine joined with `ray start`; default: $RAY_ADDRESS, else a new "
                                     "local Ray on this machine)")
    r.add_argument("--gpus-per-run", type=float, metavar="G",
                   help="with --executor ray: GPUs each run reserves (default 0; 0.25 puts four runs on one GPU)")
    r.add_argument("--cpus-per-run", type=float, metavar="C",
                   help="with --executor ray: CPU cores each run reserves and uses as threads (default 1)")
    rep = sub.add_parser("report", help="write the report of an experiment's finished runs")
    common(rep)
    cor = sub.add_parser("corruptions", help="list the MNIST-C / CIFAR-10-C corruptions, or draw them (--show)")
    cor.add_argument("--show", action="store_true", help="write a grid PNG of every corruption and severity")
    cor.add_argument("--suite", choices=("mnist", "cifar10"), help="one suite only (default: both)")
    cor.add_argument("--out", default="results/corruptions", help="folder for the PNGs (default: results/corruptions)")
    cor.add_argument("--data-dir", help="dataset root (default: $BNROBUST_DATA, else ~/.cache/bnrobust)")
    cor.add_argument("--seed", type=int, default=0, help="corruption seed (default: 0)")
    return p


LISTABLE = ("experiments", "models", "datasets", "norms", "attacks", "metrics", "corruptions", "executors")


def _registries() -> dict:
    from ..attacks import ATTACKS
    from ..data import DATASETS
    from ..eval import EVALS
    from ..models import MODELS, NORMS
    from ..runner.executors import EXECUTORS
    return {"models": MODELS, "datasets": DATASETS, "norms": NORMS, "attacks": ATTACKS, "metrics": EVALS,
            "executors": EXECUTORS}


def cmd_list(what: str = "experiments") -> None:
    if what == "experiments":
        from ..experiments import EXPERIMENTS
        width = max(len(e) for e in EXPERIMENTS)
        for _, exp in EXPERIMENTS.items():
            print(f"{exp.id:<{width}}  {exp.paper:<26}  {exp.title}")
    elif what == "corruptions":
        from .. import corruptions as C
        for suite in C.SUITES:
            print(f"{suite}: {', '.join(C.corruption_names(suite))}")
    else:
        reg = _registries()[what]
        width = max(len(n) for n in reg)
        for name in reg:
            print(f"{name:<{width}}  {reg.describe(name)}")


def _selected(by_key: dict[str, list[str]], variants: list[str] | None) -> dict[str, list[str]]:
    """The part of a {--set key: variant names} note that concerns the --variant selection."""
    if not variants:
        return by_key
    return {key: kept for key, names in by_key.items() if (kept := [v for v in names if v in variants])}


def cmd_run(args) -> None:
    from ..experiments import get_experiment
    from ..runner.executors import EXECUTORS
    from ..runner.sweep import check_variants, sweep
    from ..report import write_report
    exps = [get_experiment(e) for e in args.experiment]  # unknown ids fail before any work
    overrides, shard = _parse_set(args.set), _parse_shard(args.shard)
    if args.seeds is not None and args.seeds < 1:
        raise BnrobustError(f"--seeds must be a positive integer, got {args.seeds}")
    if "seed" in overrides:
        raise BnrobustError("--set seed=... is not a config value: every run's seed comes from --seeds N "
                            "(seeds 0..N-1)")
    if args.variant and len(exps) > 1:
        raise BnrobustError("--variant needs exactly one experiment id")
    out = _out(args)
    executor = _executor(args)
    EXECUTORS.build(executor, "--executor").device(args.device)  # Ray installed? --device fits the executor?
    for exp in exps:
        exp.configs(args.scale, args.seeds, overrides)  # validate every config before running any
        check_variants(exp, args.scale, args.variant)
        for key, variants in _selected(exp.shadowed(args.scale, overrides), args.variant).items():
            print(f"bnrobust: note: --set {key} overrides what {exp.id}'s variant(s) {', '.join(variants)} "
                  "set themselves", file=sys.stderr)
        for key, variants in _selected(exp.not_applied(args.scale, overrides), args.variant).items():
            print(f"bnrobust: note: --set {key} does not apply to {exp.id}'s variant(s) {', '.join(variants)}, "
                  "which switch that section off or have no such option", file=sys.stderr)
    for exp in exps:
        results = sweep(exp, out, args.scale, args.seeds, overrides, _root(args), args.device,
                        args.force, shard, executor=executor, stack=False if args.no_stack else None,
                        variants=args.variant)
        if not args.no_report:
            path = write_report(results, out / exp.id / args.scale)
            print(f"{exp.id}: report written to {path}")


def cmd_report(args) -> None:
    from ..runner.sweep import load_results
    from ..experiments import get_experiment
    from ..report import write_report
    for exp in [get_experiment(e) for e in args.experiment]:
        results = load_results(exp, _out(args), args.scale, _root(args))
        print(f"{exp.id}: report written to {write_report(results, _out(args) / exp.id / args.scale)}")


def cmd_corruptions(args) -> None:
    from .. import corruptions as C
    from ..data.cifar10 import cifar10_layout
    suites = [args.suite] if args.suite else list(C.SUITES)
    if not args.show:
        for suite in suites:
            levels = C.SEVERITIES[suite]
            sev = "one severity" if len(levels) == 1 else f"severities {levels[0]}..{levels[-1]}"
            print(f"{suite} ({sev}): {', '.join(C.corruption_names(suite))}")
        return
    root, out = _root(args), _out(args)
    if out.exists() and not out.is_dir():
        raise BnrobustError(f"--out {out} is a file; give a folder for the PNGs")
    for suite in suites:
        if suite == "mnist":
            if (root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").exists():
                from ..data import load_mnist_arrays
                images = load_mnist_arrays(root, download=False)[2][:4]
            else:
                print(f"mnist: no MNIST under {root}; using synthetic digit-like images")
                images = C.synthetic_digits(4, seed=args.seed)
        elif cifar10_layout(root) is not None:
            images = C.load_cifar10_arrays(root)[2][:1]
        else:
            print(f"cifar10: no CIFAR-10 under {root}; using synthetic images (smooth random colours)")
            images = C.synthetic_color_images(1, seed=args.seed)
        print(C.show_grid(images, suite, out / f"corruptions_{suite}.png", seed=args.seed))


def _out(args) -> Path:
    if not args.out or not args.out.strip():
        raise BnrobustError("--out must name a folder (default: results)")
    return Path(args.out)


def _root(args) -> Path:
    from ..data import data_root
    return data_root(args.data_dir)


def main(argv: list[str] | None = None) -> int:
    from ..threads import configure_env
    try:
        configure_env()  # before torch loads: concurrent bnrobust processes share the cores
        args = build_parser().parse_args(argv)
        if getattr(args, "weights", None):  # read by bnrobust.models.weights, here and in worker processes
            os.environ["BNROBUST_WEIGHTS"] = args.weights
        if args.command == "list":
            cmd_list(args.what)
        elif args.command == "run":
            cmd_run(args)
        elif args.command == "corruptions":
            cmd_corruptions(args)
        else:
            cmd_report(args)
    except BnrobustError as e:
        print(f"bnrobust: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `bnrobust list | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # a fault of the file system (permissions, disk full, a file where a folder must be)
        where = f"{e.filename}: " if e.filename else ""
        print(f"bnrobust: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bnrobust: interrupted; finished runs are saved, run the same command again to resume",
              file=sys.stderr)
        return 130
    return 0
