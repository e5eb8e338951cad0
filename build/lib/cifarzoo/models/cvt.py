"""CvT (Wu et al. 2021, "CvT: Introducing Convolutions to Vision Transformers",
arXiv:2103.15808) as the pytorch-cifar-tricks seed trained it at 32x32 (pprp/pytorch-cifar-tricks
`model/vit/cvt.py` at 72bb2a5, "cvt" of its table 1.0; from lucidrains/vit-pytorch).

Network: three stages, each a convolutional token embedding (conv with bias, kernel `emb_kernels`
3 - the repository's change from the paper's 7 - stride `emb_strides` 4, 2, 2, padding k//2) to
`dims` (64, 192, 384) followed by a channel LayerNorm, then `depths` (1, 2, 10) pre-norm blocks
x + attn(LN(x)), x + MLP(LN(x)) on the 2-D map: 32 -> 8 -> 4 -> 2. Attention: `heads` (1, 3, 6)
of 64 dims; q from a depthwise conv3x3 - BN - pointwise conv1x1 (both without bias), k and v from
the same with stride `kv_stride` 2; output conv1x1 with bias. MLP: conv1x1 to 4x - GELU - conv1x1.
Global average pooling, linear. The channel LayerNorm is the repository's: (x - mean) /
(std + 1e-5) * g + b over the channels (eps added to the standard deviation, not the variance).
19,547,466 parameters for 10 classes, exactly the repository's.

timm provides the MLP (`Mlp` with 1x1 convs) and DropPath; the convolutional attention and the
channel LayerNorm are the repository's and written here. `drop_rate` is the repository's dropout
(attention output and MLP; 0 in its run); `drop_path_rate` adds stochastic depth over the blocks
(the paper's; linear, train-only; 0 = the repository).

Deviations: the first embedding takes the dataset's channels (the repository: 3). Any input side
works (28x28: 7 -> 4 -> 2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from torch import nn

from cifarzoo.errors import require
from cifarzoo.models.layers import check_positive_ints, check_rates, drop_path_rates

HEAD_DIM = 64


class ChannelLayerNorm(nn.Module):
    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)
        return (x - mean) / (var.sqrt() + self.eps) * self.weight + self.bias


def separable_projection(dim: int, out_ch: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(dim, dim, 3, stride, 1, groups=dim, bias=False), nn.BatchNorm2d(dim),
                         nn.Conv2d(dim, out_ch, 1, bias=False))


class ConvAttention(nn.Module):
    def __init__(self, dim: int, heads: int, kv_stride: int, drop_rate: float) -> None:
        super().__init__()
        inner = heads * HEAD_DIM
        self.heads = heads
        self.to_q = separable_projection(dim, inner, 1)
        self.to_kv = separable_projection(dim, 2 * inner, kv_stride)
        self.to_out = nn.Sequential(nn.Conv2d(inner, dim, 1), nn.Dropout(drop_rate))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:  # (b, heads*d, h, w) -> (b, heads, h*w, d)
            return t.reshape(b, self.heads, HEAD_DIM, -1).transpose(2, 3)

        k, v = self.to_kv(x).chunk(2, dim=1)
        out = F.scaled_dot_product_attention(heads(self.to_q(x)), heads(k), heads(v))
        return self.to_out(out.transpose(2, 3).reshape(b, -1, h, w))


class ConvTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, kv_stride: int, mlp_ratio: int, drop_rate: float, drop_path: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = ChannelLayerNorm(dim), ChannelLayerNorm(dim)
        self.attn = ConvAttention(dim, heads, kv_stride, drop_rate)
        self.mlp = Mlp(dim, dim * mlp_ratio, drop=drop_rate, use_conv=True)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class CvT(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, dims: list[int] = (64, 192, 384),
                 depths: list[int] = (1, 2, 10), heads: list[int] = (1, 3, 6), emb_kernels: list[int] = (3, 3, 3),
                 emb_strides: list[int] = (4, 2, 2), kv_stride: int = 2, mlp_ratio: int = 4, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        stages = {"dims": dims, "depths": depths, "heads": heads, "emb_kernels": emb_kernels, "emb_strides": emb_strides}
        for key, value in stages.items():
            require(isinstance(value, (list, tuple)) and len(value) == len(dims), f"model.{key}",
                    f"must be a list of one int per stage ({len(dims)}, as model.dims)", value)
            check_positive_ints(**{key: list(value)})
        check_positive_ints(kv_stride=kv_stride, mlp_ratio=mlp_ratio)
        check_rates(drop_rate=drop_rate, drop_path_rate=drop_path_rate)
        rates = iter(drop_path_rates(drop_path_rate, sum(depths)))
        layers, in_ch = [], in_channels
        for dim, depth, n_heads, kernel, stride in zip(dims, depths, heads, emb_kernels, emb_strides):
            layers += [nn.Conv2d(in_ch, dim, kernel, stride, kernel // 2), ChannelLayerNorm(dim)]
            layers += [ConvTransformerBlock(dim, n_heads, kv_stride, mlp_ratio, drop_rate, next(rates)) for _ in range(depth)]
            in_ch = dim
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))
