"""`optim=sgd`: momentum SGD, Nesterov by default (torch.optim.SGD, L2 weight decay in the gradient)."""

from __future__ import annotations

from typing import Any

import torch

from cifarzoo.errors import is_number, require
from cifarzoo.optim.base import OptimizerFactory


class SGD(OptimizerFactory):
    def __init__(self, lr: float = 0.1, momentum: float = 0.9, nesterov: bool = True, weight_decay: float = 5e-4,
                 no_weight_decay_on_bn: bool = False, lr_scaling: str = "none", base_batch_size: int = 128,
                 grad_clip: float | None = None) -> None:
        super().__init__(lr, weight_decay, no_weight_decay_on_bn, lr_scaling, base_batch_size, grad_clip)
        require(is_number(momentum) and 0 <= momentum < 1, "optim.momentum", "must be in [0, 1)", momentum)
        require(isinstance(nesterov, bool), "optim.nesterov", "must be true or false", nesterov)
        require(not nesterov or momentum > 0, "optim.nesterov", "needs optim.momentum > 0", nesterov)
        self.momentum, self.nesterov = float(momentum), nesterov

    def make(self, groups: list[dict[str, Any]], lr: float, lr_factor: float, fused: bool = False) -> torch.optim.Optimizer:
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=self.momentum, nesterov=self.nesterov,
                                    weight_decay=self.weight_decay, fused=fused or None)
        if fused and self.momentum:
            # torch's fused SGD creates the momentum buffers uninitialised at its first step and fills them
            # in the kernel, which GradScaler's skip (amp_fp16, inf gradients) jumps over: zero buffers
            # instead. The first step then gives buf = momentum * 0 + grad = grad, as the eager SGD's copy.
            for p in (p for group in groups for p in group["params"]):
                optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return optimizer
