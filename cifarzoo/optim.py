"""Optimizers of the `optim` group. Each option is a factory holding its hyper-parameters;
`build(params)` makes the torch optimizer once the model exists."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from cifarzoo.errors import require


class OptimizerFactory:
    def __init__(self, lr: float, weight_decay: float = 0.0) -> None:
        require(isinstance(lr, (int, float)) and lr > 0, "optim.lr", "must be > 0", lr)
        require(weight_decay >= 0, "optim.weight_decay", "must be >= 0", weight_decay)
        self.lr, self.weight_decay = float(lr), float(weight_decay)

    def build(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        raise NotImplementedError


class SGD(OptimizerFactory):
    def __init__(self, lr: float = 0.1, momentum: float = 0.9, nesterov: bool = True, weight_decay: float = 5e-4) -> None:
        super().__init__(lr, weight_decay)
        require(0 <= momentum < 1, "optim.momentum", "must be in [0, 1)", momentum)
        require(not nesterov or momentum > 0, "optim.nesterov", "needs optim.momentum > 0", nesterov)
        self.momentum, self.nesterov = float(momentum), bool(nesterov)

    def build(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            params, lr=self.lr, momentum=self.momentum, nesterov=self.nesterov, weight_decay=self.weight_decay
        )
