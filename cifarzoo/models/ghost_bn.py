"""Ghost batch normalization (Hoffer et al. 2017, "Train longer, generalize better",
arXiv:1705.08741) in one pass over the full batch.

The seeds (hysts' `train.subdivision`) split each training batch into consecutive chunks,
run forward + backward on each chunk with loss / num_chunks and step once, so every BatchNorm
layer normalizes each chunk with that chunk's own statistics. `GhostBatchNorm2d` computes the
same thing in a single forward over the whole batch: in training mode each consecutive chunk of
`ghost_batch_size` images is normalized with its own batch mean and (biased) variance, and the
running statistics end up as if the chunks had been processed one after the other:

    after chunk i:  r <- (1 - a_i) r + a_i s_i      (s_i: chunk mean / unbiased chunk variance)
    num_batches_tracked += number of chunks

with a_i = momentum, or, for momentum=None (cumulative average), a_i = 1 / num_batches_tracked
counted chunk by chunk. In eval mode the layer is an ordinary BatchNorm2d.

How: (B, C, H, W) with B = k * g is viewed as k chunks of g images; the chunk index is moved
into the channel dimension, giving (g, k * C, H, W), and one `F.batch_norm` call normalizes all
k * C (chunk, channel) pairs with weight / bias repeated k times. The k per-chunk statistics
come back in temporary running buffers (momentum 1), and are folded into the real buffers with
the closed form of the sequential update: r_k = prod_i (1 - a_i) r_0 + sum_i a_i prod_{j>i} (1 - a_j) s_i.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cifarzoo.errors import is_int, require


def check_ghost_batch_size(ghost_batch_size: object, batch_size: int, batch_name: str = "train.batch_size") -> None:
    """ConfigError (key `train.ghost_batch_size`) unless it is a positive int dividing `batch_size`
    (what one process sees of a batch, named `batch_name`)."""
    require(is_int(ghost_batch_size) and ghost_batch_size >= 1, "train.ghost_batch_size", "must be an int >= 1", ghost_batch_size)
    require(
        batch_size % ghost_batch_size == 0,
        "train.ghost_batch_size",
        f"must divide {batch_name} ({batch_size})",
        ghost_batch_size,
    )


def momentum_coefficients(factors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(c0, (c_1..c_k)) with the sequential r <- (1 - a_i) r + a_i s_i equal to c0 r_0 + sum_i c_i s_i,
    for the factors a_1..a_k (a device tensor): c_i = a_i prod_{j>i} (1 - a_j), c0 = prod_i (1 - a_i).
    Device ops only (no host copy, no host read), so a CUDA graph can capture them."""
    keep = torch.flip(torch.cumprod(torch.flip(1 - factors, (0,)), 0), (0,))  # prod_{j >= i} (1 - a_j)
    after = torch.cat([keep[1:], keep.new_ones(1)])  # prod_{j > i} (1 - a_j)
    return keep[0], factors * after


class GhostBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics are computed per chunk of `ghost_batch_size`
    consecutive images (see the module docstring). Same parameters, buffers and state_dict keys
    as `nn.BatchNorm2d` (it is one), so checkpoints load either way and type-based selection
    (`isinstance(m, nn.BatchNorm2d)`, no weight decay on norm layers) is unchanged.

    In training mode the batch size must be a multiple of `ghost_batch_size` (ValueError
    otherwise). A batch of exactly `ghost_batch_size` images is plain BatchNorm2d. In eval mode
    the layer is plain BatchNorm2d: running statistics, or, with track_running_stats=False,
    the statistics of the whole batch (the seeds do not subdivide evaluation batches).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device=None, dtype=None, *, ghost_batch_size: int) -> None:
        if not (is_int(ghost_batch_size) and ghost_batch_size >= 1):
            raise ValueError(f"ghost_batch_size must be an int >= 1 (got {ghost_batch_size!r})")
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        self.ghost_batch_size = ghost_batch_size
        self._coefficient_cache: dict = {}  # (k, device, dtype) -> (c0, coefficients), fixed momentum only

    @classmethod
    def from_batch_norm(cls, bn: nn.BatchNorm2d, ghost_batch_size: int) -> GhostBatchNorm2d:
        """A ghost-BN layer sharing `bn`'s parameter and buffer tensors (so an optimizer built on
        `bn`'s parameters keeps working), with its hyper-parameters and train/eval mode."""
        ghost = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats, device="meta",
                    ghost_batch_size=ghost_batch_size)
        for name, param in bn.named_parameters(recurse=False):
            setattr(ghost, name, param)
        for name, buffer in bn.named_buffers(recurse=False):
            setattr(ghost, name, buffer)
        ghost.train(bn.training)
        return ghost

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ghost_batch_size={self.ghost_batch_size}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        self._check_input_dim(x)
        batch, g = x.shape[0], self.ghost_batch_size
        if batch % g != 0:
            raise ValueError(
                f"GhostBatchNorm2d: the training batch size ({batch}) must be a multiple of "
                f"ghost_batch_size ({g})"
            )
        k = batch // g
        if k == 1:
            return super().forward(x)
        return self._ghost_forward(x, k, g)

    def _ghost_forward(self, x: torch.Tensor, k: int, g: int) -> torch.Tensor:
        _, c, h, w = x.shape
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        # (k*g, C, H, W) -> (g, k*C, H, W): folded channel k_i * C + c is channel c of chunk k_i.
        if channels_last:  # memory (k, g, H, W, C) -> (g, H, W, k, C), still channels_last
            folded = x.permute(0, 2, 3, 1).reshape(k, g, h, w, c).permute(1, 2, 3, 0, 4)
            folded = folded.reshape(g, h, w, k * c).permute(0, 3, 1, 2)
        else:
            folded = x.reshape(k, g, c, h, w).transpose(0, 1).reshape(g, k * c, h, w)

        tracking = self.track_running_stats and self.running_mean is not None and self.running_var is not None
        if tracking:
            chunk_mean = torch.zeros(k * c, device=x.device, dtype=self.running_mean.dtype)
            chunk_var = torch.ones(k * c, device=x.device, dtype=self.running_var.dtype)
        else:
            chunk_mean = chunk_var = None
        weight = self.weight.repeat(k) if self.weight is not None else None
        bias = self.bias.repeat(k) if self.bias is not None else None
        # momentum 1: the temporary buffers receive each chunk's mean and unbiased variance.
        y = F.batch_norm(folded, chunk_mean, chunk_var, weight, bias, True, 1.0, self.eps)
        if tracking:
            self._fold_running_stats(chunk_mean.view(k, c), chunk_var.view(k, c), k)

        if channels_last:  # (g, k*C, H, W) channels_last -> (k*g, C, H, W) channels_last
            y = y.permute(0, 2, 3, 1).reshape(g, h, w, k, c).permute(3, 0, 1, 2, 4)
            return y.reshape(k * g, h, w, c).permute(0, 3, 1, 2)
        return y.reshape(g, k, c, h, w).transpose(0, 1).reshape(k * g, c, h, w)

    @torch.no_grad()
    def _fold_running_stats(self, chunk_mean: torch.Tensor, chunk_var: torch.Tensor, k: int) -> None:
        """Apply the k chunks' sequential running-stat updates (and num_batches_tracked += k), on the
        device: the coefficients come from device ops (computed in float64, as the sequential float
        update), so the fold neither reads the step count on the host nor copies host numbers."""
        tracked = self.num_batches_tracked
        device, dtype = chunk_mean.device, chunk_mean.dtype
        if self.momentum is None:  # cumulative moving average: a_i = 1 / (batches tracked after chunk i)
            if tracked is None:
                raise ValueError("GhostBatchNorm2d: momentum=None needs the num_batches_tracked buffer")
            counts = tracked.to(_fold_dtype(device)) + torch.arange(1, k + 1, device=device, dtype=_fold_dtype(device))
            keep, coef = momentum_coefficients(1 / counts)
            keep, coef = keep.to(dtype), coef.to(dtype)
        else:
            key = (k, device, dtype)
            if key not in self._coefficient_cache:
                factors = torch.full((k,), float(self.momentum), device=device, dtype=_fold_dtype(device))
                self._coefficient_cache[key] = tuple(c.to(dtype) for c in momentum_coefficients(factors))
            keep, coef = self._coefficient_cache[key]
        if tracked is not None:
            tracked.add_(k)
        coef = coef.unsqueeze(1)
        self.running_mean.mul_(keep).add_((coef * chunk_mean).sum(0))
        self.running_var.mul_(keep).add_((coef * chunk_var).sum(0))


def _fold_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def use_ghost_batch_norm(model: nn.Module, ghost_batch_size: int) -> nn.Module:
    """Replace every `nn.BatchNorm2d` of `model` (the model itself included) by a
    `GhostBatchNorm2d` sharing its parameters and buffers (same tensors: device, dtype and
    optimizer references are kept), and return the model (a new object only if `model` itself
    was a BatchNorm2d). Layers that already are GhostBatchNorm2d get the new ghost size.

    Only BatchNorm2d is converted: BatchNorm1d / BatchNorm3d / SyncBatchNorm layers are left
    as they are. Other subclasses of BatchNorm2d (which may have their own forward) raise
    TypeError rather than being silently replaced. Hooks registered on the replaced layers are
    not carried over.
    """
    if not (is_int(ghost_batch_size) and ghost_batch_size >= 1):
        raise ValueError(f"ghost_batch_size must be an int >= 1 (got {ghost_batch_size!r})")
    converted: dict[int, nn.Module] = {}  # a layer shared by several parents is replaced once

    def convert(module: nn.Module) -> nn.Module:
        if isinstance(module, GhostBatchNorm2d):
            module.ghost_batch_size = ghost_batch_size
            return module
        if isinstance(module, nn.BatchNorm2d):
            if type(module) is not nn.BatchNorm2d:
                raise TypeError(f"use_ghost_batch_norm: cannot convert {type(module).__name__}, a subclass of "
                                f"BatchNorm2d with its own behaviour")
            if id(module) not in converted:
                converted[id(module)] = GhostBatchNorm2d.from_batch_norm(module, ghost_batch_size)
            return converted[id(module)]
        return module

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            new = convert(child)
            if new is not child:
                setattr(parent, name, new)
    return convert(model)
