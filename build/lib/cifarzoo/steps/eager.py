"""The eager step: every kernel launched from Python, step by step (any device, any option)."""

from __future__ import annotations

import torch

from cifarzoo.steps.base import TrainStep


class EagerStep(TrainStep):
    kind = "eager"

    def run(self, index: torch.Tensor, sums: torch.Tensor) -> None:
        self.body.run(index, sums)
