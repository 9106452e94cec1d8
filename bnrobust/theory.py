"""Mean-field theory of batch norm at initialization: the gradient explosion rate of a
batch-normalized ReLU MLP as a function of the batch size B, and the "maximum trainable
depth" line drawn (dashed) over the depth x batch-size heatmaps of the paper's Fig. 2 / Fig. 6.

Source: G. Yang, J. Pennington, V. Rao, J. Sohl-Dickstein, S. S. Schoenholz, "A Mean Field
Theory of Batch Normalization", ICLR 2019 (arXiv:1902.08129).

* Theorem 3.10 (final/arXiv numbering; Theorem 8, eq. (25) of the OpenReview submission):
  "In a ReLU-batchnorm network, the gradient norm explodes exponentially at the rate of
  [lambda_G(B)] which decreases to pi/(pi-1) ~= 1.467 as B -> infinity." The rate is the
  factor by which the *squared* gradient norm (w.r.t. the pre-activations) grows per layer
  (Sec. 3: "by rate of gradient explosion we mean the beta such that the gradient norm
  squared grows as beta^L"). It is the largest eigenvalue lambda_G of the linearized
  backward dynamics at the BSB1 fixed point of the forward dynamics. For ReLU (alpha = 1 in
  eq. (25)), with c = -1/(B-1), the arccosine kernel J(c) = (sqrt(1-c^2) + (pi - arccos c) c)/pi
  (J(1) = 1) and J'(c) = (pi - arccos c)/pi:

      lambda_G(B) = (J'(c) + (B - 1)) / ((B - 3) (1 - J(c)))  -  1/(B - 3).

  The theory assumes infinite width, gamma = 1, beta = 0, batch-norm epsilon = 0, gradient
  independence, a forward pass that has converged to its BSB1 fixed point (deep layers), and
  B >= 4 ("In order to avoid degenerate results, we assume B >= 4"; the (B-3) factors come
  from E[1/chi^2_{B-1}]). It does not depend on the weight variance (batch norm is scale
  invariant). The text extraction of the final version we could read lost the displayed
  formula of Thm 3.10, so the formula above is the submission's eq. (25) at alpha = 1; it
  reproduces the stated limit, and `mean_field_gradient_growth_mc` (our own independent
  derivation of the same eigenvalue, evaluated by Monte Carlo) and `empirical_gradient_growth`
  (a finite-width torch network) agree with it (tests/test_theory.py).

* The dashed line. Sec. 4: "We quantify the depth scale over which gradients explode by
  xi = 1/log lambda_G ... Across many different experiments we will see strong agreement
  between xi and the maximum trainable depth." and, for their Fig. 2 (ReLU, N = 384,
  eta = 1e-5 B, MNIST, the experiment our paper repeats): "we plot the test accuracy after
  training as a function of the depth and the batch size and overlay 16 xi in white dashed
  lines." So L_max(B) = 16 / log lambda_G(B), i.e. the depth at which the squared gradient
  norm has grown by e^16 ~= 9e6. The 16 is an empirical multiple chosen by Yang et al.; it is
  the `depth_scale_multiple` keyword below.
"""
from __future__ import annotations

import math
import operator

from .errors import BnrobustError

MIN_BATCH_SIZE = 4
"""Smallest batch size the theorem covers (Yang et al. 2019 assume B >= 4)."""

YANG_DEPTH_SCALE_MULTIPLE = 16.0
"""Yang et al. (2019), Sec. 4 / Fig. 2: the dashed line is 16 xi, xi = 1/log lambda_G."""

RELU_LARGE_BATCH_LIMIT = math.pi / (math.pi - 1.0)
"""lim_{B -> inf} lambda_G(B) for ReLU (Thm 3.10), ~= 1.467."""


def _check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool):
        raise BnrobustError(f"batch_size must be an integer >= {MIN_BATCH_SIZE}, got {batch_size!r}")
    try:
        b = operator.index(batch_size)
    except TypeError:
        raise BnrobustError(
            f"batch_size must be an integer >= {MIN_BATCH_SIZE}, got {batch_size!r}") from None
    if b < MIN_BATCH_SIZE:
        raise BnrobustError(
            f"batch_size must be >= {MIN_BATCH_SIZE} for the mean-field BN theory "
            f"(Yang et al. 2019 assume B >= 4), got {b}")
    return b


def _arccos_kernel(c: float) -> float:
    """Degree-1 arccosine kernel J(c) = E[relu(u) relu(w)] / E[relu(u)^2], corr(u, w) = c."""
    return (math.sqrt(1.0 - c * c) + (math.pi - math.acos(c)) * c) / math.pi


def _arccos_kernel_deriv(c: float) -> float:
    return (math.pi - math.acos(c)) / math.pi


def bn_relu_gradient_growth(batch_size: int) -> float:
    """lambda_G(B): per-layer growth factor of the squared gradient norm in a deep,
    infinitely wide batch-normalized ReLU MLP at initialization (Yang et al. 2019, Thm 3.10;
    closed form, see the module docstring). > 1 for every B >= 4, decreasing in B, -> pi/(pi-1).

    Raises BnrobustError unless batch_size is an integer >= 4.
    """
    b = _check_batch_size(batch_size)
    c = -1.0 / (b - 1)
    return (_arccos_kernel_deriv(c) + (b - 1)) / ((b - 3) * (1.0 - _arccos_kernel(c))) - 1.0 / (b - 3)


def bn_linear_gradient_growth(batch_size: int) -> float:
    """The same rate for a *linear* batch-normalized network: (B-2)/(B-3) (Yang et al. 2019,
    Thm 3.9/3.10), the minimum over all nonlinearities; -> 1 as B -> infinity."""
    b = _check_batch_size(batch_size)
    return (b - 2) / (b - 3)


def depth_scale(batch_size: int) -> float:
    """xi(B) = 1 / log lambda_G(B): layers over which the squared gradient norm grows by e."""
    return 1.0 / math.log(bn_relu_gradient_growth(batch_size))


def max_trainable_depth(batch_size: int, *,
                        depth_scale_multiple: float = YANG_DEPTH_SCALE_MULTIPLE) -> float:
    """Theoretical maximum trainable depth of a batch-normalized ReLU MLP (the dashed line of
    the paper's Fig. 2 / Fig. 6): depth_scale_multiple * xi(B) = multiple / log lambda_G(B).

    depth_scale_multiple defaults to 16, the multiple Yang et al. (2019, Sec. 4) overlay on
    their Fig. 2 ("overlay 16 xi in white dashed lines"). Increases with B and plateaus at
    16 / log(pi/(pi-1)) ~= 41.8 layers.
    """
    try:
        m = float(depth_scale_multiple)
    except (TypeError, ValueError):
        raise BnrobustError(
            f"depth_scale_multiple must be a positive number, got {depth_scale_multiple!r}") from None
    if not (m > 0 and math.isfinite(m)):
        raise BnrobustError(f"depth_scale_multiple must be a positive number, got {depth_scale_multiple!r}")
    return m * depth_scale(batch_size)


def mean_field_gradient_growth_mc(batch_size: int, n_samples: int = 200_000, seed: int = 0) -> float:
    """Independent Monte-Carlo evaluation of lambda_G(B) (infinite width, fixed seed), used to
    check the closed form. Our own derivation, under the same assumptions as the theorem:

    At the BSB1 fixed point Sigma*, G Sigma* G = mu* G (G = I - 11^T/B), so x = G h is
    isotropic in the zero-sum subspace: x = r v, r^2 ~ mu* chi^2_{B-1}, v uniform on the unit
    sphere of that subspace, independent. BN-then-ReLU has Jacobian
    J = D (sqrt(B)/r) (G - v v^T), D = diag(1[v > 0]); gradients evolve as Pi -> E[J^T Pi J]
    (gradient independence, sigma_w^2 = 1), whose eigenvalue on Pi = G is
        lambda_G = E[B/r^2] E[tr(D G D (G - v v^T))] / (B-1),  E[B/r^2] = B / (mu* (B-3)),
    with mu* = Sigma*_11 - Sigma*_12 and Sigma* = E[relu(sqrt(B) v) relu(sqrt(B) v)^T].
    """
    import numpy as np

    b = _check_batch_size(batch_size)
    if operator.index(n_samples) < 1000:
        raise BnrobustError(f"n_samples must be >= 1000, got {n_samples}")
    rng = np.random.default_rng(seed)
    diag = off = q = 0.0
    done = 0
    while done < n_samples:
        n = min(50_000, n_samples - done)
        x = rng.standard_normal((n, b))
        x -= x.mean(axis=1, keepdims=True)
        v = x / np.linalg.norm(x, axis=1, keepdims=True)
        pos = v > 0
        k = pos.sum(axis=1)
        s1 = np.where(pos, v, 0.0).sum(axis=1)          # sum of positive coordinates
        s2 = np.where(pos, v * v, 0.0).sum(axis=1)      # sum of their squares
        # forward fixed point: relu(sqrt(B) v); sum_i relu_i^2 = B s2, (sum_i relu_i)^2 = B s1^2
        diag += (b * s2).sum() / b
        off += (b * s1 * s1 - b * s2).sum() / (b * (b - 1))
        # tr(D G D P), P = G - v v^T: tr(D P) - d^T P d / B with d = D 1
        q += (k * (1 - 1 / b) - s2 - (k - k * k / b - s1 * s1) / b).sum()
        done += n
    mu = (diag - off) / n_samples
    return b / (mu * (b - 3)) * (q / n_samples) / (b - 1)


def empirical_gradient_growth(batch_size: int, width: int = 512, depth: int = 30, seed: int = 0,
                              n_networks: int = 2, skip_first: int = 10, skip_last: int = 5,
                              eps: float = 0.0) -> float:
    """Measured per-layer growth of the squared gradient norm in an actual BN-ReLU MLP at init.

    Builds `n_networks` nets h^l = W^l relu(BN(h^{l-1})) (W entries N(0, 1/width), gamma = 1,
    beta = 0, batch statistics, BN epsilon `eps`) on a Gaussian input batch, backpropagates a
    random linear readout of the last layer, and fits log ||dLoss/dh^l||^2 against l over the
    layers skip_first .. depth-skip_last-1 (after the forward pass has reached its fixed point,
    before the readout transient). Returns the mean over networks of exp(-slope), i.e. the
    growth factor per layer going backwards, comparable to bn_relu_gradient_growth(B).
    """
    import torch

    b = _check_batch_size(batch_size)
    for name, val, lo in (("width", width, 1), ("depth", depth, 1), ("n_networks", n_networks, 1),
                          ("skip_first", skip_first, 0), ("skip_last", skip_last, 0)):
        if isinstance(val, bool) or not isinstance(val, int) or val < lo:
            raise BnrobustError(f"{name} must be an integer >= {lo}, got {val!r}")
    if depth - skip_first - skip_last < 3:
        raise BnrobustError(
            f"depth - skip_first - skip_last must be >= 3 layers to fit a rate, got "
            f"{depth} - {skip_first} - {skip_last}")
    if not eps >= 0:
        raise BnrobustError(f"eps must be >= 0, got {eps!r}")

    gen = torch.Generator().manual_seed(seed)
    rates = []
    for _ in range(n_networks):
        h = torch.randn(b, width, generator=gen).requires_grad_(True)
        pre = []
        for _ in range(depth):
            w = torch.randn(width, width, generator=gen) / math.sqrt(width)
            h = h @ w.T
            h.retain_grad()
            pre.append(h)
            h = torch.relu((h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + eps))
        readout = torch.randn(b, width, generator=gen)
        (h * readout).sum().backward()
        logn = torch.tensor([math.log(float((t.grad.double() ** 2).sum()))
                             for t in pre[skip_first:depth - skip_last]], dtype=torch.float64)
        idx = torch.arange(len(logn), dtype=torch.float64)
        idx -= idx.mean()
        slope = float((idx * (logn - logn.mean())).sum() / (idx * idx).sum())
        rates.append(math.exp(-slope))
    return sum(rates) / len(rates)
