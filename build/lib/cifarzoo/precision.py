"""Numeric precision modes of the `precision` group: autocast, loss scaling, or a half model.

A training step is a closure (zero grads, forward, `backward`) handed to `step`, so that
optimizers which evaluate the loss twice (SAM) work under every mode that allows it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from cifarzoo.errors import require


def clip_gradients(optimizer: torch.optim.Optimizer, max_norm: float | None) -> None:
    """Scale all gradients down so that their global L2 norm is at most `max_norm` (None: no-op)."""
    if max_norm is not None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, max_norm)


class Precision:
    """Full fp32 by default; subclasses autocast to `dtype`."""

    dtype: torch.dtype | None = None
    # False where `step` cannot hand the closure to the optimizer (GradScaler has no closure support).
    supports_closure_optimizers = True
    # The dtype the training loss (cross entropy) is computed in, from the model's logits.
    loss_dtype: torch.dtype = torch.float32

    def setup(self, device: torch.device) -> None:
        self.device = device

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model as this mode trains it (FP16 converts it to half)."""
        return model

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, grad_clip: float | None = None) -> None:
        """Gradients of `loss`, clipped to `grad_clip` (global L2 norm)."""
        loss.backward()
        clip_gradients(optimizer, grad_clip)

    def step(self, optimizer: torch.optim.Optimizer, closure: Callable[[], torch.Tensor]) -> None:
        """One optimizer step; `closure` zeroes the gradients, runs forward and `backward`."""
        optimizer.step(closure)

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

    supports_closure_optimizers = False

    def backward(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, grad_clip: float | None = None) -> None:
        self.scaler.scale(loss).backward()
        if grad_clip is not None:
            self.scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            clip_gradients(optimizer, grad_clip)

    def step(self, optimizer: torch.optim.Optimizer, closure: Callable[[], torch.Tensor]) -> None:
        closure()
        self.scaler.step(optimizer)  # skipped when the scaled gradients hold inf/NaN
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scaler.load_state_dict(state)


class FP16(Precision):
    """The whole model in float16 with no loss scaling and no fp32 master weights: apex's O3, the
    seeds' "FP16" rows. Expected to diverge at large batch sizes; the run is then recorded as
    diverged. Runs on CPU too (slowly).

    Defaults: every layer in half, the loss computed in float32 from the half logits.
    `keep_batchnorm_fp32=true` keeps BatchNorm layers (weights, biases, running statistics) in
    float32 while their inputs and outputs stay half (apex's option of that name); `loss_in_half=true`
    computes the cross entropy in float16 from the half logits. Both true = hysts' `--fp16` of
    Dec 2018 - Jan 2019, which made the seed's FP16 table (`model.half()`, then `.float()` on every
    BatchNorm2d; the criterion on the half outputs)."""

    def __init__(self, keep_batchnorm_fp32: bool = False, loss_in_half: bool = False) -> None:
        require(isinstance(keep_batchnorm_fp32, bool), "precision.keep_batchnorm_fp32", "must be true or false",
                keep_batchnorm_fp32)
        require(isinstance(loss_in_half, bool), "precision.loss_in_half", "must be true or false", loss_in_half)
        self.keep_batchnorm_fp32 = keep_batchnorm_fp32
        self.loss_dtype = torch.float16 if loss_in_half else torch.float32

    graph_unsupported = "fp16: the all-half model (no master weights) is not covered by the graph step's tests"

    def setup(self, device: torch.device) -> None:
        super().setup(device)
        if device.type == "cpu":  # can be intended (fp16 numerics), so a warning, not an error
            logging.getLogger("cifarzoo").warning(
                "precision=fp16 on CPU: CPUs have no fast float16 kernels, expect it far slower than fp32")

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.half()
        if self.keep_batchnorm_fp32:
            for module in model.modules():
                if isinstance(module, _BatchNorm):
                    module.float()
        model.register_forward_pre_hook(_inputs_to_half)
        return model


def _inputs_to_half(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(a.half() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)
