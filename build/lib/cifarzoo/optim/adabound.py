"""`optim=adabound`: AdaBound (Luo, Xiong, Liu & Sun, ICLR 2019, arXiv:1902.09843).

Adam whose per-element step size is clipped into bounds that start wide and close in on
`final_lr`, so that training goes from Adam-like to SGD-like (Algorithm 2 of the paper). Step t
(1-based), for each parameter w with gradient g (plus weight_decay * w, L2 as in the reference):

    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g^2
    eta = clip(lr * sqrt(1 - beta2^t) / (1 - beta1^t) / (sqrt(v) + eps), lower(t), upper(t))
    w = w - eta * m
    lower(t) = final_lr' * (1 - 1 / (gamma * t + 1))
    upper(t) = final_lr' * (1 + 1 / (gamma * t))
    final_lr' = final_lr * lr / base_lr

The bound formulas, the bias corrections folded into the step size and final_lr' (so that a
schedule that scales lr also scales the bounds; base_lr is the lr the optimizer was built with)
follow the authors' reference implementation (github.com/Luolc/AdaBound, adabound/adabound.py).
Here base_lr is kept in each parameter group, so it is saved with the optimizer's state dict."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from cifarzoo.errors import is_number, require
from cifarzoo.optim.base import OptimizerFactory, check_betas, check_eps


def bounds(final_lr: float, gamma: float, step: int) -> tuple[float, float]:
    """(lower, upper) step-size bounds at 1-based `step`: both converge to `final_lr`."""
    return final_lr * (1 - 1 / (gamma * step + 1)), final_lr * (1 + 1 / (gamma * step))


class AdaBoundOptimizer(torch.optim.Optimizer):
    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 final_lr: float = 0.1, gamma: float = 1e-3, eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        if not lr > 0 or not final_lr > 0 or not 0 < gamma < 1 or not eps >= 0 or not weight_decay >= 0:
            raise ValueError(f"bad AdaBound hyper-parameters: {lr=} {final_lr=} {gamma=} {eps=} {weight_decay=}")
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"bad AdaBound betas: {betas}")
        defaults = dict(lr=lr, betas=tuple(betas), final_lr=final_lr, gamma=gamma, eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)
        for group in self.param_groups:
            group.setdefault("base_lr", group["lr"])

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
            final_lr = group["final_lr"] * lr / group["base_lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("AdaBound does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                if weight_decay != 0:
                    grad = grad.add(p, alpha=weight_decay)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                step_size = lr * math.sqrt(1 - beta2**t) / (1 - beta1**t)
                lower, upper = bounds(final_lr, group["gamma"], t)
                eta = (step_size / (exp_avg_sq.sqrt() + eps)).clamp_(lower, upper)
                p.sub_(eta * exp_avg)
        return loss


class AdaBound(OptimizerFactory):
    """`final_lr` is scaled by `lr_scaling` like `lr` (it is the SGD learning rate AdaBound ends at)."""

    graph_unsupported = ("adabound: its update and bounds take the LR as a Python float, which a captured graph "
                         "would keep at the capture step's value")

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), final_lr: float = 0.1,
                 gamma: float = 1e-3, eps: float = 1e-8, weight_decay: float = 5e-4, no_weight_decay_on_bn: bool = False,
                 lr_scaling: str = "none", base_batch_size: int = 128,
                 grad_clip: float | None = None) -> None:
        super().__init__(lr, weight_decay, no_weight_decay_on_bn, lr_scaling, base_batch_size, grad_clip)
        self.betas, self.eps = check_betas(betas), check_eps(eps)
        require(is_number(final_lr) and final_lr > 0, "optim.final_lr", "must be > 0", final_lr)
        require(is_number(gamma) and 0 < gamma < 1, "optim.gamma", "must be in (0, 1)", gamma)
        self.final_lr, self.gamma = float(final_lr), float(gamma)

    def make(self, groups: list[dict[str, Any]], lr: float, lr_factor: float) -> torch.optim.Optimizer:
        return AdaBoundOptimizer(groups, lr=lr, betas=self.betas, final_lr=self.final_lr * lr_factor, gamma=self.gamma,
                                 eps=self.eps, weight_decay=self.weight_decay)
