"""Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words",
arXiv:2010.11929) as the pytorch-cifar-tricks seed trained it at 32x32 (pprp/pytorch-cifar-tricks
`model/vit/vision_transformer.py` and `layers.py` at 72bb2a5, "vision_transformer" of its table 1.0;
from omihub777/ViT-CIFAR).

Network: 4x4-pixel patches (an 8x8 grid at 32x32) linearly embedded to `dim` (384), a class token,
learned position embeddings, `depth` (7) pre-norm encoder blocks with `heads` (8), LayerNorm and a
linear classifier on the class token. Block: x + MSA(LN(x)), then x + MLP(LN(x)) with MLP = linear
`dim` -> `mlp_dim` (1536) - GELU - dropout - linear - GELU - dropout (the repository's second GELU).
Attention as the repository: q, k, v and output projections with bias and the attention logits
scaled by 1/sqrt(`dim`), not by 1/sqrt(head dim) as the paper (this is the repository's network,
so kept; it softens the attention by sqrt(heads)). Class token and position embeddings are N(0, 1)
as the repository. 12,470,026 parameters for 10 classes, exactly the repository's.

timm provides the MLP and DropPath; the attention (its scale) and the block (its second GELU) are
the repository's and so written here. `drop_rate` is the repository's dropout (0 in the table's
run); `drop_path_rate` adds stochastic depth over the blocks (DeiT; linear 0 -> rate, train-only;
0 = the repository).

Deviations: the patch embedding is a conv with kernel = stride = `patch_size` (the same function
and parameters as the repository's unfold + linear, weights laid out differently) and takes the
dataset's channels (the repository's embedding reads 3). 28x28 inputs: the 4-pixel patches give a
7x7 grid, and the position embeddings (learned for the `image_size` grid) are resampled to it
bicubically (timm's `resample_abs_pos_embed`, the usual rule for running a ViT at another
resolution); the image side must be a multiple of `patch_size`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, resample_abs_pos_embed
from torch import nn

from cifarzoo.errors import require
from cifarzoo.models.layers import check_positive_ints, check_rates, drop_path_rates


class ReferenceAttention(nn.Module):
    """Multi-head self-attention with the logits scaled by 1/sqrt(dim) (the repository's)."""

    def __init__(self, dim: int, heads: int, drop_rate: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)  # the repository's separate q, k, v linears, stacked
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, scale=c ** -0.5)
        return self.drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int, drop_rate: float, drop_path: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = ReferenceAttention(dim, heads, drop_rate)
        self.mlp = nn.Sequential(Mlp(dim, mlp_dim, drop=(drop_rate, 0.0)), nn.GELU(), nn.Dropout(drop_rate))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ViT(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, patch_size: int = 4, image_size: int = 32,
                 dim: int = 384, depth: int = 7, heads: int = 8, mlp_dim: int = 1536, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        check_positive_ints(patch_size=patch_size, image_size=image_size, dim=dim, depth=depth, heads=heads,
                            mlp_dim=mlp_dim)
        check_rates(drop_rate=drop_rate, drop_path_rate=drop_path_rate)
        require(image_size % patch_size == 0, "model.image_size", f"must be a multiple of model.patch_size ({patch_size})",
                image_size)
        require(dim % heads == 0, "model.dim", f"must be a multiple of model.heads ({heads})", dim)
        self.patch_size, self.grid = patch_size, image_size // patch_size
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + self.grid**2, dim))
        self.blocks = nn.Sequential(*[EncoderBlock(dim, heads, mlp_dim, drop_rate, p)
                                      for p in drop_path_rates(drop_path_rate, depth)])
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % self.patch_size or x.shape[-1] % self.patch_size:
            raise ValueError(f"ViT: the image side must be a multiple of model.patch_size={self.patch_size}, "
                             f"got {tuple(x.shape[-2:])}")
        x = self.patch_embed(x)
        grid = list(x.shape[-2:])
        pos = self.pos_embed
        if grid != [self.grid, self.grid]:
            pos = resample_abs_pos_embed(pos, grid, [self.grid, self.grid], num_prefix_tokens=1)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x.flatten(2).transpose(1, 2)], 1) + pos
        return self.head(self.blocks(x)[:, 0])
