"""LR schedules of the `sched` group, applied per optimizer step as a factor of `optim.lr`."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from cifarzoo.errors import require


class Schedule:
    def factor(self, step: int, steps_per_epoch: int, total_steps: int) -> float:
        raise NotImplementedError

    def build(self, optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
        total = steps_per_epoch * epochs
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: self.factor(step, steps_per_epoch, total))


class Cosine(Schedule):
    """Cosine annealing without restarts (Loshchilov & Hutter), from 1 to `lr_min_factor`."""

    def __init__(self, lr_min_factor: float = 0.0) -> None:
        require(0 <= lr_min_factor <= 1, "sched.lr_min_factor", "must be in [0, 1]", lr_min_factor)
        self.lr_min_factor = float(lr_min_factor)

    def factor(self, step: int, steps_per_epoch: int, total_steps: int) -> float:
        cosine = 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
        return self.lr_min_factor + (1 - self.lr_min_factor) * cosine


class MultiStep(Schedule):
    """Multiply the LR by `gamma` at the start of each epoch listed in `milestones`."""

    def __init__(self, milestones: Sequence[int] = (100, 150), gamma: float = 0.1) -> None:
        milestones = list(milestones)
        require(
            all(isinstance(m, int) and m > 0 for m in milestones) and milestones == sorted(milestones),
            "sched.milestones", "must be increasing positive epochs", milestones,
        )
        require(0 < gamma <= 1, "sched.gamma", "must be in (0, 1]", gamma)
        self.milestones, self.gamma = milestones, float(gamma)

    def factor(self, step: int, steps_per_epoch: int, total_steps: int) -> float:
        epoch = step // steps_per_epoch
        return self.gamma ** sum(epoch >= m for m in self.milestones)
