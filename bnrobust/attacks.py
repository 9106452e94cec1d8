"""Input perturbations: additive Gaussian noise and gradient attacks (FGSM, BIM/PGD).

All functions take a batch and return a perturbed batch of the same shape; they never
change the model's mode or parameters. Written here (rather than using AdverTorch or
Foolbox) so that one small, readable implementation serves every device and model,
including BN models that normalize with the statistics of the attacked batch itself;
the tests cross-check it against Foolbox.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .errors import BnrobustError

NORMS = ("linf", "l2")
TARGETS = ("none", "least-likely")


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    """l2 norm of each sample, shaped to broadcast against t."""
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.dim() - 1)))


def _clip(x: torch.Tensor, clip) -> torch.Tensor:
    return x if clip is None else x.clamp(clip[0], clip[1])


def _check(eps: float, norm: str) -> None:
    if norm not in NORMS:
        raise BnrobustError(f"attack norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if eps < 0:
        raise BnrobustError(f"attack eps must be >= 0, got {eps}")


def awgn(x: torch.Tensor, sigma: float, clip=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """x + N(0, sigma^2 I), clipped to the valid input range."""
    if sigma < 0:
        raise BnrobustError(f"noise sigma must be >= 0, got {sigma}")
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return _clip(x + sigma * noise, clip)


def _loss_grad(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Gradient of the summed cross-entropy w.r.t. x; negated for targeted attacks so that
    every caller steps *up* the returned direction."""
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), labels, reduction="sum")
    (g,) = torch.autograd.grad(loss, x)
    return -g if targeted else g


def _step(g: torch.Tensor, size: float, norm: str) -> torch.Tensor:
    return size * (g.sign() if norm == "linf" else g / _per_sample_norm(g))


def _project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return delta.clamp(-eps, eps)
    return delta * (eps / _per_sample_norm(delta)).clamp(max=1.0)


def _labels(model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: str) -> tuple[torch.Tensor, bool]:
    if target not in TARGETS:
        raise BnrobustError(f"attack target must be one of {', '.join(TARGETS)}, got {target!r}")
    if target == "least-likely":
        with torch.no_grad():
            return model(x).argmin(1), True
    return y, False


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str = "linf",
         clip=None, target: str = "none") -> torch.Tensor:
    """Fast gradient (sign) method: one step of size eps (Goodfellow et al., 2015)."""
    _check(eps, norm)
    labels, targeted = _labels(model, x, y, target)
    if eps == 0:
        return x.clone()
    return _clip(x + _step(_loss_grad(model, x, labels, targeted), eps, norm), clip).detach()


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, step_size: float,
        norm: str = "linf", random_start: bool = False, clip=None, target: str = "none",
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient descent (Madry et al., 2018); BIM (Kurakin et al., 2017) is
    pgd without random start. Each step moves by step_size, projects onto the eps-ball
    around x, then clips to the valid input range."""
    _check(eps, norm)
    if steps < 1 or step_size <= 0:
        raise BnrobustError(f"pgd needs steps >= 1 and step_size > 0, got {steps}, {step_size}")
    labels, targeted = _labels(model, x, y, target)
    if eps == 0:
        return x.clone()
    delta = torch.zeros_like(x)
    if random_start:
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        if norm == "linf":
            delta = eps * (2 * torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device) - 1)
        else:  # uniform in the l2 ball: random direction, radius eps * u^(1/d)
            u = torch.rand(len(x), generator=generator, dtype=x.dtype).to(x.device)
            radius = eps * u.pow(1.0 / x[0].numel()).view(-1, *([1] * (x.dim() - 1)))
            delta = noise / _per_sample_norm(noise) * radius
        delta = _clip(x + delta, clip) - x
    for _ in range(steps):
        g = _loss_grad(model, x + delta, labels, targeted)
        delta = _project(delta + _step(g, step_size, norm), eps, norm)
        delta = _clip(x + delta, clip) - x
    return (x + delta).detach()


# ---------------------------------------------------------------------------
# Unbounded attacks (appendix J): Carlini & Wagner L2 and fooling images

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


def softmax_margin(logits: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """The paper's "confidence" (App. J): the largest softmax output minus the second largest.
    With `target`, p_target - max_{i != target} p_i instead: the same number when the target
    is predicted, negative when it is not."""
    p = logits.softmax(1)
    if target is None:
        top2 = p.topk(2, dim=1).values
        return top2[:, 0] - top2[:, 1]
    return _logit_margin(p, target)


def fooling_trajectory(model: nn.Module, n_per_class: int, num_classes: int, shape: tuple[int, ...],
                       steps: int, record_at: tuple[int, ...] | list[int] = (), step_size: float = 0.2,
                       init_std: float = 0.1, clip=(0.0, 1.0), generator: torch.Generator | None = None,
                       device: torch.device | str | None = None) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """Fooling images (Nguyen et al., 2015) as in the paper's App. J: white noise, then `steps`
    targeted PGD-l2 steps (normalized cross-entropy gradient times step_size, clipped to the
    valid range, no eps-ball) towards each class, n_per_class images per class, all at once.

    Returns ({step: images after that many steps} for every step in record_at (0 = the start)
    and for `steps`, targets). The paper's start "N(0, 0.1)" is read as standard deviation 0.1
    (numpy's normal(0, 0.1)); pass init_std=0.1 ** 0.5 for the variance reading. The start is
    clipped too, so every recorded image is a valid input."""
    if n_per_class < 1 or num_classes < 2 or steps < 0 or step_size <= 0 or init_std < 0:
        raise BnrobustError(f"fooling images need n_per_class >= 1, num_classes >= 2, steps >= 0, "
                            f"step_size > 0 and init_std >= 0, got {n_per_class}, {num_classes}, "
                            f"{steps}, {step_size}, {init_std}")
    if any(not 0 <= s <= steps for s in record_at):
        raise BnrobustError(f"record_at must lie in 0..{steps}, got {list(record_at)}")
    if device is None:
        device = next(model.parameters(), torch.zeros(())).device
    targets = torch.arange(num_classes, device=device).repeat_interleave(n_per_class)
    noise = torch.randn((len(targets), *shape), generator=generator)
    x = _clip((init_std * noise).to(device), clip)
    keep = set(record_at) | {steps}
    out = {0: x.clone()} if 0 in keep else {}
    for i in range(1, steps + 1):
        x = _clip(x + _step(_loss_grad(model, x, targets, True), step_size, "l2"), clip).detach()
        if i in keep:
            out[i] = x.clone()
    return out, targets


def fooling_images(model: nn.Module, n_per_class: int, num_classes: int, shape: tuple[int, ...], steps: int,
                   step_size: float = 0.2, init_std: float = 0.1, clip=(0.0, 1.0),
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The fooling images after `steps` steps, and their targets (see fooling_trajectory)."""
    out, targets = fooling_trajectory(model, n_per_class, num_classes, shape, steps, (), step_size, init_std,
                                      clip, generator)
    return out[steps], targets
