"""Fooling images (Nguyen et al., 2015) grown from noise by targeted PGD-l2 (appendix J)."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import BnrobustError
from .cw import _logit_margin
from .gradient import _clip, _loss_grad, _step


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


def target_grid(model: nn.Module, sources: torch.Tensor, num_classes: int, step_size: float = 0.05,
                margin: float = 0.9, max_steps: int = 1000, clip=None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Fig. 15's source-to-target grid: every source image is pushed towards every class by
    targeted BIM-l2 steps (normalized cross-entropy gradient times step_size, clipped to the valid
    range, no eps-ball) until the grid's mean target margin (p_target - max other p) reaches
    `margin`, or max_steps. Returns (images [S, num_classes, ...], target margins [S, num_classes],
    steps taken); the row of a source's own class starts at the natural image."""
    if step_size <= 0 or max_steps < 1 or not 0 < margin < 1:
        raise BnrobustError(f"the target grid needs step_size > 0, max_steps >= 1 and 0 < margin < 1, got "
                            f"{step_size}, {max_steps}, {margin}")
    s = len(sources)
    targets = torch.arange(num_classes, device=sources.device).repeat(s)
    x = sources.repeat_interleave(num_classes, 0).clone()
    steps = 0
    with torch.no_grad():
        m = softmax_margin(model(x), targets)
    while float(m.mean()) < margin and steps < max_steps:
        x = _clip(x + _step(_loss_grad(model, x, targets, True), step_size, "l2"), clip).detach()
        steps += 1
        with torch.no_grad():
            m = softmax_margin(model(x), targets)
    return x.view(s, num_classes, *sources.shape[1:]), m.view(s, num_classes), steps
