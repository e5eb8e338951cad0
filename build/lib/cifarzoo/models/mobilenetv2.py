"""MobileNetV2 (Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks",
arXiv:1801.04381) as pytorch-cifar-tricks (pprp, model/mobilenetv2.py at 7bf6ee9, = kuangliu's
pytorch-cifar) trained it at 32x32: 2,296,922 parameters for 10 classes (the reference's count).

Structure: a 3x3 stem conv of 32 channels (stride 1) -> BN -> ReLU; the paper's bottleneck
stages (expansion t, channels c, repeats n, stride s: 1,16,1,1 | 6,24,2,1 | 6,32,3,2 | 6,64,4,2 |
6,96,3,1 | 6,160,3,2 | 6,320,1,1); conv1x1 to 1280 -> BN -> ReLU; global average pool; linear.
Bottleneck: conv1x1 (t x input width) -> BN -> ReLU -> depthwise conv3x3 (stride) -> BN -> ReLU ->
conv1x1 -> BN (linear), plus, at stride 1, the input (or its 1x1 conv + BN where the width
changes). Convs have no bias. `width_multiplier` is the paper's alpha: widths x alpha rounded to
multiples of 8 as in the paper's code; the last conv keeps 1280 channels for alpha <= 1.

Deviations from the paper, as the reference: the CIFAR strides (stem and second stage 1 instead
of 2), ReLU instead of ReLU6, an expansion conv also in the t = 1 block, and a projection
shortcut on the stride-1 blocks that change width (the paper has none there). The pool is global
(the reference's 4x4 average pool is global at 32x32). Init: PyTorch's default, as the reference.
"""

from __future__ import annotations

import torch
from torch import nn

from cifarzoo.errors import is_number, require
from cifarzoo.models.layers import round_width

STEM_WIDTH, LAST_WIDTH = 32, 1280
# expansion t, output width c, repeats n, stride s (the paper's Table 2, CIFAR strides).
STAGES = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class InvertedResidual(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, expansion: int, stride: int) -> None:
        super().__init__()
        mid = expansion * in_ch
        self.branch = nn.Sequential(
            nn.Conv2d(in_ch, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
            nn.Conv2d(mid, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch),
        )
        self.shortcut: nn.Module | None = None
        if stride == 1:
            self.shortcut = nn.Identity() if in_ch == out_ch else nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.branch(x)
        return y + self.shortcut(x) if self.shortcut is not None else y


class MobileNetV2(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, width_multiplier: float = 1.0) -> None:
        super().__init__()
        require(is_number(width_multiplier) and width_multiplier > 0, "model.width_multiplier", "must be > 0",
                width_multiplier)
        in_ch = round_width(STEM_WIDTH, width_multiplier)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, in_ch, 3, 1, 1, bias=False), nn.BatchNorm2d(in_ch), nn.ReLU()]
        for expansion, width, repeats, stride in STAGES:
            out_ch = round_width(width, width_multiplier)
            for i in range(repeats):
                layers.append(InvertedResidual(in_ch, out_ch, expansion, stride if i == 0 else 1))
                in_ch = out_ch
        last = round_width(LAST_WIDTH, width_multiplier) if width_multiplier > 1 else LAST_WIDTH
        layers += [nn.Conv2d(in_ch, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1))
