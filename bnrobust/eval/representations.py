"""How a model represents mini-batches: Fig. 8's batch mixing in numbers."""
from __future__ import annotations

from typing import Sequence

import torch

from ..errors import BnrobustError
from ..seeding import Stream, stream_seed

def two_minibatches(n: int, batch_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of two disjoint random mini-batches of a training set of n points (seeded)."""
    if not (isinstance(batch_size, int) and 2 <= batch_size <= n // 2):
        raise BnrobustError(f"batch_size must be an integer in 2..{n // 2} (two disjoint batches), got {batch_size!r}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(stream_seed(seed, Stream.MINIBATCHES)))
    return perm[:batch_size], perm[batch_size:2 * batch_size]


@torch.no_grad()
def batch_representations(model, x: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
    """Representations at `layers` (1-based hidden layers; 0 = the input) of ONE mini-batch passed
    through a copy of `model` in train mode, so BN normalizes it with that batch's own statistics."""
    import copy
    if not hasattr(model, "representations"):
        raise BnrobustError("this metric needs a model with .representations (e.g. deep-linear)")
    reps = [x.flatten(1)] + copy.deepcopy(model).train().representations(x)
    if max(layers) >= len(reps):
        raise BnrobustError(f"layers {list(layers)} exceed the model's {len(reps) - 1} hidden layers")
    return [reps[i] for i in layers]


def pca2(z: torch.Tensor) -> torch.Tensor:
    """The rows of z (float64) projected on their two principal components."""
    z = z.double() - z.double().mean(0)
    return z @ torch.linalg.svd(z, full_matrices=False)[2][:2].T


def quadratic_probe_accuracy(z: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy (%) on its own data of a least-squares fit of +-1 class targets on the quadratic
    features (1, z1, z2, z1^2, z2^2, z1 z2) of 2-D points. Two concentric circles, or any one
    affine image of them (concentric ellipses), are fitted exactly, so it gives 100% there."""
    z = z.double() / z.double().std().clamp_min(1e-300)
    f = torch.stack([torch.ones_like(z[:, 0]), z[:, 0], z[:, 1], z[:, 0] ** 2, z[:, 1] ** 2, z[:, 0] * z[:, 1]], 1)
    w = torch.linalg.lstsq(f, (2.0 * y.double() - 1)[:, None], driver="gelsd").solution
    return 100.0 * float(((f @ w)[:, 0] > 0).eq(y.bool()).double().mean())
