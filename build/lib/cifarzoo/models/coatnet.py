"""CoAtNet (Dai et al. 2021, "CoAtNet: Marrying Convolution and Attention for All Data Sizes",
arXiv:2106.04803) as the pytorch-cifar-tricks seed trained it at 32x32 (pprp/pytorch-cifar-tricks
`model/vit/coatnet.py` at 72bb2a5, "coatnet_0/_1/_2" of its table 1.0; from
chinhsuanwu/coatnet-pytorch).

Network (`variant` 0 | 1 | 2 presets `blocks` L and `channels` D): S0 = `blocks[0]` conv3x3 - BN -
GELU (the first stride 2); S1, S2 = MBConv stages; S3, S4 = transformer stages with relative
attention; each stage's first block halves the resolution (32 -> 16 -> 8 -> 4 -> 2 -> 1); global
average pooling, linear without bias.
MBConv (the repository's): x + conv(BN(x)), conv = conv1x1 to 4x the *input* width - BN - GELU -
depthwise 3x3 - BN - GELU - SE (linear without bias to input/4 - GELU - linear - sigmoid) - conv1x1
- BN; the downsampling block strides its first conv1x1 and has a shortcut max-pool 3x3/2 - conv1x1.
Transformer block: x + attn(LN(x)), then x + MLP(LN(x)); attention with 8 heads of 32 dims (qkv
without bias, output projection to the stage width) and a learned relative position bias per head
over the whole stage map (Swin-style table, zero-initialised); MLP to 4x the *input* width - GELU.
The downsampling block: max-pool(x) - conv1x1 as shortcut plus attn(LN(max-pool(x))).
Parameters for 10 classes, exactly the repository's: 0 16,997,816; 1 32,326,976; 2 54,668,496
(coatnet_2's last stage has the repository's 1026 channels, the paper's 1024).

timm provides the attention (`Attention`, taking the relative bias as its additive mask), the
relative position bias table and index (`RelPosBias`), the MLP and DropPath. `drop_rate` is the
repository's dropout (attention projection and MLP; 0 in its runs); `drop_path_rate` adds
stochastic depth (the paper's regulariser) over the blocks of S1-S4 (linear, train-only;
0 = the repository). Default initialisation otherwise, as the repository.

Deviations: the first conv takes the dataset's channels (the repository: 3); pooling is adaptive.
The relative-bias tables cover the S3/S4 grids of an `image_size` input, each stride-2 step
mapping a side s to ceil(s/2): 2x2 and 1x1 for 32x32, and also for 28x28 inputs (14, 7, 4, 2, 1),
so MNIST-shaped inputs use the same tables; an input with other grids is an error naming
`model.image_size`.
"""

from __future__ import annotations

import torch
from timm.layers import Attention, DropPath, Mlp, RelPosBias
from torch import nn

from cifarzoo.errors import require
from cifarzoo.models.layers import check_positive_ints, check_rates, drop_path_rates, pick_variant

VARIANTS = {
    "0": {"blocks": [2, 2, 3, 5, 2], "channels": [64, 96, 192, 384, 768]},
    "1": {"blocks": [2, 2, 6, 14, 2], "channels": [64, 96, 192, 384, 768]},
    "2": {"blocks": [2, 2, 6, 14, 2], "channels": [128, 128, 256, 512, 1026]},
}
HEADS, HEAD_DIM = 8, 32


def conv_bn_gelu(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False), nn.BatchNorm2d(out_ch), nn.GELU())


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channels, squeezed, bias=False), nn.GELU(),
                                nn.Linear(squeezed, channels, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean((2, 3)))[:, :, None, None]


class MBConv(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, downsample: bool, drop_path: float, expansion: int = 4) -> None:
        super().__init__()
        hidden, stride = in_ch * expansion, 2 if downsample else 1
        self.shortcut = nn.Sequential(nn.MaxPool2d(3, 2, 1), nn.Conv2d(in_ch, out_ch, 1, bias=False)) if downsample \
            else nn.Identity()
        self.conv = nn.Sequential(
            nn.BatchNorm2d(in_ch),
            nn.Conv2d(in_ch, hidden, 1, stride, bias=False), nn.BatchNorm2d(hidden), nn.GELU(),
            nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.GELU(),
            SqueezeExcite(hidden, int(in_ch * 0.25)),
            nn.Conv2d(hidden, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch),
        )
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.drop_path(self.conv(x))


class RelativeTransformer(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, downsample: bool, grid: int, drop_rate: float, drop_path: float) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(3, 2, 1) if downsample else nn.Identity()
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1, bias=False) if downsample else nn.Identity()
        self.norm1, self.norm2 = nn.LayerNorm(in_ch), nn.LayerNorm(out_ch)
        self.attn = Attention(in_ch, num_heads=HEADS, attn_head_dim=HEAD_DIM, dim_out=out_ch, proj_drop=drop_rate)
        self.rel_pos = RelPosBias((grid, grid), HEADS)
        nn.init.zeros_(self.rel_pos.relative_position_bias_table)
        self.mlp = Mlp(out_ch, in_ch * 4, drop=drop_rate)
        self.drop_path = DropPath(drop_path)
        self.grid = grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        b, _, h, w = x.shape
        if (h, w) != (self.grid, self.grid):
            raise ValueError(f"CoAtNet: a {h}x{w} attention grid where the relative position bias covers "
                             f"{self.grid}x{self.grid}; set model.image_size to the input size")
        tokens = x.flatten(2).transpose(1, 2)
        attn = self.attn(self.norm1(tokens), attn_mask=self.rel_pos.get_bias())
        x = self.shortcut(x).flatten(2).transpose(1, 2) + self.drop_path(attn)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x.transpose(1, 2).reshape(b, -1, h, w)


class CoAtNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, variant: str = "0", blocks: list[int] | None = None,
                 channels: list[int] | None = None, image_size: int = 32, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        preset = pick_variant(VARIANTS, variant)
        blocks = preset["blocks"] if blocks is None else blocks
        channels = preset["channels"] if channels is None else channels
        for key, value in (("blocks", blocks), ("channels", channels)):
            require(isinstance(value, (list, tuple)) and len(value) == 5, f"model.{key}", "must be 5 ints (stages S0-S4)",
                    value)
        check_positive_ints(blocks=list(blocks), channels=list(channels), image_size=image_size)
        check_rates(drop_rate=drop_rate, drop_path_rate=drop_path_rate)
        rates = iter(drop_path_rates(drop_path_rate, sum(blocks[1:])))
        side = (image_size + 1) // 2
        stages = [nn.Sequential(*[conv_bn_gelu(in_channels if i == 0 else channels[0], channels[0], 2 if i == 0 else 1)
                                  for i in range(blocks[0])])]
        for s in range(1, 5):
            side = (side + 1) // 2
            layers = []
            for i in range(blocks[s]):
                in_ch = channels[s - 1] if i == 0 else channels[s]
                if s < 3:
                    layers.append(MBConv(in_ch, channels[s], i == 0, next(rates)))
                else:
                    layers.append(RelativeTransformer(in_ch, channels[s], i == 0, side, drop_rate, next(rates)))
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(channels[4], num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.stages(x).mean((2, 3)))
