"""EfficientNet (Tan & Le 2019, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks", arXiv:1905.11946) as pytorch-cifar-tricks (pprp, model/efficientnetb0.py at 7bf6ee9,
= kuangliu's pytorch-cifar) trained EfficientNet-B0 at 32x32.

Structure: a 3x3 stem conv of 32 channels (stride 1) -> BN -> swish; the paper's seven MBConv
stages (expansion, channels, repeats, kernel, stride: 1,16,1,3,1 | 6,24,2,3,2 | 6,40,2,5,2 |
6,80,3,3,2 | 6,112,3,5,1 | 6,192,4,5,2 | 6,320,1,3,1); global average pool; dropout (`drop_rate`);
linear. MBConv: [conv1x1 expansion -> BN -> swish, absent at expansion 1] -> depthwise conv (kernel,
stride) -> BN -> swish -> SE (hidden width = block input width * 0.25, swish) -> conv1x1 -> BN;
where stride is 1 and the width is unchanged, + the input, the branch dropped per sample with
probability drop_connect_rate * (block index / number of blocks) in training (stochastic depth).
`width_coefficient` / `depth_coefficient` scale widths and repeats with the paper's rounding
(widths to multiples of 8, repeats up); B0 is 1 / 1.

Deviations from the paper, as the reference: the CIFAR stem (stride 1 instead of 2) and no final
conv1x1 to 1280 channels (the classifier reads the 320 channels of the last stage).
Deviations from the reference, stated plainly:
- Parameters: 3,598,598 for 10 classes; the reference has 3,599,686, 1,088 more, because it also
  creates an expansion conv + BN in the first block (expansion 1) that its forward never uses.
- Drop connect: the reference's config sets 0.2, but its block counter never advances, so every
  block's rate is 0 and the network it trained had none: `drop_connect_rate` defaults to 0 here
  (0.2 gives the paper's linearly rising schedule).
Init: PyTorch's default, as the reference.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cifarzoo.errors import is_number, require
from cifarzoo.models.layers import round_width
from cifarzoo.models.se_resnet_preact import SqueezeExcitation

STEM_WIDTH = 32
SE_RATIO = 0.25
# B0's stages: expansion, output width, repeats, kernel, stride (the paper's Table 1; CIFAR stem stride 1).
B0_STAGES = [(1, 16, 1, 3, 1), (6, 24, 2, 3, 2), (6, 40, 2, 5, 2), (6, 80, 3, 3, 2), (6, 112, 3, 5, 1),
             (6, 192, 4, 5, 2), (6, 320, 1, 3, 1)]


class DropConnect(nn.Module):
    """In training, zero each sample's input with probability p and scale the rest by 1/(1-p)
    (the reference's `drop_connect`; torchvision's StochasticDepth, whose import costs seconds)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = 1 - self.p
        return x * torch.empty(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device).bernoulli_(keep) / keep


class MBConv(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, expansion: int, kernel_size: int, stride: int,
                 drop_connect_rate: float) -> None:
        super().__init__()
        mid = in_ch * expansion
        expand = [nn.Conv2d(in_ch, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.SiLU()] if expansion != 1 else []
        self.branch = nn.Sequential(
            *expand,
            nn.Conv2d(mid, mid, kernel_size, stride, kernel_size // 2, groups=mid, bias=False), nn.BatchNorm2d(mid),
            nn.SiLU(),
            SqueezeExcitation(mid, act=nn.SiLU, hidden=max(1, int(in_ch * SE_RATIO))),
            nn.Conv2d(mid, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch),
        )
        self.residual = stride == 1 and in_ch == out_ch
        self.drop_connect = DropConnect(drop_connect_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.branch(x)
        return x + self.drop_connect(y) if self.residual else y


class EfficientNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, width_coefficient: float = 1.0,
                 depth_coefficient: float = 1.0, drop_rate: float = 0.2, drop_connect_rate: float = 0.0) -> None:
        super().__init__()
        for key, value in (("width_coefficient", width_coefficient), ("depth_coefficient", depth_coefficient)):
            require(is_number(value) and value > 0, f"model.{key}", "must be > 0", value)
        for key, value in (("drop_rate", drop_rate), ("drop_connect_rate", drop_connect_rate)):
            require(is_number(value) and 0 <= value < 1, f"model.{key}", "must be in [0, 1)", value)
        stem = round_width(STEM_WIDTH, width_coefficient)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.SiLU()]
        stages = [(e, round_width(c, width_coefficient), math.ceil(n * depth_coefficient), k, s)
                  for e, c, n, k, s in B0_STAGES]
        total, index, in_ch = sum(n for _, _, n, _, _ in stages), 0, stem
        for expansion, out_ch, repeats, kernel_size, stride in stages:
            for i in range(repeats):
                layers.append(MBConv(in_ch, out_ch, expansion, kernel_size, stride if i == 0 else 1,
                                     drop_connect_rate * index / total))
                in_ch, index = out_ch, index + 1
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.fc(self.dropout(x))
