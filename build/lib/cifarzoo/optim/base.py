"""The shared part of every `optim` option: LR scaling with the batch size and the
parameter groups (optionally no weight decay on normalisation layers and biases)."""

from __future__ import annotations

from typing import Any

import torch

from cifarzoo.errors import is_int, is_number, require

# Normalisation layers, selected by module type (not by parameter name): BatchNorm*, SyncBatchNorm
# and InstanceNorm* all derive from _NormBase; GroupNorm, LayerNorm and RMSNorm do not.
NORM_TYPES: tuple[type[torch.nn.Module], ...] = (
    torch.nn.modules.batchnorm._NormBase,
    torch.nn.GroupNorm,
    torch.nn.LayerNorm,
    *((torch.nn.RMSNorm,) if hasattr(torch.nn, "RMSNorm") else ()),
)

LR_SCALINGS = ("none", "linear")


def split_no_weight_decay(model: torch.nn.Module) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """(decayed, not decayed): every parameter of a NORM_TYPES module and every parameter
    registered under the name `bias` (of any module) is not decayed; the rest is.
    Each parameter appears once (shared parameters are counted at their first owner)."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        is_norm = isinstance(module, NORM_TYPES)
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            (no_decay if is_norm or name == "bias" else decay).append(param)
    return decay, no_decay


class OptimizerFactory:
    """Shared keys:

    - `lr`: the learning rate at `base_batch_size` (the schedule multiplies it per step).
    - `weight_decay`: as the optimizer applies it (L2 in the gradient, decoupled for adamw).
    - `no_weight_decay_on_bn`: when true, two parameter groups: normalisation-layer parameters and
      all biases get weight decay 0, everything else `weight_decay`.
    - `lr_scaling`: `none`, or `linear` (Goyal et al. 2017): lr = lr * batch_size / base_batch_size.
    - `base_batch_size`: the batch size `lr` is given for.
    - `grad_clip`: clip the global L2 norm of the gradients to this before each step (null = off).
    """

    needs_closure = False  # True for optimizers that evaluate the loss more than once per step (SAM)
    # Why the graph step (`cifarzoo.steps`) cannot run this optimizer; None: it can, through torch's
    # fused update (`make(..., fused=True)`), which reads the LR from a device tensor.
    graph_unsupported: str | None = None

    def __init__(self, lr: float, weight_decay: float = 0.0, no_weight_decay_on_bn: bool = False,
                 lr_scaling: str = "none", base_batch_size: int = 128,
                 grad_clip: float | None = None) -> None:
        require(is_number(lr) and lr > 0, "optim.lr", "must be > 0", lr)
        require(is_number(weight_decay) and weight_decay >= 0, "optim.weight_decay", "must be >= 0", weight_decay)
        require(isinstance(no_weight_decay_on_bn, bool), "optim.no_weight_decay_on_bn", "must be true or false",
                no_weight_decay_on_bn)
        require(lr_scaling in LR_SCALINGS, "optim.lr_scaling", "must be none or linear", lr_scaling)
        require(is_int(base_batch_size) and base_batch_size > 0,
                "optim.base_batch_size", "must be a positive int", base_batch_size)
        require(grad_clip is None or (is_number(grad_clip) and grad_clip > 0), "optim.grad_clip",
                "must be null or > 0", grad_clip)
        self.grad_clip = None if grad_clip is None else float(grad_clip)
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.no_weight_decay_on_bn, self.lr_scaling, self.base_batch_size = no_weight_decay_on_bn, lr_scaling, base_batch_size

    def lr_factor(self, batch_size: int) -> float:
        """The factor `lr_scaling` applies to `lr` (and to other LR-like keys) at this batch size."""
        return batch_size / self.base_batch_size if self.lr_scaling == "linear" else 1.0

    def scaled_lr(self, batch_size: int) -> float:
        return self.lr * self.lr_factor(batch_size)

    def param_groups(self, model: torch.nn.Module) -> list[dict[str, Any]]:
        """One group at `weight_decay`; or, with `no_weight_decay_on_bn`, the decayed group and the
        group at weight decay 0 (an empty group is left out)."""
        if not self.no_weight_decay_on_bn:
            return [{"params": list(model.parameters()), "weight_decay": self.weight_decay}]
        decay, no_decay = split_no_weight_decay(model)
        groups = [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return [g for g in groups if g["params"]] or groups[:1]

    def build(self, model: torch.nn.Module, batch_size: int, fused: bool = False) -> torch.optim.Optimizer:
        """The optimizer; `fused=True` (graph step only): torch's fused, graph-capturable update."""
        require(is_int(batch_size) and batch_size > 0,
                "train.batch_size", "must be a positive int", batch_size)
        extra = {"fused": True} if fused else {}
        return self.make(self.param_groups(model), self.scaled_lr(batch_size), self.lr_factor(batch_size), **extra)

    def make(self, groups: list[dict[str, Any]], lr: float, lr_factor: float) -> torch.optim.Optimizer:
        """The torch optimizer over `groups` at the (scaled) `lr`; `lr_factor` is what scaled it.
        Options without `graph_unsupported` also take `fused: bool`."""
        raise NotImplementedError


def check_betas(betas: Any) -> tuple[float, float]:
    ok = isinstance(betas, (list, tuple)) and len(betas) == 2 and all(is_number(b) and 0 <= b < 1 for b in betas)
    require(ok, "optim.betas", "must be two numbers in [0, 1)", betas)
    return float(betas[0]), float(betas[1])


def check_eps(eps: Any, key: str = "optim.eps") -> float:
    require(is_number(eps) and eps > 0, key, "must be > 0", eps)
    return float(eps)
