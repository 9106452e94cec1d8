"""Synthetic tasks: the 2-D Gaussian of Fig. 1 and the concentric spheres of App. H."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
from pydantic import Field

from ..errors import BnrobustError
from . import DATASETS
from .base import Dataset

PosInt = Annotated[int, Field(ge=1)]
Point = Annotated[list[float], Field(min_length=2, max_length=2)]


@DATASETS.register("gaussian-2d")
def gaussian_2d(root: Path, seed: int, mean0: Point = [-5.0, 0.0], mean1: Point = [5.0, 0.0],
                cov: Annotated[list[Point], Field(min_length=2, max_length=2)] = [[1.0, 0.05], [0.05, 0.01]],
                n_train: Annotated[int, Field(ge=2)] = 1000, n_test: PosInt = 10000) -> Dataset:
    """Fig. 1 task: x | y=j ~ N(nu_j, Sigma), y ~ Ber(0.5). Test points are fresh samples."""
    try:
        cov_t = torch.tensor(cov, dtype=torch.float64)
        means = torch.tensor([mean0, mean1], dtype=torch.float64)
    except (TypeError, ValueError):
        raise BnrobustError(f"data.mean0, data.mean1 and data.cov must be numbers, got {mean0}, {mean1}, {cov}") from None
    if means.shape != (2, 2):
        raise BnrobustError(f"data.mean0 and data.mean1 must be 2-D points, got {mean0}, {mean1}")
    if cov_t.shape != (2, 2) or not torch.allclose(cov_t, cov_t.T) or torch.linalg.eigvalsh(cov_t).min() <= 0:
        raise BnrobustError(f"data.cov must be a 2x2 symmetric positive definite matrix, got {cov}")
    if n_train < 2 or n_test < 1:
        raise BnrobustError("data.n_train must be >= 2 and data.n_test >= 1")
    g = torch.Generator().manual_seed(seed)
    chol = torch.linalg.cholesky(cov_t)

    def sample(n):
        y = torch.bernoulli(torch.full((n,), 0.5, dtype=torch.float64), generator=g).long()
        z = torch.randn(n, 2, generator=g, dtype=torch.float64)
        return (means[y] + z @ chol.T).float(), y

    x_train, y_train = sample(n_train)
    x_test, y_test = sample(n_test)
    return Dataset("gaussian-2d", x_train, y_train, x_test, y_test, 2, None)


@DATASETS.register("spheres")
def spheres(root: Path, seed: int, n_train: Annotated[int, Field(ge=2)] = 500, n_test_per_class: PosInt = 10000,
            radii: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=2, max_length=2)] = [1.0, 1.3],
            dim: PosInt = 2) -> Dataset:
    """"Adversarial spheres" (Gilmer et al., 2018): points of N(0, I) projected onto two
    concentric spheres (class 0 inner, class 1 outer). A fixed finite training set of
    n_train points (half per class) and fresh test points, n_test_per_class of each."""
    if not (isinstance(n_train, int) and n_train >= 2 and n_test_per_class >= 1 and dim >= 1):
        raise BnrobustError("data.n_train must be >= 2, data.n_test_per_class >= 1 and data.dim >= 1")
    if len(radii) != 2 or not 0 < radii[0] < radii[1]:
        raise BnrobustError(f"data.radii must be two radii 0 < r0 < r1, got {radii}")
    g = torch.Generator().manual_seed(seed)

    def sample(n0: int, n1: int):
        z = torch.randn(n0 + n1, dim, generator=g, dtype=torch.float64)
        y = torch.cat([torch.zeros(n0, dtype=torch.long), torch.ones(n1, dtype=torch.long)])
        r = torch.tensor(radii, dtype=torch.float64)[y]
        return (z / z.norm(dim=1, keepdim=True) * r[:, None]).float(), y

    x_train, y_train = sample(n_train // 2, n_train - n_train // 2)
    x_test, y_test = sample(n_test_per_class, n_test_per_class)
    return Dataset("spheres", x_train, y_train, x_test, y_test, 2, None)
