"""The registry of named experiments (ids as in the experiment catalogue).

To add an experiment, write a module here that calls `register(Experiment(...))` and name its
id and module in MODULES; `Experiment` checks its own definition when it is constructed.
`get_experiment` imports only the module of the experiment asked for: all of them, with scipy
and matplotlib, took ~1 s, a seventh of Table 1's whole run. `EXPERIMENTS` (every experiment,
in catalogue order) imports them all.
"""
from __future__ import annotations

import importlib

from ..registry import Registry
from .base import Experiment

_REGISTRY = Registry("experiment")

# id -> the module here that defines it, in the catalogue's order (tests/test_report.py checks
# that the modules register exactly these).
MODULES = {
    "toy-tilting": "linear", "mnist37-linear": "linear", "bn-eps-sweep-mnist": "linear",  # section A
    "bn-tracking": "linear",
    "input-dim-linear": "input_dim", "input-dim-mlp": "input_dim",  # section B
    "adv-spheres": "spheres", "spheres-representations": "spheres",  # section C
    "depth-batch-grid": "depth_batch",  # section C, Figs. 2 and 6
    "cifar10-small-lr": "cifar", "cifar10-vgg-depth": "cifar",  # section D, VGG on CIFAR-10
    "bn-eps-sweep-cifar": "cifar", "lr-schedule-curves": "cifar",
    "mnist-c": "lenet", "fooling-images": "lenet", "cw-l2": "lenet",  # section E, MNIST
    "imagenet-pretrained": "imagenet",  # section D, ImageNet: Tables 5 and 12
    "fixup-resnets": "residual", "eps-curves": "residual",  # section D, residual networks
    "cifar10-c": "cifar10c",
    "svhn-vgg": "svhn", "fooling-images-svhn": "svhn", "bim-l2-grid": "svhn",  # sections D and E, SVHN
}


def register(exp: Experiment) -> Experiment:
    return _REGISTRY.register(exp.id)(exp)


def get_experiment(exp_id: str) -> Experiment:
    """The experiment `exp_id`; an unknown id is a one-line error listing every id."""
    if exp_id not in MODULES:
        return all_experiments().get(exp_id)
    importlib.import_module(f"{__name__}.{MODULES[exp_id]}")
    return _REGISTRY.get(exp_id)


def all_experiments() -> Registry:
    """The registry with every experiment, in MODULES' order."""
    for module in dict.fromkeys(MODULES.values()):
        importlib.import_module(f"{__name__}.{module}")
    if list(_REGISTRY) != list(MODULES):
        _REGISTRY.reorder(list(MODULES))  # ValueError where a module registers an id MODULES lacks
    return _REGISTRY


def __getattr__(name: str):
    if name == "EXPERIMENTS":
        return all_experiments()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
