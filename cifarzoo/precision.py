"""Numeric precision modes of the `precision` group: autocast and loss scaling."""

from __future__ import annotations

import contextlib
from typing import Any

import torch


def clip_gradients(optimizer: torch.optim.Optimizer, max_norm: float | None) -> None:
    """Scale all gradients down so that their global L2 norm is at most `max_norm` (None: no-op)."""
    if max_norm is not None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, max_norm)


class Precision:
    """Full fp32 by default; subclasses autocast to `dtype`."""

    dtype: torch.dtype | None = None

    def setup(self, device: torch.device) -> None:
        self.device = device

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, grad_clip: float | None = None) -> None:
        loss.backward()
        clip_gradients(optimizer, grad_clip)
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

    def backward_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, grad_clip: float | None = None) -> None:
        self.scaler.scale(loss).backward()
        if grad_clip is not None:
            self.scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            clip_gradients(optimizer, grad_clip)
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scaler.load_state_dict(state)
