"""The registry of named experiments (ids as in the experiment catalogue).

To add an experiment, write a module here that calls `register(Experiment(...))` and import it
below; `Experiment` checks its own definition when it is constructed."""
from __future__ import annotations

from ..registry import Registry
from .base import Experiment

EXPERIMENTS = Registry("experiment")


def register(exp: Experiment) -> Experiment:
    return EXPERIMENTS.register(exp.id)(exp)


def get_experiment(exp_id: str) -> Experiment:
    return EXPERIMENTS.get(exp_id)


from . import linear  # noqa: E402,F401  (registers the section A experiments)
from . import input_dim  # noqa: E402,F401  (section B)
from . import spheres  # noqa: E402,F401  (section C)
from . import depth_batch  # noqa: E402,F401  (section C, Figs. 2 and 6)
from . import cifar  # noqa: E402,F401  (section D, VGG on CIFAR-10)
from . import lenet  # noqa: E402,F401  (section E, MNIST)
from . import imagenet  # noqa: E402,F401  (section D, ImageNet: Tables 5 and 12)
from . import residual, cifar10c  # noqa: E402,F401  (section D, residual networks and CIFAR-10-C)
from . import svhn  # noqa: E402,F401  (sections D and E, SVHN)
