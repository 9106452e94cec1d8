"""Carlini & Wagner (2017) L2, an unbounded minimum-norm attack (appendix J)."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import BnrobustError

CW_BOUND_CHECK = 1e9   # an upper bound on c below this means some c already succeeded
CW_UPPER_INIT = 1e10   # "no successful c yet"
CW_ABORT_FRACTION = 0.9999  # abort Adam when the loss fell by less than 0.01% over a tenth of the budget


def _logit_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Z_y - max_{i != y} Z_i per sample: negative iff some other class beats y."""
    z_y = logits.gather(1, y[:, None])[:, 0]
    others = logits.scatter(1, y[:, None], float("-inf"))
    return z_y - others.max(1).values


def _to_box(clip):
    """The maps between x and the unconstrained variable w (x = mid + half * tanh(w)), so that
    Adam never has to clip; identity maps without a clip box."""
    if clip is None:
        return (lambda x: x), (lambda w: w)
    lo, hi = float(clip[0]), float(clip[1])
    if not hi > lo:
        raise BnrobustError(f"cw_l2 needs a clip range with max > min, got {clip}")
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    # 0.999999 (as Carlini's code) keeps atanh finite for pixels on the box's faces
    to_w = lambda x: torch.atanh(((x - mid) / half).clamp(-1, 1) * 0.999999)  # noqa: E731
    to_x = lambda w: mid + half * torch.tanh(w)  # noqa: E731
    return to_w, to_x


def cw_l2(model: nn.Module, x: torch.Tensor, y: torch.Tensor, confidence: float = 0.0, lr: float = 1e-2,
          binary_search_steps: int = 9, initial_const: float = 1e-3, max_iterations: int = 10000,
          abort_early: bool = True, clip=(0.0, 1.0)) -> torch.Tensor:
    """Untargeted Carlini & Wagner (2017) L2 attack: the smallest l2 perturbation that makes
    some other logit beat the label's by more than `confidence` (kappa).

    Per sample it minimizes ||x' - x||^2 + c * max(Z_y - max_{i!=y} Z_i + kappa, 0) over
    x' = tanh-box(w) with Adam on w, and binary-searches c (x10 until a success, then
    bisection; the last step reuses the upper bound when binary_search_steps >= 10), as in
    Carlini's l2_attack.py. Early abort compares the batch's total loss every
    max_iterations // 10 steps (starting from +inf, as Foolbox: the original's 1e6 would stop
    at once when a large c makes the first loss bigger). Inputs outside `clip` start from
    their projection onto it; clip=None drops the change of variables. A sample counts as broken when argmax(Z + kappa * onehot(y)) != y
    (as AdverTorch and Foolbox; the original subtracts kappa here for untargeted attacks).
    Returns the smallest-l2 success per sample and x itself where none was found, so
    model(adv).argmax(1) != y tells success. Leaves the model's mode and parameters alone:
    call it in eval mode, or BN's running statistics follow the attack's batches.
    """
    if confidence < 0 or lr <= 0 or initial_const <= 0:
        raise BnrobustError(f"cw_l2 needs confidence >= 0, lr > 0 and initial_const > 0, "
                            f"got {confidence}, {lr}, {initial_const}")
    if binary_search_steps < 1 or max_iterations < 1:
        raise BnrobustError(f"cw_l2 needs binary_search_steps >= 1 and max_iterations >= 1, "
                            f"got {binary_search_steps}, {max_iterations}")
    to_w, to_x = _to_box(clip)
    x = x.detach()
    shape = (-1, *([1] * (x.dim() - 1)))
    w0 = to_w(x)
    x_start = to_x(w0)  # x as the tanh map reproduces it: the origin of the distance term
    n, dev = len(x), x.device
    const = torch.full((n,), float(initial_const), dtype=torch.float64, device=dev)
    lower = torch.zeros(n, dtype=torch.float64, device=dev)
    upper = torch.full((n,), CW_UPPER_INIT, dtype=torch.float64, device=dev)
    best, best_l2 = x.clone(), torch.full((n,), float("inf"), dtype=x.dtype, device=dev)
    check_every = max(1, max_iterations // 10)
    for outer in range(binary_search_steps):
        if binary_search_steps >= 10 and outer == binary_search_steps - 1:
            const = upper.clone()
        w = w0.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=lr)  # fresh state for every c, as the original
        found = torch.zeros(n, dtype=torch.bool, device=dev)
        c = const.to(x.dtype)
        prev = float("inf")
        for it in range(max_iterations):
            adv = to_x(w)
            margin = _logit_margin(model(adv), y)
            dist = (adv - x_start).flatten(1).pow(2).sum(1)
            loss = dist.sum() + (c * (margin + confidence).clamp_min(0)).sum()
            (w.grad,) = torch.autograd.grad(loss, w)
            if abort_early and it % check_every == 0:
                if loss.item() > prev * CW_ABORT_FRACTION:
                    break
                prev = loss.item()
            with torch.no_grad():
                ok = margin + confidence < 0
                l2 = (adv - x).flatten(1).norm(dim=1)
                better = ok & (l2 < best_l2)
                best_l2 = torch.where(better, l2, best_l2)
                best = torch.where(better.view(shape), adv, best)
                found |= ok
            opt.step()
        upper = torch.where(found, torch.minimum(upper, const), upper)
        lower = torch.where(found, lower, torch.maximum(lower, const))
        const = torch.where(upper < CW_BOUND_CHECK, (lower + upper) / 2, torch.where(found, const, const * 10))
    return best.detach()


@torch.no_grad()
def cw_l2_stats(model: nn.Module, x: torch.Tensor, adv: torch.Tensor, y: torch.Tensor,
                confidence: float = 0.0) -> dict:
    """Per-sample `success` (some other logit beats y's by more than confidence) and `l2`
    (||adv - x||), plus `success_rate` (%) and the mean/median l2 over the successes
    (None when there are none): the numbers the paper reports for CW-L2."""
    success = _logit_margin(model(adv), y) + confidence < 0
    l2 = (adv - x).flatten(1).norm(dim=1)
    hit = l2[success]
    return {"success": success, "l2": l2, "success_rate": 100.0 * float(success.float().mean()),
            "l2_mean": float(hit.mean()) if len(hit) else None,
            "l2_median": float(hit.median()) if len(hit) else None}
