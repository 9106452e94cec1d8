"""The one SGD trainer every experiment uses."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .attacks import pgd

from .errors import BnrobustError

SCHEDULES = ("constant", "step", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 0.1
    lr_per_example: bool = False   # True: the step size is lr * batch_size (e.g. Yang et al.'s 1e-5 * B)
    epochs: int = 10
    batch_size: int = 128          # 0 = full batch (plain gradient descent)
    momentum: float = 0.0
    weight_decay: float = 0.0      # L2 penalty lambda: adds lambda * w to every parameter's gradient
    schedule: str = "constant"     # "step": multiply lr by `gamma` at each epoch in `milestones`
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    # PGD adversarial training (Madry et al., 2018) when adv_eps > 0: every batch is replaced by
    # l_inf PGD examples made with the model in eval mode, as AdverTorch's MNIST tutorial does.
    adv_eps: float = 0.0
    adv_steps: int = 20
    adv_step_size: float = 0.03
    adv_random_start: bool = True

    def __post_init__(self):
        def bad(name, what):
            raise BnrobustError(f"train.{name} must be {what}, got {getattr(self, name)!r}")
        num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
        if not (num(self.lr) and self.lr > 0):
            bad("lr", "a positive number")
        if not (isinstance(self.epochs, int) and self.epochs >= 0):
            bad("epochs", "an integer >= 0")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 0):
            bad("batch_size", "an integer >= 0 (0 = full batch)")
        if not (num(self.momentum) and 0 <= self.momentum < 1):
            bad("momentum", "in [0, 1)")
        if not (num(self.weight_decay) and self.weight_decay >= 0):
            bad("weight_decay", "a number >= 0")
        if self.schedule not in SCHEDULES:
            bad("schedule", f"one of {', '.join(SCHEDULES)}")
        if not (num(self.gamma) and self.gamma > 0):
            bad("gamma", "a positive number")
        if not (num(self.adv_eps) and self.adv_eps >= 0):
            bad("adv_eps", "a number >= 0 (0 = no adversarial training)")
        if not (isinstance(self.adv_steps, int) and self.adv_steps >= 1):
            bad("adv_steps", "an integer >= 1")
        if not (num(self.adv_step_size) and self.adv_step_size > 0):
            bad("adv_step_size", "a positive number")
        object.__setattr__(self, "milestones", tuple(self.milestones))

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise BnrobustError(f"train has no option {', '.join(unknown)} (options: {', '.join(sorted(names))})")
        return cls(**d)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d


@dataclass
class TrainResult:
    status: str = "ok"             # "ok" or "failed"
    reason: str = ""
    history: list[dict] = field(default_factory=list)  # per epoch: mean train loss and accuracy


def _lr_at(cfg: TrainConfig, epoch: int) -> float:
    if cfg.schedule == "step":
        return cfg.lr * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if cfg.schedule == "cosine":
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * epoch / max(cfg.epochs, 1)))
    return cfg.lr


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, seed: int,
          progress: bool = False, transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
          clip: tuple[float, float] | None = None) -> TrainResult:
    """Minimize cross-entropy with SGD. Batches are drawn by a generator seeded with `seed`,
    so a run is deterministic on CPU. A non-finite loss stops training and returns a
    "failed" result instead of raising or silently continuing.

    transform (e.g. upscaling) is applied to each batch, so x can stay small in memory;
    clip is the valid input range that adversarial training keeps its examples in."""
    result = TrainResult()
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.epochs == 0 or not params:
        return result
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    n = len(x)
    bs = n if cfg.batch_size == 0 else min(cfg.batch_size, n)
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    adv_gen = torch.Generator().manual_seed(seed + 1)
    model.train()
    for epoch in tqdm(range(cfg.epochs), desc="epochs", leave=False, disable=not progress):
        for group in opt.param_groups:
            group["lr"] = _lr_at(cfg, epoch) * (bs if cfg.lr_per_example else 1)
        perm = torch.randperm(n, generator=gen).to(device) if bs < n else None
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        for start in range(0, n, bs):
            if perm is None:
                xb, yb = x, y
            else:
                idx = perm[start:start + bs]
                if len(idx) < 2 and start > 0:  # a batch of one breaks BN's batch statistics
                    continue
                xb, yb = x[idx], y[idx]
            if transform is not None:
                xb = transform(xb)
            if cfg.adv_eps > 0:
                model.eval()
                xb = pgd(model, xb, yb, cfg.adv_eps, cfg.adv_steps, cfg.adv_step_size, "linf",
                         cfg.adv_random_start, clip, generator=adv_gen)
                model.train()
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(yb)
            correct += (out.detach().argmax(1) == yb).sum()
        mean_loss = float(loss_sum) / n
        result.history.append({"epoch": epoch + 1, "loss": mean_loss, "acc": 100.0 * float(correct) / n})
        if not math.isfinite(mean_loss):  # checked once per epoch: no per-step host sync
            result.status, result.reason = "failed", f"non-finite training loss in epoch {epoch + 1}"
            break
    opt.zero_grad(set_to_none=True)  # leave no stale gradients for attacks or callers to trip over
    model.eval()
    return result
