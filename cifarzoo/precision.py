"""Numeric precision modes of the `precision` group: autocast and loss scaling."""

from __future__ import annotations

import contextlib
from typing import Any

import torch


class Precision:
    """Full fp32 by default; subclasses autocast to `dtype`."""

    dtype: torch.dtype | None = None

    def setup(self, device: torch.device) -> None:
        self.device = device

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        loss.backward()
        optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class FP32(Precision):
    pass


class AmpBF16(Precision):
    dtype = torch.bfloat16


class AmpFP16(Precision):
    """float16 autocast with dynamic loss scaling (steps with inf/NaN gradients are skipped)."""

    dtype = torch.float16

    def setup(self, device: torch.device) -> None:
        super().setup(device)
        self.scaler = torch.amp.GradScaler(device.type)

    def backward_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scaler.load_state_dict(state)
