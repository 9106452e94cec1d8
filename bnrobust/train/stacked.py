"""Seed-stacked training: the S runs of a group (the seeds of a variant, and variants that differ
only in weight decay, BN's c or, for linear models, their norm) train as one model with a
leading model dimension, one forward and backward per step for all of them.

Why: the small models of most sweeps spend ~99% of a step in per-call framework overhead; S
models per call divide that by S. Each model still gets exactly what it would get alone: its own
initialization (built by the caller as a run of its own builds it), its own training set and
batch order (its seed's generator), its own BN statistics, weight decay and c; so each stacked
model ends with the weights of its single run up to float rounding.

Layout: a stacked model takes the S models' batches one after the other along dim 0, [S*B, ...]
(model k's samples are rows k*B..(k+1)*B-1), and returns [S*B, classes]. Only the layers that
hold parameters or mix samples are replaced (`StackedLinear`, `StackedBatchNorm`, stacked
LayerNorm/GroupNorm); per-sample layers (ReLU, Flatten, per-image norms) and the model's own
`forward` run unchanged on the stacked batch, so a stacked model keeps its family's methods.
`stack_models` checks the result against the single models on a probe batch and refuses
(`NotStackable`) anything it does not reproduce.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..attacks import ATTACKS
from ..data import Dataset
from ..models import build_model
from ..models.linear import LinearClassifier
from ..models.norms import PerImageL2, PerImageStandardize
from ..seeding import Stream, stream_seed
from ..threads import share_cpus
from .sgd import make_sgd
from ..checkpoints import open_checkpoint
from .trainer import (TrainConfig, TrainResult, _load_checkpoint, _lr_at, _save_checkpoint,
                      checkpoint_seconds)

# Model families whose every layer `stack_models` can stack (it still checks each model).
FAMILIES = ("linear", "mlp", "deep-linear")
# Layers without parameters that act on each sample alone: they run unchanged on a stacked batch.
PER_SAMPLE = (nn.Identity, nn.ReLU, nn.Flatten, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.MaxPool2d, nn.AvgPool2d,
              PerImageStandardize, PerImageL2)
STEP_ELEMENTS = 2 ** 21  # see split
MAX_WEIGHT = 2 ** 14  # see split
MAX_MODELS = 128
EVAL_ELEMENTS = 2 ** 17  # see eval_chunk
PREDECODE_BYTES = 2 ** 30  # decode the training sets once up front if they take at most this much as float


class NotStackable(Exception):
    """These runs cannot train as one stacked model; the caller trains them one by one."""


def enabled(flag: bool | None = None) -> bool:
    """Whether sweeps stack runs: `flag` if given (`bnrobust run --no-stack`), else
    $BNROBUST_STACK (default on; 0 turns it off)."""
    if flag is not None:
        return flag
    return os.environ.get("BNROBUST_STACK", "1").strip().lower() not in ("0", "false", "no", "off")


def stack_key(cfg: dict) -> str | None:
    """Runs with the same key can train as one stacked model; None: this run trains alone.

    The key is the resolved config without its seed, its weight decay and BN's c (per-model
    values in a stack); linear models (StackedLinearClassifier) may also differ in their norm,
    none or BN with any options. Runs whose training the stacked trainer does not do yet are None:
    families other than FAMILIES, no training (epochs 0), best-validation-epoch selection,
    curves, torch.compile."""
    model, train, ev = cfg["model"], cfg["train"], cfg["eval"]
    if (model.get("name") not in FAMILIES or train.get("epochs", 0) == 0 or train.get("select") != "last"
            or train.get("compile") or ev.get("curve_every")):
        return None
    key = {k: v for k, v in cfg.items() if k != "seed"}
    key["train"] = {**train, "weight_decay": None}
    norm = model.get("norm")
    name = _name(norm)
    if model["name"] == "linear" and name in ("none", "bn"):  # StackedLinearClassifier: any of these
        key["model"] = {**model, "norm": None}
        key["versions"] = {k: v for k, v in cfg.get("versions", {}).items() if k not in ("norm:none", "norm:bn")}
    elif name == "bn":
        key["model"] = {**model, "norm": {**norm, "c": None}}
    return json.dumps(key, sort_keys=True, default=str)


def split(cfgs: Sequence[dict], ds: Dataset) -> list[list[int]]:
    """The stacks (lists of indices into cfgs, which share a stack_key) to train on `ds` (the
    first config's dataset): the models of one seed always together (they read the same
    batches), as many seeds per stack as keep a step's distinct batches within STEP_ELEMENTS
    input elements, at most MAX_MODELS models. Models with a linear layer of more than
    MAX_WEIGHT weights train alone: a CPU bmm over S such layers is slower than S matmuls
    (measured: 3 x 256x256 at batch 10, 471 vs 437 us; 3 x 128x128, 187 vs 249 us), so only
    small nets gain; linear models always stack (their one folded matmul is tiny)."""
    n_train, input_size = len(ds.x_train), math.prod(ds.input_shape)
    spec = cfgs[0]["model"]
    bs = min(cfgs[0]["train"].get("batch_size") or n_train, n_train)
    if spec["name"] == "linear":
        plain = all(_name(c["model"].get("norm")) == "none" for c in cfgs) and _name(spec.get("input_norm")) == "none"
        if plain and type(ds.transform).__name__ == "NearestUpscale":  # trained before upscaling (absorb_upscale)
            input_size = math.prod(ds.take("train", slice(0, 1)).shape[1:])
    else:
        with torch.random.fork_rng(devices=[]):  # look at its layers; leave the global random state as it was
            model = build_model(spec, ds)
        if any(m.weight.numel() > MAX_WEIGHT for m in model.modules() if isinstance(m, nn.Linear)):
            return [[i] for i in range(len(cfgs))]
    by_seed: dict[int, list[int]] = {}
    for i, cfg in enumerate(cfgs):
        by_seed.setdefault(int(cfg["seed"]), []).append(i)
    stacks: list[list[int]] = [[]]
    for idx in by_seed.values():
        seeds_in = len({int(cfgs[i]["seed"]) for i in stacks[-1]})
        if stacks[-1] and ((seeds_in + 1) * bs * input_size > STEP_ELEMENTS
                           or len(stacks[-1]) + len(idx) > MAX_MODELS):
            stacks.append([])
        stacks[-1] += idx
    return [sorted(st) for st in stacks]


def _name(spec) -> str | None:
    return spec.get("name") if isinstance(spec, dict) else spec


# ---------------------------------------------------------------------------
# Stacked layers: parameters with a leading model dimension, inputs [S*B, ...]


class Sharing:
    """Which of U distinct input batches each of S models reads, in training: models of one seed
    on one training set read the same batch, so a stacked model's first layer computes on the U
    distinct batches ([U*B, ...]) and returns each model's own [S*B, ...]."""

    def __init__(self, index: Sequence[int]):
        self.index = torch.tensor(list(index))   # [S]: the batch model k reads
        self.models, self.unique = len(self.index), int(self.index.max()) + 1 if len(self.index) else 0
        counts = torch.bincount(self.index, minlength=self.unique)
        self.per = int(counts[0]) if len(counts) and bool((counts == counts[0]).all()) else None
        order = torch.argsort(self.index, stable=True)  # models grouped by batch
        identity = bool((order == torch.arange(self.models)).all())
        self.order = None if identity else order
        self.inverse = None if identity else torch.argsort(order)
        self._source: dict = {}

    def source(self, models: torch.Tensor) -> torch.Tensor:
        """The batch each of `models` reads (cached per index tensor and device)."""
        key = (id(models), str(models.device))
        if key not in self._source:
            self._source[key] = (models, self.on(models.device)[0].index_select(0, models))
        return self._source[key][1]

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(index, order, inverse) on `device` (copied there once)."""
        key = str(device)
        if key not in self._source:
            self._source[key] = tuple(None if t is None else t.to(device)
                                      for t in (self.index, self.order, self.inverse))
        return self._source[key]

    def __repr__(self) -> str:
        return f"Sharing({self.models} models, {self.unique} batches)"


def stacked_matmul(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None,
                   sharing: Sharing | None = None) -> torch.Tensor:
    """Model k's h_k W_k^T + b_k for S models: h [S*B, in] (or [U*B, in] read as `sharing` says),
    w [S, out, in], b [S, out]; returns [S*B, out]. Computed as W h^T ([S, out, B]): for the few
    outputs of a classifier its backward (grad_W = g^T h) is a far faster bmm on CPUs than that
    of h W^T (1.5-8x, measured)."""
    s, n_out, n_in = w.shape
    if h.requires_grad and (sharing is None or sharing.unique == s):  # a hidden layer: its backward needs
        out = torch.baddbmm(b.unsqueeze(1), h.reshape(s, -1, n_in), w.transpose(1, 2)) if b is not None else \
            torch.bmm(h.reshape(s, -1, n_in), w.transpose(1, 2))  # grad_h too, faster in this layout
        return out.reshape(-1, n_out)
    if sharing is None or sharing.unique == s:
        hs = h.reshape(s, -1, n_in)
    elif sharing.per is None:  # unequal numbers of models per batch: give each model its copy
        hs = h.reshape(sharing.unique, -1, n_in)[sharing.on(h.device)[0]]
    else:  # one bmm per distinct batch, over the weights of all models that read it
        _, order, inverse = sharing.on(w.device)
        wo = w if order is None else w[order]
        u, per = sharing.unique, sharing.per
        hs = h.reshape(u, -1, n_in).transpose(1, 2)
        if b is None:
            out = torch.bmm(wo.reshape(u, per * n_out, n_in), hs)
        else:
            bo = b if order is None else b[order]
            out = torch.baddbmm(bo.reshape(u, per * n_out, 1), wo.reshape(u, per * n_out, n_in), hs)
        out = out.reshape(s, n_out, -1)
        if order is not None:
            out = out[inverse]
        return out.transpose(1, 2).reshape(-1, n_out)
    if b is None:
        out = torch.bmm(w, hs.transpose(1, 2))
    else:
        out = torch.baddbmm(b.unsqueeze(2), w, hs.transpose(1, 2))
    return out.transpose(1, 2).reshape(-1, n_out)


class StackedLinear(nn.Module):
    """S nn.Linear layers: weight [S, out, in], bias [S, out]; y_k = x_k W_k^T + b_k by one bmm."""

    def __init__(self, layers: Sequence[nn.Linear]):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in layers]).clone())
        self.bias = (nn.Parameter(torch.stack([m.bias.detach() for m in layers]).clone())
                     if layers[0].bias is not None else None)
        self.sharing: Sharing | None = None  # set on a model's first layer while it trains on shared batches

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return stacked_matmul(x, self.weight, self.bias, self.sharing if self.training else None)


def _channel_view(s: int, c: int, dims: int) -> list[int]:
    return [s, 1, c] + [1] * dims


class StackedBatchNorm(nn.Module):
    """S BatchNorm1d/2d layers, each normalizing its own model's samples with its own statistics
    and its own c (eps); state-dict names as nn.BatchNorm's, with a leading model dimension."""

    def __init__(self, layers: Sequence[nn.modules.batchnorm._BatchNorm], models: Sequence[int] | None = None):
        super().__init__()
        first = layers[0]
        # which models of the stack these layers belong to (None: all, in order)
        self.register_buffer("models", None if models is None else torch.tensor(list(models)), persistent=False)
        if any((m.momentum, m.affine, m.track_running_stats, m.num_features) !=
               (first.momentum, first.affine, first.track_running_stats, first.num_features) for m in layers):
            raise NotStackable("BN layers differ in more than c")
        if first.momentum is None:
            raise NotStackable("BN with a cumulative moving average (momentum None)")
        self.momentum, self.affine, self.track = first.momentum, first.affine, first.track_running_stats
        self.num_features = first.num_features
        self.register_buffer("eps", torch.tensor([float(m.eps) for m in layers]), persistent=False)
        self.same_eps = float(first.eps) if all(m.eps == first.eps for m in layers) else None
        if self.affine:
            self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in layers]).clone())
            self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in layers]).clone())
        if self.track:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, torch.stack([getattr(m, name) for m in layers]).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, c = len(self.eps), self.num_features
        xs = x.reshape(s, -1, *x.shape[1:])  # [S, B, C, *spatial]
        if xs.dim() == 3 and self.same_eps is not None:
            return self._native(xs).reshape(x.shape)
        shape = _channel_view(s, c, xs.dim() - 3)
        if self.training or not self.track:
            dims = [1, *range(3, xs.dim())]
            n = xs.numel() // (s * c)
            mean = xs.mean(dims, keepdim=True)
            var_sum = (xs - mean).square().sum(dims, keepdim=True)
            var = var_sum / n
            if self.training and self.track:
                with torch.no_grad():  # as nn.BatchNorm: momentum * batch + (1 - momentum) * running
                    m = self.momentum
                    self.num_batches_tracked.add_(1)
                    self.running_mean.mul_(1 - m).add_(mean.reshape(s, c), alpha=m)
                    self.running_var.mul_(1 - m).add_(var_sum.reshape(s, c) / max(n - 1, 1), alpha=m)
        else:
            mean, var = self.running_mean.view(shape), self.running_var.view(shape)
        invstd = 1.0 / torch.sqrt(var + self.eps.view(s, *[1] * (xs.dim() - 1)))
        if self.affine:  # as PyTorch's kernel: x * alpha + beta, alpha = invstd * w, beta = b - mean * alpha
            alpha = invstd * self.weight.view(shape)
            beta = self.bias.view(shape) - mean * alpha
        else:
            alpha, beta = invstd, -mean * invstd
        return torch.addcmul(beta, xs, alpha).reshape(x.shape)


    def _native(self, xs: torch.Tensor) -> torch.Tensor:
        """PyTorch's own batch norm over the S*C features of [B, S*C] (one kernel forward and
        backward, the single models' arithmetic): for models with the same c."""
        s, b, c = xs.shape
        batch_stats = self.training or not self.track
        if self.training and self.track:
            self.num_batches_tracked.add_(1)
        flat = lambda t: None if t is None else t.view(-1)  # noqa: E731
        out = F.batch_norm(xs.transpose(0, 1).reshape(b, s * c),
                           flat(self.running_mean) if self.track else None,
                           flat(self.running_var) if self.track else None,
                           flat(self.weight) if self.affine else None, flat(self.bias) if self.affine else None,
                           batch_stats, self.momentum, self.same_eps)
        return out.view(b, s, c).transpose(0, 1)


class StackedSampleNorm(nn.Module):
    """S LayerNorm (over the last dim) or GroupNorm layers: the per-sample normalization, then
    each model's own affine parameters."""

    def __init__(self, layers: Sequence[nn.Module]):
        super().__init__()
        first = layers[0]
        self.kind = "ln" if isinstance(first, nn.LayerNorm) else "gn"
        if self.kind == "ln":
            if len(first.normalized_shape) != 1:
                raise NotStackable("LayerNorm over more than one dimension")
            conf = lambda m: (m.normalized_shape, m.eps, m.elementwise_affine)  # noqa: E731
            self.affine = first.elementwise_affine
        else:
            conf = lambda m: (m.num_groups, m.num_channels, m.eps, m.affine)  # noqa: E731
            self.affine = first.affine
        if any(conf(m) != conf(first) for m in layers):
            raise NotStackable("normalization layers differ")
        self.eps, self.groups = first.eps, getattr(first, "num_groups", None)
        if self.affine and getattr(first, "bias", None) is None:
            raise NotStackable("a norm with a gain but no bias")
        if self.affine:
            self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in layers]).clone())
            self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in layers]).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "ln":
            out = F.layer_norm(x, (x.shape[-1],), None, None, self.eps)
        else:
            out = F.group_norm(x, self.groups, None, None, self.eps)
        if not self.affine:
            return out
        s, c = self.weight.shape
        os_ = out.reshape(s, -1, *out.shape[1:])
        if self.kind == "ln":
            shape = [s] + [1] * (os_.dim() - 2) + [c]
        else:
            shape = _channel_view(s, c, os_.dim() - 3)
        return torch.addcmul(self.bias.view(shape), os_, self.weight.view(shape)).reshape(x.shape)


class StackedLinearClassifier(nn.Module):
    """S `LinearClassifier`s, each with norm none or BN (any c, affine, stats: they may differ
    between models), with BN folded into the linear map: BN computes x * alpha + beta (alpha =
    gamma / sqrt(var + c), beta = shift - mean * alpha), so W BN(x) + b = (W * alpha) x + (W beta
    + b): one matmul on the raw input for all models instead of a normalized copy of it per model
    (the paper's GD and BNGD are these models). The fold is exact math; it differs from the single
    models only in float rounding. With `sharing` (training), BN statistics are computed once per
    distinct batch. `model_state(k)` is model k's state dict under the single model's names."""

    def __init__(self, models: Sequence[nn.Module]):
        super().__init__()
        self.input_norm = models[0].input_norm
        if (any(type(m.input_norm) is not type(self.input_norm) for m in models)
                or not isinstance(self.input_norm, PER_SAMPLE) or any(True for _ in self.input_norm.parameters())):
            raise NotStackable(f"input norms {type(self.input_norm).__name__}")
        if any(m.linear.bias is None for m in models):
            raise NotStackable("a linear map without bias")
        self.linear = StackedLinear([m.linear for m in models])
        kinds: dict[tuple, list[int]] = {}  # BN layers that stack together (they may differ in c)
        for k, m in enumerate(models):
            if isinstance(m.norm, nn.BatchNorm1d) and m.norm.momentum is not None:
                kinds.setdefault((m.norm.affine, m.norm.track_running_stats, m.norm.momentum), []).append(k)
            elif not isinstance(m.norm, nn.Identity):
                raise NotStackable(f"norm {type(m.norm).__name__}")
        self.norms = nn.ModuleList(StackedBatchNorm([models[k].norm for k in ks], models=ks) for ks in kinds.values())
        self.sharing: Sharing | None = None
        # (C, H, W, k) while it trains on images the data would upscale by k (see absorb_upscale)
        self.upscaled: tuple[int, int, int, int] | None = None

    def absorb_upscale(self, transform, image_shape: Sequence[int]) -> bool:
        """Train on the images before a nearest-neighbour upscaling by k (`transform`) instead of
        after: each upscaled pixel is a copy of one small pixel, so W x_up = W_k x with W_k the
        sum of W over each k x k block, a matmul k^2 times smaller (its gradient is W_k's, copied
        to every pixel of the block). For models without a norm and input norm; True if done."""
        k = getattr(transform, "factor", None)
        if (type(transform).__name__ != "NearestUpscale" or not isinstance(k, int) or k < 2 or len(self.norms)
                or not isinstance(self.input_norm, nn.Identity) or len(image_shape) != 3):
            return False
        self.upscaled = (*image_shape, k)
        return True

    def model_state(self, k: int) -> dict[str, torch.Tensor]:
        state = {"linear.weight": self.linear.weight[k], "linear.bias": self.linear.bias[k]}
        for bn in self.norms:
            where = (bn.models == k).nonzero()
            if len(where):
                j = int(where[0, 0])
                state.update({f"norm.{name}": t[j] for name, t in bn.state_dict().items()})
        return state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.input_norm(x).flatten(1)
        sharing = self.sharing if self.training else None
        w, b = self.linear.weight, self.linear.bias
        if self.training and self.upscaled is not None:
            c, hh, ww, k = self.upscaled
            # the k x k block sums by a sum-pooling kernel: forward and backward 1.5-3x faster than
            # .sum((4, 6)) over the strided block dimensions (112 x 112 inputs, 10 models)
            n_models, n_out = w.shape[:2]
            w = F.avg_pool2d(w.reshape(n_models * n_out * c, 1, hh * k, ww * k), k,
                             divisor_override=1).reshape(n_models, n_out, -1)
        if len(self.norms) and not self.training and all(bn.track for bn in self.norms):
            w, b = self._eval_fold()
        elif len(self.norms):
            w, b = self._fold(h, w, b, sharing)
        return stacked_matmul(h, w, b, sharing)

    def _eval_fold(self) -> tuple[torch.Tensor, torch.Tensor]:
        """In eval mode with tracked statistics the folded map is a constant: computed once (until a
        parameter or buffer changes) and without a graph, so attacks pay one matmul per call;
        gradients reach the input, not the parameters."""
        tensors = [*self.parameters(), *self.buffers()]
        key = tuple((id(t), t._version) for t in tensors)
        if getattr(self, "_folded", (None,))[0] != key:
            with torch.no_grad():
                w, b = self._fold(None, self.linear.weight, self.linear.bias, None)
            self._folded = (key, w, b)
        return self._folded[1], self._folded[2]

    def _fold(self, h, w, b, sharing):
        """(W * alpha, b + W beta), with alpha = 1, beta = 0 (exactly W, b) for models without BN."""
        s, _, d = w.shape
        stats = None
        alpha_all = torch.ones(s, d, device=w.device, dtype=w.dtype)
        beta_all = torch.zeros(s, d, device=w.device, dtype=w.dtype)
        for bn in self.norms:
            idx = bn.models
            if self.training or not bn.track:
                if stats is None:  # the batch statistics of each distinct batch, once
                    hs = h.reshape(s if sharing is None else sharing.unique, -1, d)
                    mean = hs.mean(1)
                    centered = hs - mean.unsqueeze(1)
                    sq = centered.square() if centered.requires_grad else centered.mul_(centered)
                    stats = (mean, sq.sum(1), hs.shape[1])
                src = idx if sharing is None else sharing.source(idx)
                mean, var_sum, n = stats[0].index_select(0, src), stats[1].index_select(0, src), stats[2]
                var = var_sum / n
                if self.training and bn.track:
                    with torch.no_grad():  # as nn.BatchNorm: momentum * batch + (1 - momentum) * running
                        m = bn.momentum
                        bn.num_batches_tracked.add_(1)
                        bn.running_mean.mul_(1 - m).add_(mean, alpha=m)
                        bn.running_var.mul_(1 - m).add_(var_sum / max(n - 1, 1), alpha=m)
            else:
                mean, var = bn.running_mean, bn.running_var
            alpha = 1.0 / torch.sqrt(var + bn.eps.unsqueeze(1))
            if bn.affine:
                alpha = alpha * bn.weight
                beta = bn.bias - mean * alpha
            else:
                beta = -mean * alpha
            alpha_all = alpha_all.index_copy(0, idx, alpha)
            beta_all = beta_all.index_copy(0, idx, beta)
        return w * alpha_all.unsqueeze(1), torch.baddbmm(b.unsqueeze(2), w, beta_all.unsqueeze(2)).squeeze(2)


def _stack_leaf(layers: list[nn.Module]) -> nn.Module | None:
    """The stacked version of S corresponding layers, or None where the layer runs as it is."""
    first = layers[0]
    if any(type(m) is not type(first) for m in layers):
        raise NotStackable(f"layers of different types: {type(first).__name__}")
    shapes = lambda m: {k: tuple(t.shape) for k, t in m.state_dict().items()}  # noqa: E731
    if any(shapes(m) != shapes(first) for m in layers):
        raise NotStackable(f"{type(first).__name__} layers of different shapes")
    if isinstance(first, nn.Linear):
        return StackedLinear(layers)
    if isinstance(first, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return StackedBatchNorm(layers)
    if isinstance(first, (nn.LayerNorm, nn.GroupNorm)):
        return StackedSampleNorm(layers)
    if isinstance(first, PER_SAMPLE) and not any(True for _ in first.parameters()) \
            and not any(True for _ in first.buffers()):
        return None
    raise NotStackable(f"no stacked version of {type(first).__name__}")


def stack_models(models: Sequence[nn.Module], probe: torch.Tensor | None = None) -> nn.Module:
    """One module computing all `models` (same architecture) on a stacked batch [S*B, ...].

    With `probe` (a few model inputs), the stacked model's outputs in eval mode are checked
    against each model's own: NotStackable if they differ beyond float rounding."""
    if not models:
        raise NotStackable("no models")
    device = next(iter([*models[0].parameters(), *models[0].buffers()]), torch.empty(0)).device
    if all(type(m) is LinearClassifier and isinstance(m.norm, (nn.Identity, nn.BatchNorm1d)) for m in models):
        stacked = StackedLinearClassifier(models).to(device)
        if probe is not None:
            check_stacked(stacked, models, probe)
        return stacked
    stacked = copy.deepcopy(models[0])
    named = [dict(m.named_modules()) for m in models]
    if any(named_k.keys() != named[0].keys() for named_k in named):
        raise NotStackable("models differ in their layers")
    for name, module in models[0].named_modules():
        if next(module.children(), None) is not None:  # a container: its own forward runs as it is
            if any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False)):
                raise NotStackable(f"{type(module).__name__} holds parameters of its own")
            continue
        layer = _stack_leaf([nk[name] for nk in named])
        if layer is not None:
            if name == "":
                raise NotStackable("a model of one layer")
            stacked.set_submodule(name, layer.to(device))
    if probe is not None:
        check_stacked(stacked, models, probe)
    return stacked


@torch.no_grad()
def check_stacked(stacked: nn.Module, models: Sequence[nn.Module], probe: torch.Tensor) -> None:
    """NotStackable unless `stacked` gives each model its own outputs (eval mode) on its own part
    of `probe` (S equal parts; different inputs per model, so that a forward that mixes the
    models' samples shows)."""
    modes = [m.training for m in models] + [stacked.training]
    s = len(models)
    if len(probe) < 2 * s:
        probe = probe.repeat(-(-2 * s // len(probe)), *[1] * (probe.dim() - 1))
    probe = probe[:len(probe) // s * s]
    parts = probe.reshape(s, -1, *probe.shape[1:])
    try:
        stacked.eval()
        out = stacked(probe).reshape(s, parts.shape[1], -1)
        for k, m in enumerate(models):
            m.eval()
            ref = m(parts[k]).reshape(parts.shape[1], -1)
            if out.shape[1:] != ref.shape or not torch.allclose(out[k], ref, rtol=1e-4, atol=1e-5):
                raise NotStackable("the stacked model does not reproduce the single models")
    except RuntimeError as e:  # a layout the family's forward does not keep per sample
        raise NotStackable(f"stacked forward failed: {str(e).splitlines()[0][:200]}") from None
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)
        stacked.train(modes[-1])


def first_layer(stacked: nn.Module, probe: torch.Tensor) -> nn.Module | None:
    """The layer a stacked model's input reaches first, if it can read shared batches (the
    model itself for a StackedLinearClassifier, a StackedLinear); else None."""
    if isinstance(stacked, StackedLinearClassifier):
        return stacked
    calls: list[nn.Module] = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: calls.append(mod))
             for m in stacked.modules() if isinstance(m, (StackedLinear, StackedBatchNorm, StackedSampleNorm))]
    mode = stacked.training
    try:
        with torch.no_grad():
            stacked.eval()(probe[:len(probe) // _models(stacked) * _models(stacked)])
    finally:
        for h in hooks:
            h.remove()
        stacked.train(mode)
    return calls[0] if calls and isinstance(calls[0], StackedLinear) else None


def _models(stacked: nn.Module) -> int:
    for m in stacked.modules():
        if isinstance(m, StackedBatchNorm) and m.models is not None:
            continue
        if isinstance(m, StackedLinear):
            return m.weight.shape[0]
        if isinstance(m, StackedBatchNorm):
            return len(m.eps)
    raise NotStackable("no stacked layer")


def unstack_into(stacked: nn.Module, models: Sequence[nn.Module]) -> None:
    """Copy model k's slice of every stacked parameter and buffer into models[k]."""
    if hasattr(stacked, "model_state"):
        for k, m in enumerate(models):
            m.load_state_dict({name: t.clone() for name, t in stacked.model_state(k).items()})
        return
    state = stacked.state_dict()
    for k, m in enumerate(models):
        m.load_state_dict({name: t[k].clone() for name, t in state.items()})


# ---------------------------------------------------------------------------
# Data: S datasets (one per model; models of one seed share one) as stacked batches


def _same_decode(a, b) -> bool:
    if a is b:
        return True
    if type(a) is not type(b) or repr(a) != repr(b):
        return False
    fields = [k for k in ("mode", "mean", "std") if hasattr(a, k)]
    if not fields:
        return False
    for k in fields:
        va, vb = getattr(a, k), getattr(b, k)
        if isinstance(va, torch.Tensor) or isinstance(vb, torch.Tensor):
            if not (isinstance(va, torch.Tensor) and isinstance(vb, torch.Tensor) and torch.equal(va, vb)):
                return False
        elif va != vb:
            return False
    return True


def same_split(a: Dataset, b: Dataset, split: str) -> bool:
    """Whether two datasets give the same decoded batches of `split`."""
    if a is b:
        return True
    (xa, ya), (xb, yb) = a.split(split), b.split(split)
    return (xa.shape == xb.shape and xa.dtype == xb.dtype and torch.equal(ya, yb)
            and torch.equal(xa[:16], xb[:16]) and torch.equal(xa, xb)
            and _same_decode(a.decode, b.decode) and _same_transform(a.transform, b.transform))


def _blocks(datasets: Sequence[Dataset], split: str) -> tuple[list[Dataset], list[int]]:
    """The distinct datasets (for `split`) and, per model, the index of its own among them."""
    unique: list[Dataset] = []
    index = []
    for ds in datasets:
        for j, u in enumerate(unique):
            if same_split(u, ds, split):
                index.append(j)
                break
        else:
            index.append(len(unique))
            unique.append(ds)
    return unique, index


class StackedData:
    """The evaluation view of S datasets for a stacked model: `batches` yields each model's own
    batch, model after model ([S*B, ...]); decoded once when the models share their data. Enough
    of `Dataset`'s interface for the metrics that evaluate stacked models (eval/metrics.py)."""

    def __init__(self, datasets: Sequence[Dataset]):
        self.datasets = list(datasets)
        first = self.datasets[0]
        self.models = len(self.datasets)
        self.name, self.num_classes, self.clip = first.name, first.num_classes, first.clip
        self.transform, self.decode = first.transform, first.decode
        self._shared: dict[str, bool] = {}

    def shared(self, split: str) -> bool:
        if split not in self._shared:
            self._shared[split] = len(_blocks(self.datasets, split)[0]) == 1
        return self._shared[split]

    def to(self, device) -> "StackedData":
        moved = StackedData([d.to(device) for d in self.datasets])
        moved._shared = self._shared
        return moved

    def head(self, n: int) -> "StackedData":
        return StackedData([d.head(n) for d in self.datasets])

    def batches(self, split: str, batch_size: int, generator=None, augment: bool = False):
        if generator is not None or augment:
            raise ValueError("stacked evaluation batches are unshuffled and unaugmented")
        if self.shared(split):
            for xb, yb in self.datasets[0].batches(split, batch_size):
                yield xb.repeat(self.models, *[1] * (xb.dim() - 1)), yb.repeat(self.models)
            return
        for parts in zip(*(d.batches(split, batch_size) for d in self.datasets)):
            yield torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return self.datasets[0].prepare(x)

    def take(self, split: str, index) -> torch.Tensor:
        return self.datasets[0].take(split, index)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.datasets[0].input_shape


def eval_chunk(ds: Dataset, batch_size: int) -> int:
    """How many models to evaluate as one stacked model: as many as keep a perturbed batch within
    EVAL_ELEMENTS elements. Attacks are elementwise passes over their batch, so once one model's
    batch leaves the CPU caches stacking more only slows them down (measured: PGD on a linear
    model is 3x faster 8-stacked at 25 x 784 inputs per model, equal at 100, 2x slower at 400)."""
    n = len(ds.x_test)
    per_model = min(batch_size or n, n) * math.prod(ds.input_shape)
    return max(1, EVAL_ELEMENTS // max(1, per_model))


def _same_transform(a, b) -> bool:
    return type(a) is type(b) and getattr(a, "__dict__", None) == getattr(b, "__dict__", None)


def stackable_data(datasets: Sequence[Dataset], splits: Sequence[str] = ("test",)) -> bool:
    """Whether the datasets can be evaluated as one StackedData: equal split sizes, clip range
    and transform."""
    first = datasets[0]
    for ds in datasets[1:]:
        if ds.clip != first.clip or ds.num_classes != first.num_classes or not _same_transform(ds.transform,
                                                                                                first.transform):
            return False
        for split in splits:
            if (getattr(ds, f"x_{split}") is None) != (getattr(first, f"x_{split}") is None):
                return False
            if getattr(ds, f"x_{split}") is not None and len(ds.split(split)[0]) != len(first.split(split)[0]):
                return False
    return True


def _fast_decode(decode, device: torch.device):
    """A decoding of stored batches at least as fast as `decode` that gives the same floats; None
    where there is none (the training sets are then decoded up front). uint8 images in [0, 1]
    ("unit") are x / 255: the same floats as the lookup table on this device (checked on every
    byte value), and much faster than a table lookup on CPUs."""
    if decode is None:
        return lambda x: x
    if type(decode).__name__ != "DecodeImages" or getattr(decode, "mode", None) != "unit":
        return None
    probe = torch.arange(256, dtype=torch.uint8, device=device).repeat(33)[:-5]
    fast = lambda x: x.to(torch.float32).div_(255.0)  # noqa: E731
    return fast if torch.equal(fast(probe), decode(probe)) else None


class _TrainBatches:
    """Training batches of S models per step, each model's drawn from its own training set in
    the order its seed's generator gives, as `Dataset.batches` draws them in a run of its own.
    The distinct training sets are stacked once; a step gathers every batch with one
    index_select. Models of one seed on one training set see the same batches: with `share`,
    each distinct batch is gathered once ([U*B, ...], see `Sharing`), else once per model."""

    def __init__(self, datasets: Sequence[Dataset], seeds: Sequence[int], bs: int, device: torch.device,
                 blocks: tuple[list[Dataset], list[int]] | None = None):
        unique, block = blocks or _blocks(datasets, "train")
        n = len(unique[0].x_train)
        if any(len(d.x_train) != n for d in unique):
            raise NotStackable("training sets of different sizes")
        if any(d.augment is not None for d in unique):
            raise NotStackable("data augmentation")
        if not stackable_data(datasets, ()):
            raise NotStackable("datasets with different clip ranges or transforms")
        self.n, self.bs, self.device = n, bs, device
        self.prepare = unique[0].prepare
        self.clip = unique[0].clip
        same_decode = all(_same_decode(unique[0].decode, d.decode) for d in unique)
        self.decode = _fast_decode(unique[0].decode, device) if same_decode else None
        predecode = self.decode is None and unique[0].decode is not None
        if predecode and sum(d.x_train.numel() for d in unique) * 4 > PREDECODE_BYTES:
            raise NotStackable("training sets too large to decode up front, with different decodings")
        parts = []
        for d in unique:
            x = d.x_train.to(device)
            if predecode:
                x = torch.cat([d.decode(x[i:i + 8192]) for i in range(0, len(x), 8192)]) if len(x) else d.decode(x)
            parts.append(x)
        self.x = torch.cat(parts) if len(parts) > 1 else parts[0]
        self.y = torch.cat([d.y_train.to(device) for d in unique])
        # one generator per distinct seed, one input stream per distinct (training set, seed)
        seed_ids = {sd: j for j, sd in enumerate(dict.fromkeys(seeds))}
        streams = {key: j for j, key in enumerate(dict.fromkeys(zip(block, seeds)))}
        self.sharing = Sharing([streams[key] for key in zip(block, seeds)])
        keys = list(streams)
        self.stream_seed = torch.tensor([seed_ids[sd] for _, sd in keys])
        self.offsets = torch.tensor([b for b, _ in keys], device=device)[:, None] * n  # [U, 1]
        self.gens = [torch.Generator().manual_seed(int(sd)) for sd in seed_ids]
        self.share = False
        self._full: tuple[torch.Tensor, torch.Tensor] | None = None

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(inputs, labels per model) of each step: inputs [U*B, ...] with `share`, else [S*B, ...];
        labels [S*B]."""
        n, bs = self.n, self.bs
        if bs >= n:  # full batch: no permutation drawn (as Dataset.batches)
            if self._full is None:
                self._full = self._gather(torch.arange(n, device=self.device)[None, :] + self.offsets)
            yield self._full
            return
        perms = torch.stack([torch.randperm(n, generator=g) for g in self.gens])[self.stream_seed]
        idx = perms.to(self.device) + self.offsets  # [U, n]
        for start in range(0, n, bs):
            part = idx[:, start:start + bs]
            if part.shape[1] < 2 and start > 0:  # a trailing batch of one is dropped (BN)
                continue
            yield self._gather(part)

    def _gather(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        per_model = idx[self.sharing.on(idx.device)[0]]
        y = self.y.index_select(0, per_model.reshape(-1))
        xb = self.x.index_select(0, (idx if self.share else per_model).reshape(-1))
        if self.decode is not None:
            xb = self.decode(xb)
        return self.prepare(xb), y

    def state(self) -> list[torch.Tensor]:
        return [g.get_state() for g in self.gens]

    def set_state(self, states: list[torch.Tensor]) -> None:
        for g, st in zip(self.gens, states):
            g.set_state(st.clone())


# ---------------------------------------------------------------------------
# Training


def _param_groups(stacked: nn.Module, cfgs: Sequence[TrainConfig]) -> tuple[list[dict], list[tuple]]:
    """SGD groups over the stacked parameters (decay="weights": only parameters with more than
    one dimension per model), and, where the models' weight decays differ, (params, per-model
    decay) pairs that the trainer adds to the gradients itself."""
    wds = [c.weight_decay for c in cfgs]
    params = [p for p in stacked.parameters() if p.requires_grad]
    decay_all = cfgs[0].decay == "all"
    decayed = [p for p in params if decay_all or p.dim() > 2]
    rest = [p for p in params if not (decay_all or p.dim() > 2)]
    if all(w == wds[0] for w in wds):
        groups = [{"params": decayed, "weight_decay": wds[0]}]
        if rest:
            groups.append({"params": rest, "weight_decay": 0.0})
        return groups, []
    groups = [{"params": params, "weight_decay": 0.0}]
    w = torch.tensor(wds, device=params[0].device)
    owners = {id(p): m.models for m in stacked.modules() if isinstance(m, StackedBatchNorm) and m.models is not None
              for p in m.parameters(recurse=False)}
    pairs = []
    for p in decayed:
        wp = w if owners.get(id(p)) is None else w[owners[id(p)].to(w.device)]
        if bool((wp != 0).any()):
            pairs.append((p, wp.view(-1, *[1] * (p.dim() - 1)).to(p.dtype)))
    return groups, pairs


def _check_configs(cfgs: Sequence[TrainConfig]) -> TrainConfig:
    first = cfgs[0]
    same = {k: v for k, v in first.to_dict().items() if k != "weight_decay"}
    if any({k: v for k, v in c.to_dict().items() if k != "weight_decay"} != same for c in cfgs):
        raise NotStackable("training settings differ in more than weight decay")
    if first.select != "last" or first.compile or first.epochs == 0:
        raise NotStackable("best-validation selection, torch.compile or no training")
    return first


def train_stacked(models: Sequence[nn.Module], datasets: Sequence[Dataset], cfgs: Sequence[TrainConfig],
                  seeds: Sequence[int], progress: bool = False, checkpoint: Path | None = None) -> list[TrainResult]:
    """Train models[k] on datasets[k] with cfgs[k] and seeds[k], all S in one stacked pass, to
    the weights `train(models[k], datasets[k], cfgs[k], seeds[k])` gives (up to float rounding);
    returns each model's TrainResult. The configs may differ only in weight decay (the models
    in what `stack_models` stacks: BN's c, a linear model's norm). A model whose loss turns
    non-finite is recorded as failed at that epoch, as a run of its own would be; the others
    train on. With `checkpoint`, the group's training state is saved there now and then and a
    killed group resumes from it. Raises NotStackable (before any training) where the models or
    data cannot be stacked."""
    cfg = _check_configs(cfgs)
    device = next(models[0].parameters()).device
    datasets = [d.to(device) for d in datasets]
    unique, block = _blocks(datasets, "train")
    # models that read the same batches (one training set, one seed) next to each other
    order = sorted(range(len(models)), key=lambda k: (block[k], seeds[k]))
    pick = lambda xs: [xs[k] for k in order]  # noqa: E731
    results = _train(pick(models), pick(datasets), cfg, pick(cfgs), pick(seeds), (unique, pick(block)), progress,
                     checkpoint)
    out: list[TrainResult] = [TrainResult()] * len(models)
    for j, k in enumerate(order):
        out[k] = results[j]
    return out


def _train(models, datasets, cfg, cfgs, seeds, blocks, progress, checkpoint) -> list[TrainResult]:
    s = len(models)
    device = next(models[0].parameters()).device
    n = len(datasets[0].x_train)
    bs = n if cfg.batch_size == 0 else min(cfg.batch_size, n)
    data = _TrainBatches(datasets, seeds, bs, device, blocks)
    probe = datasets[0].prepare(datasets[0].take("train", slice(0, 4 * s)))
    stacked = stack_models(models, probe)
    attack = ATTACKS.partial(cfg.adversarial, "train.adversarial") if cfg.adversarial else None
    first = first_layer(stacked, probe) if attack is None and data.sharing.unique < s else None
    if first is not None:  # models of one seed read one batch: gather and first-layer it once
        first.sharing, data.share = data.sharing, True
    if attack is None and isinstance(stacked, StackedLinearClassifier) and stacked.absorb_upscale(
            datasets[0].transform, tuple(datasets[0].take("train", slice(0, 1)).shape[1:])):
        data.prepare = lambda x: x  # the model takes the small images (its upscaling is folded in)
    results = [TrainResult() for _ in range(s)]
    groups, manual_decay = _param_groups(stacked, cfgs)
    opt = make_sgd(groups, cfg.lr, cfg.momentum, cfg.nesterov, device)
    adv_gens = [torch.Generator().manual_seed(stream_seed(sd, Stream.ADV_TRAIN)) for sd in seeds]
    amp = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    alive = [True] * s
    start = 0
    checkpoint = open_checkpoint(checkpoint)  # a path (through the current transport) or a Checkpoint
    state = _load_checkpoint(checkpoint, device)
    if state is not None and state.get("models") == s:
        stacked.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        data.set_state(list(state["gen"]))  # stacked generator states (one per distinct seed / model)
        for g, st in zip(adv_gens, state["adv_gen"]):
            g.set_state(st.clone())
        start, alive = state["epoch"], state["alive"]
        for r, h in zip(results, state["histories"]):
            r.history = h
    last_save = time.monotonic()
    stacked.train()
    bar = tqdm(range(start, cfg.epochs), desc=f"epochs ({s} stacked)", unit="epoch", leave=False,
               disable=None if progress else True, initial=start, total=cfg.epochs)
    for epoch in bar:
        for group in opt.param_groups:
            group["lr"] = _lr_at(cfg, epoch) * (bs if cfg.lr_per_example else 1)
        loss_sum = torch.zeros(s, device=device)
        correct = torch.zeros(s, device=device, dtype=torch.long)
        for xb, yb in data.epoch():
            share_cpus()  # a sweep started beside this one: share the cores (looks every RECHECK_S seconds)
            b = len(yb) // s  # labels are per model
            if attack is not None:
                stacked.eval()
                xb = attack(model=stacked, x=xb, y=yb, clip=data.clip, generator=adv_gens)
                stacked.train()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = stacked(xb)
            per_model = F.cross_entropy(out.float(), yb, reduction="none").view(s, b).sum(1)
            loss = per_model.sum() / b  # each model's gradient is that of its own mean loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for p, w in manual_decay:  # per-model weight decay: grad + lambda_k * w_k, as SGD does
                p.grad.addcmul_(p.detach(), w)
            opt.step()
            loss_sum += per_model.detach()
            correct += (out.detach().argmax(1) == yb).view(s, b).sum(1)
        sums, corrects = loss_sum.tolist(), correct.tolist()
        for k in range(s):
            if not alive[k]:
                continue
            mean_loss = sums[k] / n
            results[k].history.append({"epoch": epoch + 1, "loss": mean_loss, "acc": 100.0 * corrects[k] / n})
            if not math.isfinite(mean_loss):
                alive[k] = False
                results[k].status, results[k].reason = "failed", f"non-finite training loss in epoch {epoch + 1}"
        if not any(alive):
            break
        live = [k for k in range(s) if alive[k]]
        bar.set_postfix(loss=f"{sum(sums[k] for k in live) / len(live) / n:.3f}")
        if checkpoint is not None and epoch + 1 < cfg.epochs and time.monotonic() - last_save >= checkpoint_seconds():
            _save_checkpoint(checkpoint, {"models": s, "model": stacked.state_dict(), "optimizer": opt.state_dict(),
                                          "gen": torch.stack(data.state()),
                                          "adv_gen": torch.stack([g.get_state() for g in adv_gens]),
                                          "histories": [r.history for r in results], "alive": alive,
                                          "epoch": epoch + 1})
            last_save = time.monotonic()
    for r in results:
        if r.status == "ok" and r.history and r.history[-1]["acc"] < cfg.fail_below:
            r.status = "failed"
            r.reason = (f"training accuracy {r.history[-1]['acc']:.1f}% after {len(r.history)} epochs, "
                        f"below train.fail_below = {cfg.fail_below:g}% (did not train)")
    opt.zero_grad(set_to_none=True)
    if first is not None:
        first.sharing = None
    if isinstance(stacked, StackedLinearClassifier):
        stacked.upscaled = None
    stacked.eval()
    with torch.no_grad():
        unstack_into(stacked, models)
    for m in models:
        m.eval()
    return results


def group_checkpoint(runs_dir: Path, names: Sequence[str]) -> Path:
    """Where a stacked group keeps its training state: named by the runs it trains."""
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]
    return runs_dir / f".ckpt-stack-{digest}.pt"
