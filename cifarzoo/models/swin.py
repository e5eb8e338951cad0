"""Swin Transformer (Liu et al. 2021, "Swin Transformer: Hierarchical Vision Transformer using
Shifted Windows", arXiv:2103.14030) as the pytorch-cifar-tricks seed trained it at 32x32
(pprp/pytorch-cifar-tricks `model/vit/swin_transformer.py` at 72bb2a5, "swin_t"/"swin_s" of its
table 1.0; from berniwal/swin-transformer-pytorch).

Network (`variant` t | s presets `depths` 2-2-6-2 | 2-2-18-2; `embed_dim` 96, `heads` 3-6-12-24):
four stages, each a patch merging (linear on `downscaling`^2 neighbouring pixels, with bias; the
repository's 2, 1, 2, 2 instead of the paper's 4, 2, 2, 2, so 32 -> 16 -> 16 -> 8 -> 4) to
embed_dim x 1, 2, 4, 8, then pairs of blocks, regular and shifted windows. Block: x + W-MSA(LN(x)),
then x + MLP(LN(x)) (4x, GELU). Window attention as the repository: `window_size` 4 (the paper: 7),
heads of 32 dims, qkv without bias, and ONE relative position bias table of (2w-1)^2 entries shared
by all heads (the paper and timm have one per head), N(0, 1)-initialised; shifted blocks roll the
map by -w/2 and mask attention across the wrapped borders (-inf). Head: mean over the map,
LayerNorm, linear. Parameters for 10 classes, exactly the repository's: t 27,428,086;
s 48,708,418.

timm provides the attention (`Attention`, taking the bias and shift masks as its additive mask),
the relative position index, the MLP and DropPath. `drop_path_rate` adds the paper's stochastic
depth (linear over the blocks, train-only; 0 = the repository, which has none) and `drop_rate`
dropout after the attention projection and in the MLP (0 = the repository).

Deviations: patch merging is a conv with kernel = stride = downscaling, the same function and
parameters as the repository's unfold + linear (weights laid out differently); the first takes
the dataset's channels. The shift masks are built from region labels as in the official code
(the same masks as the repository's upper/lower and left/right ones). Inputs must reach every
stage with a side divisible by the window: the side must be a multiple of window x the product
of the downscaling factors (32); other sides - 28x28 MNIST-family images - are zero-padded, centred,
to the next multiple (28 -> 32, 2 pixels per side).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import Attention, DropPath, Mlp
from timm.layers.pos_embed_rel import gen_relative_position_index
from torch import nn

from cifarzoo.errors import require
from cifarzoo.models.layers import check_positive_ints, check_rates, drop_path_rates, pick_variant

VARIANTS = {"t": {"depths": [2, 2, 6, 2]}, "s": {"depths": [2, 2, 18, 2]}}
HEAD_DIM = 32


def window_partition(x: torch.Tensor, w: int) -> torch.Tensor:
    """(b, h, w, c) -> (b * windows, w*w, c)"""
    b, h, wd, c = x.shape
    return x.view(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, c)


def window_reverse(windows: torch.Tensor, w: int, h: int, wd: int) -> torch.Tensor:
    c = windows.shape[-1]
    return windows.view(-1, h // w, wd // w, w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, h, wd, c)


def shift_mask(h: int, wd: int, w: int, shift: int, device: torch.device) -> torch.Tensor:
    """(windows, w*w, w*w): -inf between tokens that the cyclic shift brought together."""
    labels = torch.zeros(1, h, wd, 1, device=device)
    region = 0
    for rows in (slice(0, -w), slice(-w, -shift), slice(-shift, None)):
        for cols in (slice(0, -w), slice(-w, -shift), slice(-shift, None)):
            labels[:, rows, cols] = region
            region += 1
    labels = window_partition(labels, w).squeeze(-1)
    apart = labels[:, None, :] != labels[:, :, None]
    return torch.zeros(apart.shape, device=device).masked_fill(apart, float("-inf"))


class WindowAttention(nn.Module):
    def __init__(self, dim: int, heads: int, window: int, shifted: bool, drop_rate: float) -> None:
        super().__init__()
        self.window, self.shift = window, window // 2 if shifted else 0
        self.attn = Attention(dim, num_heads=heads, attn_head_dim=HEAD_DIM, proj_drop=drop_rate)
        self.bias_table = nn.Parameter(torch.randn((2 * window - 1) ** 2))
        self.register_buffer("bias_index", gen_relative_position_index((window, window)), persistent=False)
        self._shift_masks: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    def shift_mask(self, h: int, wd: int, device: torch.device) -> torch.Tensor:
        """The shifted windows' mask for an h x wd map, built once per size and device from device ops
        alone (a captured CUDA graph replays the step that first needs it, so no host copy may make it)."""
        key = (h, wd, device)
        if key not in self._shift_masks:
            self._shift_masks[key] = shift_mask(h, wd, self.window, self.shift, device)
        return self._shift_masks[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, wd, _ = x.shape
        w, s = self.window, self.shift
        if s:
            x = torch.roll(x, (-s, -s), (1, 2))
        mask = self.bias_table[self.bias_index]                      # (w*w, w*w), shared by the heads
        if s:
            mask = mask + self.shift_mask(h, wd, x.device)            # (windows, w*w, w*w)
        mask = mask.expand(b * (h // w) * (wd // w), 1, -1, -1) if mask.dim() == 2 else \
            mask.unsqueeze(1).repeat(b, 1, 1, 1)
        out = window_reverse(self.attn(window_partition(x, w), attn_mask=mask.to(x.dtype)), w, h, wd)
        return torch.roll(out, (s, s), (1, 2)) if s else out


class SwinBlock(nn.Module):
    def __init__(self, dim: int, heads: int, window: int, shifted: bool, drop_rate: float, drop_path: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window, shifted, drop_rate)
        self.mlp = Mlp(dim, 4 * dim, drop=drop_rate)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SwinStage(nn.Module):
    def __init__(self, in_ch: int, dim: int, depth: int, downscaling: int, heads: int, window: int, drop_rate: float,
                 drop_paths: list[float]) -> None:
        super().__init__()
        self.merge = nn.Conv2d(in_ch, dim, downscaling, downscaling)
        self.blocks = nn.Sequential(*[SwinBlock(dim, heads, window, i % 2 == 1, drop_rate, drop_paths[i])
                                      for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.merge(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Swin(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, variant: str = "t", depths: list[int] | None = None,
                 embed_dim: int = 96, heads: list[int] = (3, 6, 12, 24), window_size: int = 4,
                 downscaling: list[int] = (2, 1, 2, 2), drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        depths = pick_variant(VARIANTS, variant)["depths"] if depths is None else depths
        for key, value in (("depths", depths), ("heads", heads), ("downscaling", downscaling)):
            require(isinstance(value, (list, tuple)) and len(value) == 4, f"model.{key}", "must be 4 ints (stages)", value)
            check_positive_ints(**{key: list(value)})
        require(all(d % 2 == 0 for d in depths), "model.depths", "must be even (regular + shifted block pairs)", depths)
        check_positive_ints(embed_dim=embed_dim, window_size=window_size)
        check_rates(drop_rate=drop_rate, drop_path_rate=drop_path_rate)
        require(window_size >= 2, "model.window_size", "must be >= 2 (shifted windows move by half of it)", window_size)
        self.multiple = window_size * math.prod(downscaling)
        rates = drop_path_rates(drop_path_rate, sum(depths))
        stages, in_ch = [], in_channels
        for i, (depth, factor, n_heads) in enumerate(zip(depths, downscaling, heads)):
            dim = embed_dim * 2**i
            stages.append(SwinStage(in_ch, dim, depth, factor, n_heads, window_size, drop_rate,
                                    rates[sum(depths[:i]):sum(depths[:i + 1])]))
            in_ch = dim
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.LayerNorm(in_ch), nn.Linear(in_ch, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        dh, dw = -h % self.multiple, -w % self.multiple
        if dh or dw:
            x = F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))
        return self.head(self.stages(x).mean((2, 3)))
