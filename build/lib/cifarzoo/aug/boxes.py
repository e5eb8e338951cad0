"""Per-image rectangles as masks, without a Python loop over the batch."""

from __future__ import annotations

import torch


def box_mask(height: int, width: int, top: torch.Tensor, bottom: torch.Tensor,
             left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) bool mask, True inside rows [top, bottom) and columns [left, right) of each image."""
    device = top.device
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    inside_rows = (rows >= top[:, None]) & (rows < bottom[:, None])  # (B, H)
    inside_cols = (cols >= left[:, None]) & (cols < right[:, None])  # (B, W)
    return (inside_rows[:, :, None] & inside_cols[:, None, :])[:, None]


def uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, device=generator.device, generator=generator)


def randint_below(high: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per-element integer in [0, high) for an integer tensor `high` >= 1 (numpy's randint(0, high))."""
    u = torch.rand(high.shape, device=high.device, generator=generator)
    return torch.minimum((u * high).floor().long(), high - 1)


def memory_format_of(images: torch.Tensor) -> torch.memory_format:
    """channels_last for an NHWC-strided batch (the CUDA path), else the default layout."""
    nhwc = images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous()
    return torch.channels_last if nhwc else torch.contiguous_format
