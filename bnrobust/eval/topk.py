"""Top-k accuracy (`topk`: clean, under Gaussian noise, or under an attack) and transferred
adversarial examples (`transfer`: made on the run's model, evaluated on other models), the
measurements of the ImageNet tables (Tables 5 and 12). New metrics rather than options of
`clean`/`awgn`/`pgd`, so that the configs (and stored runs) of existing experiments keep their
identity."""
from __future__ import annotations

from typing import Annotated, Any, Optional

import torch
import torch.nn.functional as F
from pydantic import AfterValidator, Field

from .. import attacks
from ..attacks import ATTACKS
from ..data import Dataset
from ..errors import BnrobustError
from ..registry import Spec
from ..seeding import Stream, stream_seed
from .metrics import EVALS, EvalContext

PosInt = Annotated[int, Field(ge=1)]
NonNeg = Annotated[float, Field(ge=0)]
Ks = Annotated[list[PosInt], Field(min_length=1)]


class TopK:
    """Running top-k hit counts (and summed cross-entropy) over batches of logits."""

    def __init__(self, ks: list[int]):
        self.ks = sorted(set(int(k) for k in ks))
        self.hits = {k: 0 for k in self.ks}
        self.loss, self.n = 0.0, 0

    def add(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        top = logits.topk(min(max(self.ks), logits.shape[1]), dim=1).indices
        hit = top == y[:, None]
        for k in self.ks:
            self.hits[k] += int(hit[:, :k].any(dim=1).sum())
        self.loss += float(F.cross_entropy(logits, y, reduction="sum"))
        self.n += len(y)

    def result(self) -> dict:
        if self.n == 0:
            raise BnrobustError("top-k accuracy of an empty test set")
        return {**{f"top{k}": 100.0 * self.hits[k] / self.n for k in self.ks}, "loss": self.loss / self.n}


def _subset(ds: Dataset, n: int | None) -> Dataset:
    return ds if n is None else ds.head(n)


@EVALS.register("topk")
def eval_topk(model, ds, ctx: EvalContext, k: Ks = [1, 5], sigma: Optional[NonNeg] = None,
              attack: Annotated[Spec, ATTACKS] = None, n: Optional[PosInt] = None) -> dict:
    """Top-k accuracies (%) and mean cross-entropy on the test set: clean, under Gaussian noise
    (sigma) or under an attack made on this model (attack).

    Returns "top1", "top5", ... (one per k) and "loss", over the test set or its first n items.
    sigma: x + N(0, sigma^2), clipped to the valid range (the awgn metric's noise). attack: an
    ATTACKS spec, e.g. {"name": "pgd", "eps": 0.01, "steps": 20, "step_size": 0.001}."""
    if sigma is not None and attack is not None:
        raise BnrobustError("the 'topk' metric takes sigma (noise) or attack, not both")
    noise_g = torch.Generator().manual_seed(stream_seed(ctx.seed, Stream.AWGN))
    attack_g = torch.Generator().manual_seed(stream_seed(ctx.seed, Stream.PGD))
    run_attack = ATTACKS.partial(attack, "attack") if attack is not None else None
    model.eval()
    acc = TopK(k)
    sub = _subset(ds, n).to(ctx.device)
    for xb, yb in sub.batches("test", ctx.batch_size):
        xb = sub.prepare(xb)
        if sigma is not None:
            xb = attacks.awgn(xb, sigma, ctx.clip, noise_g)
        elif run_attack is not None:
            xb = run_attack(model=model, x=xb, y=yb, clip=ctx.clip, generator=attack_g)
        with torch.no_grad():
            acc.add(model(xb), yb)
    return acc.result()


def _resolve_targets(targets: dict[str, Any]) -> dict[str, dict]:
    """Each target a resolved MODELS spec (checked with the config, before any run starts)."""
    from ..models import MODELS
    out = {}
    for label, spec in targets.items():
        if not label or "." in label:
            raise ValueError(f"target label {label!r} must be non-empty and contain no '.' (it is a metric path)")
        try:
            out[label] = MODELS.resolve(spec, f"targets.{label}")
        except BnrobustError as e:
            raise ValueError(str(e)) from None
    if not out:
        raise ValueError("give at least one target model")
    return out


Targets = Annotated[dict[str, Any], AfterValidator(_resolve_targets)]


@EVALS.register("transfer")
def eval_transfer(model, ds, ctx: EvalContext, targets: Targets, attack: Annotated[Spec, ATTACKS],
                  k: Ks = [1, 5], n: Optional[PosInt] = None) -> dict:
    """Black-box transfer (Table 12): adversarial examples made on this model by `attack` (an ATTACKS
    spec) from the test set (its first n items if n is given), evaluated on every target model.

    targets: label -> model spec, each built on the same dataset (a target equal to this model gives
    its white-box accuracy). Returns {label: {"top1", "top5", ..., "loss"}}. The adversarial examples
    are kept (on the CPU) while the targets are built and evaluated one at a time, so only two
    models are in memory at once."""
    from ..models import build_model
    if attack is None:
        raise BnrobustError("the 'transfer' metric needs an attack (e.g. {name: pgd, eps: 0.01, steps: 10, "
                            "step_size: 0.005})")
    run_attack = ATTACKS.partial(attack, "attack")
    g = torch.Generator().manual_seed(stream_seed(ctx.seed, Stream.PGD))
    model.eval()
    sub = _subset(ds, n).to(ctx.device)
    made = [(run_attack(model=model, x=sub.prepare(xb), y=yb, clip=ctx.clip, generator=g).cpu(), yb)
            for xb, yb in sub.batches("test", ctx.batch_size)]
    out = {}
    for label, spec in targets.items():
        torch.manual_seed(ctx.seed)  # a target with random weights is the same model in every run
        target = build_model(spec, ds).to(ctx.device).eval()
        acc = TopK(k)
        with torch.no_grad():
            for adv, yb in made:
                acc.add(target(adv.to(ctx.device)), yb)
        out[label] = acc.result()
        del target
    return out
