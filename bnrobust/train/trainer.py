"""The one SGD trainer every experiment uses."""
from __future__ import annotations

import io
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Callable, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from tqdm.auto import tqdm

from ..attacks import ATTACKS
from ..checkpoints import Checkpoint, open_checkpoint
from ..data import Dataset
from ..errors import BnrobustError
from ..eval.measure import evaluate
from ..registry import Registry, Spec
from ..seeding import Stream, stream_seed
from ..threads import share_cpus
from .sgd import make_sgd

TRAINERS = Registry("trainer", default="sgd")
Positive = Annotated[float, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]


@TRAINERS.register("sgd")
@dataclass(frozen=True)
class TrainConfig:
    """Mini-batch SGD on cross-entropy. Every field is a config option (`train.<field>`)."""
    lr: Annotated[float, Field(gt=0, le=3.4e38)] = 0.1  # at most float32 max: steps are float32 arithmetic
    lr_per_example: bool = False   # True: the step size is lr * batch_size (e.g. Yang et al.'s 1e-5 * B)
    epochs: NonNegInt = 10
    batch_size: NonNegInt = 128    # 0 = full batch (plain gradient descent)
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    nesterov: bool = False
    weight_decay: Annotated[float, Field(ge=0)] = 0.0  # L2 penalty lambda: adds lambda * w to the gradient of...
    decay: Literal["all", "weights"] = "all"  # ...every parameter (PyTorch's convention), or only conv/linear
    #                                           weights (not biases, not norm gains/shifts)
    schedule: Literal["constant", "step", "cosine"] = "constant"  # "step": lr * gamma at each milestone epoch
    milestones: list[NonNegInt] = field(default_factory=list)
    gamma: Positive = 0.1
    # Adversarial training (e.g. PGD, Madry et al., 2018) when set: every batch is replaced by the
    # attack's examples, made with the model in eval mode as AdverTorch's MNIST tutorial does.
    adversarial: Annotated[Spec, ATTACKS] = None
    # "best-val": keep the weights of the epoch with the best validation accuracy (the paper's
    # model selection; needs a dataset with a validation split), else those of the last epoch.
    select: Literal["last", "best-val"] = "last"
    # bf16 autocast: "auto" = on CUDA only (fp32 on CPU, where bf16 is slower and less exact).
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # A run whose last-epoch training accuracy (%) is below this is recorded as "failed to train"
    # (e.g. 15 for a 10-class task: a network stuck at chance, as deep VGGs without BN can be).
    fail_below: Annotated[float, Field(ge=0, le=100)] = 0.0
    compile: bool = False  # torch.compile the model for training
    # "inverse-frequency": weight each example's loss by N / (K n_class), for imbalanced data (SVHN, App. J.2)
    class_weights: Literal["uniform", "inverse-frequency"] = "uniform"

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
    history: list[dict] = field(default_factory=list)  # per epoch: train loss and accuracy (+ val accuracy)
    curves: list[dict] = field(default_factory=list)   # what `on_epoch` measured, with its epoch
    best_epoch: int | None = None                      # the epoch whose weights were kept (select=best-val)


def _lr_at(cfg: TrainConfig, epoch: int) -> float:
    if cfg.schedule == "step":
        return cfg.lr * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if cfg.schedule == "cosine":
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * epoch / max(cfg.epochs, 1)))
    return cfg.lr


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """SGD parameter groups: weight decay on every parameter, or (decay="weights") only on the
    weights of conv/linear layers, i.e. parameters with more than one dimension. A parameter with
    an `lr_scale` attribute (set by its model, e.g. Fixup's scalars at lr/10) gets a group whose
    learning rate is scaled by it."""
    groups: dict[tuple[float, float], list] = {}
    for p in (p for p in model.parameters() if p.requires_grad):
        decays = cfg.decay == "all" or p.dim() > 1
        key = (cfg.weight_decay if decays else 0.0, float(getattr(p, "lr_scale", 1.0)))
        groups.setdefault(key, []).append(p)
    return [{"params": ps, "weight_decay": wd, "lr_scale": scale} for (wd, scale), ps in groups.items()]


def class_weights(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """N / (K n_c) per class c: the inverse class frequency, scaled so that a balanced set gets 1s.
    A class absent from the training set gets weight 0 (it contributes no loss anyway)."""
    counts = torch.bincount(y.long(), minlength=num_classes).double()
    w = torch.where(counts > 0, len(y) / (num_classes * counts.clamp_min(1)), torch.zeros_like(counts))
    return w.float().to(y.device)


def _val_batch(bs: int, device: torch.device, model: nn.Module) -> int:
    """Validation batch size: max(training batch, 500); on a GPU 4096 (fewer, fuller kernels),
    unless a BN layer normalizes with the batch's statistics at test time (then the batch is
    part of the result)."""
    batch_stats = any(isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.track_running_stats
                      for m in model.modules())
    return max(bs, 4096 if device.type == "cuda" and not batch_stats else 500)


def checkpoint_seconds() -> float:
    """How often a run saves its training state: at the end of the first epoch that ends this
    many seconds after the last save ($BNROBUST_CHECKPOINT_SECONDS, default 60), so that short
    runs never pay for it and long ones lose at most about a minute when killed."""
    return float(os.environ.get("BNROBUST_CHECKPOINT_SECONDS", "60"))


def train(model: nn.Module, data: Dataset, cfg: TrainConfig, seed: int, progress: bool = False,
          checkpoint: Path | Checkpoint | None = None,
          on_epoch: Callable[[int, nn.Module], dict | None] | None = None,
          channels_last: bool = True) -> TrainResult:
    """Minimize cross-entropy with SGD on `data`'s training batches. Batches are drawn by a
    generator seeded with `seed`, so a run is deterministic on CPU. A non-finite loss stops
    training and returns a "failed" result instead of raising or silently continuing.

    Data is moved to the model's device once and decoded batch by batch; adversarial
    examples stay in the data's valid range (`data.clip`). `on_epoch(epoch, model)` (in eval
    mode) may return measurements to keep in `result.curves`. With `checkpoint` (a path, opened
    with `open_checkpoint`, or a Checkpoint), the training state is saved there now and then
    (atomically) and a killed run resumes from it, ending with the same weights as an
    uninterrupted run.

    Image batches and the model are channels_last (NHWC): faster convolutions on a GPU's tensor
    cores, and on this project's 2-core CPU too (oneDNN; a training step 1.1-1.45x faster for the
    ResNets, VGGs, WideResNets and LeNet, benchmarks/bench_vgg_cpu.py measures VGG8). `channels_last`
    False keeps NCHW."""
    result = TrainResult()
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.epochs == 0 or not params:
        return result
    device = next(model.parameters()).device
    data = data.to(device)
    if cfg.select == "best-val" and data.x_val is None:
        raise BnrobustError("train.select=best-val needs a dataset with a validation split (e.g. data.n_val > 0)")
    n = len(data.x_train)
    bs = n if cfg.batch_size == 0 else min(cfg.batch_size, n)
    opt = make_sgd(param_groups(model, cfg), cfg.lr, cfg.momentum, cfg.nesterov, device, cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    adv_gen = torch.Generator().manual_seed(stream_seed(seed, Stream.ADV_TRAIN))
    attack = ATTACKS.partial(cfg.adversarial, "train.adversarial") if cfg.adversarial else None
    amp = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    nhwc = channels_last and data.x_train.dim() == 4
    if nhwc:
        model = model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # batches keep their shape: cuDNN times its kernels once, then reuses
    fwd = torch.compile(model) if cfg.compile else model
    weight = class_weights(data.y_train, data.num_classes) if cfg.class_weights == "inverse-frequency" else None
    best: tuple[float, dict] | None = None
    start = 0
    checkpoint = open_checkpoint(checkpoint)
    state = _load_checkpoint(checkpoint, device)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["gen"]), adv_gen.set_state(state["adv_gen"])
        result.history, result.curves, start = state["history"], state["curves"], state["epoch"]
        best = state["best"]
    last_save = time.monotonic()
    model.train()
    bar = tqdm(range(start, cfg.epochs), desc="epochs", unit="epoch", leave=False, disable=None if progress else True,
               initial=start, total=cfg.epochs)
    for epoch in bar:
        for group in opt.param_groups:
            group["lr"] = _lr_at(cfg, epoch) * (bs if cfg.lr_per_example else 1) * group["lr_scale"]
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        for xb, yb in data.batches("train", bs, gen, augment=True):
            share_cpus()  # a sweep started beside this one: share the cores (looks every RECHECK_S seconds)
            xb = data.prepare(xb)
            if nhwc:
                xb = xb.contiguous(memory_format=torch.channels_last)
            if attack is not None:
                model.eval()
                xb = attack(model=model, x=xb, y=yb, clip=data.clip, generator=adv_gen)
                model.train()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = fwd(xb)
            loss = F.cross_entropy(out.float(), yb, weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(yb)
            correct += (out.detach().argmax(1) == yb).sum()
        mean_loss = float(loss_sum) / n
        entry = {"epoch": epoch + 1, "loss": mean_loss, "acc": 100.0 * float(correct) / n}
        result.history.append(entry)
        if not math.isfinite(mean_loss):  # checked once per epoch: no per-step host sync
            result.status, result.reason = "failed", f"non-finite training loss in epoch {epoch + 1}"
            break
        if cfg.select == "best-val":
            entry["val_acc"] = evaluate(model, data.batches("val", _val_batch(bs, device, model)),
                                        transform=data.transform)[0]
            if best is None or entry["val_acc"] > best[0]:
                best = (entry["val_acc"], {k: v.detach().clone() for k, v in model.state_dict().items()},
                        epoch + 1)
        if on_epoch is not None:
            model.eval()
            measured = on_epoch(epoch + 1, model)
            if measured:
                result.curves.append({"epoch": epoch + 1, **measured})
        model.train()
        bar.set_postfix(loss=f"{mean_loss:.3f}", acc=f"{entry['acc']:.1f}")
        if checkpoint is not None and epoch + 1 < cfg.epochs and time.monotonic() - last_save >= checkpoint_seconds():
            _save_checkpoint(checkpoint, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                          "gen": gen.get_state(), "adv_gen": adv_gen.get_state(),
                                          "history": result.history, "curves": result.curves,
                                          "epoch": epoch + 1, "best": best})
            last_save = time.monotonic()
    if result.status == "ok" and result.history and result.history[-1]["acc"] < cfg.fail_below:
        result.status = "failed"
        result.reason = (f"training accuracy {result.history[-1]['acc']:.1f}% after {len(result.history)} epochs, "
                         f"below train.fail_below = {cfg.fail_below:g}% (did not train)")
    if best is not None and result.status == "ok":
        model.load_state_dict(best[1])
        result.best_epoch = best[2]
    opt.zero_grad(set_to_none=True)  # leave no stale gradients for attacks or callers to trip over
    model.eval()
    return result


def _save_checkpoint(ckpt: Checkpoint, state: dict) -> None:
    """Atomically (see Checkpoint.write): a checkpoint is whole or absent."""
    buf = io.BytesIO()
    torch.save(state, buf)
    ckpt.write(buf.getbuffer())


def _load_checkpoint(ckpt: Checkpoint | None, device: torch.device) -> dict | None:
    """The saved training state, or None (no checkpoint, or an unreadable one: start afresh)."""
    if ckpt is None:
        return None
    try:
        data = ckpt.read()
        if data is None:
            return None
        state = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged checkpoint only costs the time it saved
        tqdm.write(f"bnrobust: ignoring unreadable checkpoint {ckpt} ({type(e).__name__}); training from scratch",
                   file=sys.stderr)
        return None
    tqdm.write(f"bnrobust: resuming {ckpt.name} from epoch {state['epoch']}", file=sys.stderr)
    for key in ("gen", "adv_gen"):
        state[key] = state[key].cpu()
    return state
