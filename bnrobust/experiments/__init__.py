"""The registry of named experiments (ids as in the experiment catalogue)."""
from __future__ import annotations

from .base import Experiment
from ..errors import BnrobustError

EXPERIMENTS: dict[str, Experiment] = {}


def register(exp: Experiment) -> Experiment:
    if exp.id in EXPERIMENTS:
        raise ValueError(f"experiment {exp.id} registered twice")
    EXPERIMENTS[exp.id] = exp
    return exp


def get_experiment(exp_id: str) -> Experiment:
    if exp_id not in EXPERIMENTS:
        raise BnrobustError(f"unknown experiment {exp_id!r}; `bnrobust list` shows the {len(EXPERIMENTS)} "
                            f"available: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[exp_id]


from . import linear  # noqa: E402,F401  (registers the section A experiments)
from . import input_dim  # noqa: E402,F401  (section B)
from . import spheres  # noqa: E402,F401  (section C)
from . import depth_batch  # noqa: E402,F401  (section C, Figs. 2 and 6)
from . import lenet  # noqa: E402,F401  (section E, MNIST)
