"""The one SGD trainer every experiment uses."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from tqdm.auto import tqdm

from ..attacks import ATTACKS
from ..data import Dataset
from ..registry import Registry, Spec
from ..seeding import Stream, stream_seed

TRAINERS = Registry("trainer", default="sgd")
Positive = Annotated[float, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]


@TRAINERS.register("sgd")
@dataclass(frozen=True)
class TrainConfig:
    """Mini-batch SGD on cross-entropy. Every field is a config option (`train.<field>`)."""
    lr: Positive = 0.1
    lr_per_example: bool = False   # True: the step size is lr * batch_size (e.g. Yang et al.'s 1e-5 * B)
    epochs: NonNegInt = 10
    batch_size: NonNegInt = 128    # 0 = full batch (plain gradient descent)
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    weight_decay: Annotated[float, Field(ge=0)] = 0.0  # L2 penalty lambda: adds lambda * w to every gradient
    schedule: Literal["constant", "step", "cosine"] = "constant"  # "step": lr * gamma at each milestone epoch
    milestones: list[NonNegInt] = field(default_factory=list)
    gamma: Positive = 0.1
    # Adversarial training (e.g. PGD, Madry et al., 2018) when set: every batch is replaced by the
    # attack's examples, made with the model in eval mode as AdverTorch's MNIST tutorial does.
    adversarial: Annotated[Spec, ATTACKS] = None

    def __post_init__(self):  # checked even when built in Python rather than from a config
        TRAINERS.resolve(asdict(self), "train")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Checked and completed by the trainer registry (one-line errors), then built."""
        resolved = TRAINERS.resolve(d, "train")
        resolved.pop("name")
        return cls(**resolved)

    def to_dict(self) -> dict:
        return {"name": "sgd", **asdict(self)}


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


def train(model: nn.Module, data: Dataset, cfg: TrainConfig, seed: int, progress: bool = False) -> TrainResult:
    """Minimize cross-entropy with SGD on `data`'s training batches. Batches are drawn by a
    generator seeded with `seed`, so a run is deterministic on CPU. A non-finite loss stops
    training and returns a "failed" result instead of raising or silently continuing.

    Data is moved to the model's device once and decoded batch by batch; adversarial
    examples stay in the data's valid range (`data.clip`)."""
    result = TrainResult()
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.epochs == 0 or not params:
        return result
    device = next(model.parameters()).device
    data = data.to(device)
    n = len(data.x_train)
    bs = n if cfg.batch_size == 0 else min(cfg.batch_size, n)
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    adv_gen = torch.Generator().manual_seed(stream_seed(seed, Stream.ADV_TRAIN))
    attack = ATTACKS.partial(cfg.adversarial, "train.adversarial") if cfg.adversarial else None
    model.train()
    for epoch in tqdm(range(cfg.epochs), desc="epochs", leave=False, disable=not progress):
        for group in opt.param_groups:
            group["lr"] = _lr_at(cfg, epoch) * (bs if cfg.lr_per_example else 1)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        for xb, yb in data.batches("train", bs, gen, augment=True):
            xb = data.prepare(xb)
            if attack is not None:
                model.eval()
                xb = attack(model=model, x=xb, y=yb, clip=data.clip, generator=adv_gen)
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
