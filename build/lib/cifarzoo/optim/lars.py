"""`optim=lars`: layer-wise adaptive rate scaling (You, Gitman & Ginsburg 2017, arXiv:1708.03888),
the variant of hysts/pytorch_image_classification (optim/lars.py): no LARS coefficient eta, the
trust ratio multiplies the global lr directly. Per parameter tensor w with gradient g:

    trust = ||w|| / (||g|| + weight_decay * ||w|| + eps)    (1 if ||w|| < thresh or ||g|| == 0)
    d     = g + weight_decay * w
    buf   = momentum * buf + lr * trust * d                 (buf starts at 0)
    w     = w - buf

As hysts: eps 1e-9, thresh 1e-2 (small or zero weights, e.g. fresh biases, take plain SGD steps)
and the lr inside the momentum buffer. Unlike hysts, a zero gradient also gives trust 1 (hysts
would give ||w|| / (weight_decay * ||w||), a pure weight-decay step of lr * w)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from cifarzoo.errors import is_number, require
from cifarzoo.optim.base import OptimizerFactory, check_eps


def trust_ratio(weight: torch.Tensor, grad: torch.Tensor, weight_decay: float, eps: float, thresh: float) -> torch.Tensor:
    """The per-tensor LR multiplier (a 0-d tensor, computed without a host sync)."""
    w_norm, g_norm = torch.linalg.vector_norm(weight), torch.linalg.vector_norm(grad)
    ratio = w_norm / (g_norm + weight_decay * w_norm + eps)
    return torch.where((w_norm < thresh) | (g_norm == 0), torch.ones_like(ratio), ratio)


class LARSOptimizer(torch.optim.Optimizer):
    def __init__(self, params: Iterable[Any], lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 0.0,
                 eps: float = 1e-9, thresh: float = 1e-2) -> None:
        if not lr > 0 or not 0 <= momentum < 1 or not weight_decay >= 0 or not eps >= 0 or not thresh >= 0:
            raise ValueError(f"bad LARS hyper-parameters: {lr=} {momentum=} {weight_decay=} {eps=} {thresh=}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eps=eps, thresh=thresh))

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                trust = trust_ratio(p, p.grad, weight_decay, group["eps"], group["thresh"])
                d_p = p.grad.add(p, alpha=weight_decay) if weight_decay != 0 else p.grad
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.mul_(momentum).add_(d_p * (trust * lr))
                p.sub_(buf)
        return loss


class LARS(OptimizerFactory):
    graph_unsupported = ("lars: its update is a Python loop that passes the LR to the kernels as a float, which a "
                         "captured graph would keep at the capture step's value")

    def __init__(self, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 5e-4, eps: float = 1e-9,
                 thresh: float = 1e-2, no_weight_decay_on_bn: bool = False, lr_scaling: str = "none",
                 base_batch_size: int = 128,
                 grad_clip: float | None = None) -> None:
        super().__init__(lr, weight_decay, no_weight_decay_on_bn, lr_scaling, base_batch_size, grad_clip)
        require(is_number(momentum) and 0 <= momentum < 1, "optim.momentum", "must be in [0, 1)", momentum)
        require(is_number(thresh) and thresh >= 0, "optim.thresh", "must be >= 0", thresh)
        self.momentum, self.eps, self.thresh = float(momentum), check_eps(eps), float(thresh)

    def make(self, groups: list[dict[str, Any]], lr: float, lr_factor: float) -> torch.optim.Optimizer:
        return LARSOptimizer(groups, lr=lr, momentum=self.momentum, weight_decay=self.weight_decay, eps=self.eps,
                             thresh=self.thresh)
