"""MobileViT (Mehta & Rastegari 2022, "MobileViT: Light-weight, General-purpose, and
Mobile-friendly Vision Transformer", arXiv:2110.02178) as the pytorch-cifar-tricks seed trained it
at 32x32 (pprp/pytorch-cifar-tricks `model/vit/mobile_vit.py` at 72bb2a5, "mobilevit_s/_xs/_xxs"
of its table 1.0; from chinhsuanwu/mobilevit-pytorch).

Network (`variant` s | xs | xxs presets `dims`, `channels`, `expansion`; c = `channels`):
conv3x3 stride 2 c0 - BN - SiLU; MV2 blocks c0->c1, c1->c2, c2->c3, c2->c3 (all stride 1: the
repository changed the paper's first two strides of 2 to 1 for 32x32), MV2 c3->c4 stride 2,
MobileViT block (dims[0], 2 transformer layers, on c5), MV2 c5->c6 stride 2, MobileViT block
(dims[1], 4 layers, on c7), MV2 c7->c8 stride 1, MobileViT block (dims[2], 3 layers, on c9);
conv1x1 c9 -> c10 - BN - SiLU, global average pooling, linear without bias. 32 -> 16 -> 8 -> 4.
MV2 = inverted residual (conv1x1 expand - BN - SiLU - depthwise 3x3 - BN - SiLU - conv1x1 - BN,
identity shortcut where shapes match). MobileViT block: conv3x3 - conv1x1 to d (each - BN - SiLU),
unfold into 2x2 patches, pre-norm transformer layers over the patches at each of the 4 pixel
positions (attention: 1 head of 32 dims, qkv without bias; MLP d -> 2d (first block) or 4d - SiLU),
fold, conv1x1 back to c - BN - SiLU, concatenated with the block's input, conv3x3 - BN - SiLU.
Parameters for 10 classes, exactly the repository's: s 5,003,120; xs 2,002,784; xxs 1,014,672.

timm provides the attention (`Attention` with a 32-dim head), MLP and DropPath. `drop_rate` is the
repository's dropout (after the attention projection and in the MLP; 0 in the table's runs);
`drop_path_rate` adds stochastic depth over the transformer layers (linear, train-only; 0 = the
repository).

Deviations: the first conv takes the dataset's channels (the repository: 3); pooling is adaptive
(the repository's fixed 4x4 is the same at 32x32). 28x28 inputs give odd 7x7 maps at the second
MobileViT block: as in the paper's own code (apple/ml-cvnets), a map whose side is not a multiple
of the patch is resized bilinearly to the next multiple before unfolding and back after folding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import Attention, DropPath, Mlp
from torch import nn

from cifarzoo.errors import require
from cifarzoo.models.layers import check_positive_ints, check_rates, drop_path_rates, pick_variant

VARIANTS = {
    "s": {"dims": [144, 192, 240], "channels": [16, 32, 64, 64, 96, 96, 128, 128, 160, 160, 640], "expansion": 4},
    "xs": {"dims": [96, 120, 144], "channels": [16, 32, 48, 48, 64, 64, 80, 80, 96, 96, 384], "expansion": 4},
    "xxs": {"dims": [64, 80, 96], "channels": [16, 16, 24, 24, 48, 48, 64, 64, 80, 80, 320], "expansion": 2},
}
LAYERS = (2, 4, 3)        # transformer layers of the three MobileViT blocks
MLP_RATIOS = (2, 4, 4)
HEAD_DIM = 32


def conv_bn_silu(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(out_ch),
                         nn.SiLU())


class InvertedResidual(nn.Module):
    """MobileNetV2 block with SiLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_ch * expansion
        expand = [conv_bn_silu(in_ch, hidden, 1)] if expansion != 1 else []
        self.conv = nn.Sequential(
            *expand,
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.SiLU(),
            nn.Conv2d(hidden, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch),
        )
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class TransformerLayer(nn.Module):
    def __init__(self, dim: int, mlp_dim: int, drop_rate: float, drop_path: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads=1, attn_head_dim=HEAD_DIM, proj_drop=drop_rate)
        self.mlp = Mlp(dim, mlp_dim, act_layer=nn.SiLU, drop=drop_rate)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class MobileViTBlock(nn.Module):
    def __init__(self, channels: int, dim: int, mlp_dim: int, drop_rate: float, drop_paths: list[float],
                 patch: int = 2) -> None:
        super().__init__()
        self.patch = patch
        self.local = nn.Sequential(conv_bn_silu(channels, channels, 3), conv_bn_silu(channels, dim, 1))
        self.transformer = nn.Sequential(*[TransformerLayer(dim, mlp_dim, drop_rate, p) for p in drop_paths])
        self.project = conv_bn_silu(dim, channels, 1)
        self.fuse = conv_bn_silu(2 * channels, channels, 3)

    def global_repr(self, x: torch.Tensor) -> torch.Tensor:
        """Transformer over the patches, separately at each pixel position of a patch."""
        b, d, h, w = x.shape
        p = self.patch
        nh, nw = math.ceil(h / p), math.ceil(w / p)
        if (nh * p, nw * p) != (h, w):
            x = F.interpolate(x, size=(nh * p, nw * p), mode="bilinear", align_corners=False)
        tokens = x.reshape(b, d, nh, p, nw, p).permute(0, 3, 5, 2, 4, 1).reshape(b * p * p, nh * nw, d)
        tokens = self.transformer(tokens)
        x = tokens.reshape(b, p, p, nh, nw, d).permute(0, 5, 3, 1, 4, 2).reshape(b, d, nh * p, nw * p)
        return x if (nh * p, nw * p) == (h, w) else F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.global_repr(self.local(x)))
        return self.fuse(torch.cat([y, x], 1))


class MobileViT(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, variant: str = "s", dims: list[int] | None = None,
                 channels: list[int] | None = None, expansion: int | None = None, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        preset = pick_variant(VARIANTS, variant)
        dims = preset["dims"] if dims is None else dims
        c = preset["channels"] if channels is None else channels
        expansion = preset["expansion"] if expansion is None else expansion
        require(isinstance(dims, (list, tuple)) and len(dims) == 3, "model.dims", "must be 3 ints (MobileViT blocks)", dims)
        require(isinstance(c, (list, tuple)) and len(c) == 11, "model.channels", "must be 11 ints (c0..c10)", c)
        check_positive_ints(dims=list(dims), channels=list(c), expansion=expansion)
        check_rates(drop_rate=drop_rate, drop_path_rate=drop_path_rate)
        rates = drop_path_rates(drop_path_rate, sum(LAYERS))
        paths = [rates[sum(LAYERS[:i]):sum(LAYERS[:i + 1])] for i in range(3)]

        def vit(i: int, ch: int) -> MobileViTBlock:
            return MobileViTBlock(ch, dims[i], dims[i] * MLP_RATIOS[i], drop_rate, paths[i])

        self.features = nn.Sequential(
            conv_bn_silu(in_channels, c[0], 3, 2),
            InvertedResidual(c[0], c[1], 1, expansion), InvertedResidual(c[1], c[2], 1, expansion),
            InvertedResidual(c[2], c[3], 1, expansion), InvertedResidual(c[2], c[3], 1, expansion),
            InvertedResidual(c[3], c[4], 2, expansion), vit(0, c[5]),
            InvertedResidual(c[5], c[6], 2, expansion), vit(1, c[7]),
            InvertedResidual(c[7], c[8], 1, expansion), vit(2, c[9]),
            conv_bn_silu(c[9], c[10], 1),
        )
        self.fc = nn.Linear(c[10], num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))
