"""`optim=adam|amsgrad|adamw`: Adam (Kingma & Ba 2015) with L2 weight decay in the gradient;
AMSGrad (Reddi et al. 2018) is Adam with amsgrad=True; AdamW (Loshchilov & Hutter 2019)
decouples the weight decay from the gradient (w -= lr * weight_decay * w each step)."""

from __future__ import annotations

from typing import Any

import torch

from cifarzoo.optim.base import OptimizerFactory, check_betas, check_eps


class Adam(OptimizerFactory):
    amsgrad = False
    torch_class: type[torch.optim.Optimizer] = torch.optim.Adam

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 5e-4, no_weight_decay_on_bn: bool = False, lr_scaling: str = "none",
                 base_batch_size: int = 128,
                 grad_clip: float | None = None) -> None:
        super().__init__(lr, weight_decay, no_weight_decay_on_bn, lr_scaling, base_batch_size, grad_clip)
        self.betas, self.eps = check_betas(betas), check_eps(eps)

    def make(self, groups: list[dict[str, Any]], lr: float, lr_factor: float, fused: bool = False) -> torch.optim.Optimizer:
        # capturable: torch refuses to capture Adam's step without it (the step counts live on the device).
        graph = {"fused": True, "capturable": True} if fused else {}
        return self.torch_class(groups, lr=lr, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay,
                                amsgrad=self.amsgrad, **graph)


class AMSGrad(Adam):
    amsgrad = True


class AdamW(Adam):
    torch_class = torch.optim.AdamW

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 5e-2, no_weight_decay_on_bn: bool = False, lr_scaling: str = "none",
                 base_batch_size: int = 128,
                 grad_clip: float | None = None) -> None:
        super().__init__(lr, betas, eps, weight_decay, no_weight_decay_on_bn, lr_scaling, base_batch_size, grad_clip)
