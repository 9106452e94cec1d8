"""Theory of the dashed 'maximum trainable depth' line (Yang et al. 2019, Thm 3.10, Sec. 4)."""
from __future__ import annotations

import math

import pytest

from bnrobust import theory
from bnrobust.errors import BnrobustError

BATCHES = [4, 5, 6, 8, 10, 16, 20, 32, 50, 64, 100, 128, 250, 500, 1000]
LIMIT = math.pi / (math.pi - 1)


def test_growth_exceeds_one_and_the_linear_rate():
    for b in BATCHES:
        lam = theory.bn_relu_gradient_growth(b)
        assert lam > 1.0
        # Thm 3.9: linear phi minimizes the rate, at (B-2)/(B-3)
        assert lam > theory.bn_linear_gradient_growth(b) > 1.0


def test_growth_decreases_in_batch_size_towards_pi_over_pi_minus_one():
    lams = [theory.bn_relu_gradient_growth(b) for b in range(4, 400)]
    assert all(a > b for a, b in zip(lams, lams[1:]))
    assert all(lam > LIMIT for lam in lams)
    assert theory.RELU_LARGE_BATCH_LIMIT == pytest.approx(1.4669, abs=1e-4)
    assert theory.bn_relu_gradient_growth(10**6) == pytest.approx(LIMIT, rel=1e-5)
    assert theory.bn_relu_gradient_growth(250) == pytest.approx(LIMIT, rel=0.01)
    assert theory.bn_linear_gradient_growth(10**6) == pytest.approx(1.0, abs=1e-5)


def test_closed_form_pinned_values():
    # regression values of Yang et al. eq. (25) at alpha = 1 (ReLU)
    assert theory.bn_relu_gradient_growth(4) == pytest.approx(3.08406, rel=1e-4)
    assert theory.bn_relu_gradient_growth(5) == pytest.approx(2.27371, rel=1e-4)
    assert theory.bn_relu_gradient_growth(10) == pytest.approx(1.69601, rel=1e-4)
    assert theory.bn_relu_gradient_growth(100) == pytest.approx(1.48336, rel=1e-4)


@pytest.mark.parametrize("b", [4, 5, 10, 50])
def test_closed_form_matches_independent_mean_field_monte_carlo(b):
    mc = theory.mean_field_gradient_growth_mc(b, n_samples=100_000, seed=1)
    assert mc == pytest.approx(theory.bn_relu_gradient_growth(b), rel=0.01)


def test_max_depth_increases_and_plateaus():
    depths = [theory.max_trainable_depth(b) for b in range(4, 400)]
    assert all(a < b for a, b in zip(depths, depths[1:]))
    plateau = 16 / math.log(LIMIT)
    assert plateau == pytest.approx(41.76, abs=0.01)
    assert all(d < plateau for d in depths)
    d = {b: theory.max_trainable_depth(b) for b in (5, 10, 20, 50, 100, 250)}
    assert d[5] < 0.5 * plateau                      # small batches: shallow limit
    assert d[250] > 0.98 * plateau                   # large batches: on the plateau
    assert d[250] - d[100] < 0.25 * (d[10] - d[5])   # quickly plateaus
    assert plateau < 50                              # "deeper than about 50 layers are untrainable"


def test_depth_scale_multiple_is_explicit():
    assert theory.YANG_DEPTH_SCALE_MULTIPLE == 16.0
    b = 32
    xi = 1 / math.log(theory.bn_relu_gradient_growth(b))
    assert theory.depth_scale(b) == pytest.approx(xi)
    assert theory.max_trainable_depth(b) == pytest.approx(16 * xi)
    assert theory.max_trainable_depth(b, depth_scale_multiple=1.0) == pytest.approx(xi)
    for bad in (0, -1.0, float("nan"), float("inf"), "x"):
        with pytest.raises(BnrobustError):
            theory.max_trainable_depth(b, depth_scale_multiple=bad)


@pytest.mark.parametrize("bad", [3, 2, 1, 0, -5, 4.5, 10.0, True, "10", None])
def test_bad_batch_size_raises_one_line_error(bad):
    for fn in (theory.bn_relu_gradient_growth, theory.max_trainable_depth,
               theory.bn_linear_gradient_growth, theory.depth_scale):
        with pytest.raises(BnrobustError) as info:
            fn(bad)
        assert "\n" not in str(info.value) and "batch_size" in str(info.value)


def test_empirical_bad_arguments_raise():
    with pytest.raises(BnrobustError):
        theory.empirical_gradient_growth(3)
    with pytest.raises(BnrobustError):
        theory.empirical_gradient_growth(10, depth=10, skip_first=5, skip_last=4)
    with pytest.raises(BnrobustError):
        theory.empirical_gradient_growth(10, width=0)


@pytest.mark.parametrize("b", [10, 50])
def test_finite_width_network_matches_theory(b):
    """A width-512 BN-ReLU MLP at init: measured per-layer squared-gradient growth is within
    15% of lambda_G(B), and so is its log (the rate that sets the depth scale)."""
    measured = theory.empirical_gradient_growth(b, width=512, depth=30, seed=0, n_networks=2)
    lam = theory.bn_relu_gradient_growth(b)
    assert measured == pytest.approx(lam, rel=0.15)
    assert math.log(measured) == pytest.approx(math.log(lam), rel=0.15)
