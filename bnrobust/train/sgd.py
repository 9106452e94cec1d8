"""SGD with momentum, Nesterov and weight decay: `torch.optim.SGD`'s update, without its wrappers.

Why our own: the models of most sweeps are tiny, and a training step is mostly per-call
overhead. torch.optim's `step` adds ~110 us and `zero_grad` ~45 us to a ~800 us stacked step
of Table 1's 20 logistic regressions, and its first `step` imports torch._dynamo (1.4 s, a
sixth of that whole experiment's wall time). The arithmetic is torch's single-tensor SGD
(dampening 0, not maximizing), op for op, so the weights are the same bits
(tests/test_sgd.py checks it against torch.optim.SGD), and `state_dict` has torch's layout,
so checkpoints written with torch.optim.SGD load.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch


class SGD:
    """`torch.optim.SGD(groups, lr, momentum, nesterov=...)`: each group a dict with "params"
    and optionally "lr" and "weight_decay" (any other keys are kept, as torch keeps them)."""

    def __init__(self, groups: Iterable[dict], lr: float, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.param_groups = [{"lr": lr, "weight_decay": weight_decay, **g, "params": list(g["params"])}
                             for g in groups]
        self.momentum, self.nesterov = momentum, nesterov
        self.buffers: dict[torch.Tensor, torch.Tensor] = {}

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self._params():
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        m = self.momentum
        for g in self.param_groups:
            lr, wd = g["lr"], g["weight_decay"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                d = p.grad if wd == 0 else p.grad.add(p, alpha=wd)
                if m != 0:
                    buf = self.buffers.get(p)
                    if buf is None:
                        buf = self.buffers[p] = torch.clone(d).detach()
                    else:
                        buf.mul_(m).add_(d)
                    d = d.add(buf, alpha=m) if self.nesterov else buf
                p.add_(d, alpha=-lr)

    def state_dict(self) -> dict[str, Any]:
        """torch.optim's layout: parameters numbered in group order."""
        state = {i: {"momentum_buffer": self.buffers[p]} for i, p in enumerate(self._params()) if p in self.buffers}
        groups, i = [], 0
        for g in self.param_groups:
            n = len(g["params"])
            groups.append({**{k: v for k, v in g.items() if k != "params"}, "momentum": self.momentum,
                           "nesterov": self.nesterov, "dampening": 0, "params": list(range(i, i + n))})
            i += n
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        params = self._params()
        if sum(len(g["params"]) for g in state["param_groups"]) != len(params):
            raise ValueError("the saved optimizer state has a different number of parameters")
        self.buffers = {params[int(i)]: s["momentum_buffer"].to(params[int(i)].device, copy=True)
                        for i, s in state["state"].items() if s.get("momentum_buffer") is not None}
        for g, saved in zip(self.param_groups, state["param_groups"]):
            g.update({k: v for k, v in saved.items() if k not in ("params", "momentum", "nesterov", "dampening")})


def make_sgd(groups: Iterable[dict], lr: float, momentum: float, nesterov: bool, device: torch.device,
             weight_decay: float = 0.0) -> "SGD | torch.optim.SGD":
    """The optimizer for `device`: on CUDA torch's fused SGD (one kernel per step, where the
    step's cost is kernel launches, not Python), elsewhere ours (see the module docstring)."""
    if device.type == "cuda":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                               fused=True)
    return SGD(groups, lr, momentum, nesterov, weight_decay)
