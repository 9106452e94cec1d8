"""Input perturbations: Gaussian noise, gradient attacks (FGSM, BIM/PGD), Carlini-Wagner L2 and
fooling images.

Every function takes a batch and returns a perturbed batch of the same shape; none changes the
model's mode or parameters. `ATTACKS` holds the ones a config can name (adversarial training,
`train.adversarial: {"name": "pgd", ...}`); its builders get model, x, y, clip and generator
from the caller. Written here rather than taken from AdverTorch or Foolbox so that one small,
readable implementation serves every device and model, including BN models that normalize with
the attacked batch's own statistics; the tests cross-check them against Foolbox.
"""
from __future__ import annotations

from ..registry import Registry

ATTACKS = Registry("attack", context=("model", "x", "y", "clip", "generator"))

from .gradient import NORMS, TARGETS, awgn, fgsm, pgd  # noqa: E402
from .cw import cw_l2, cw_l2_stats  # noqa: E402
from .fooling import fooling_images, fooling_trajectory, softmax_margin, target_grid  # noqa: E402

__all__ = ["ATTACKS", "NORMS", "TARGETS", "awgn", "fgsm", "pgd", "cw_l2", "cw_l2_stats", "fooling_images",
           "fooling_trajectory", "softmax_margin", "target_grid"]
