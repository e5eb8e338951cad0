"""RegNet (Radosavovic et al. 2020, "Designing Network Design Spaces", arXiv:2003.13678) as
pytorch-cifar-tricks (pprp, model/regnet.py at 7bf6ee9, = kuangliu's pytorch-cifar) trained it
at 32x32; its "regnet" is RegNetX-200MF.

Structure: a 3x3 stem conv of 64 channels (stride 1) -> BN -> ReLU; four stages of d_i blocks at
widths w_i with strides (1, 1, 2, 2); global average pool; linear. Block (the paper's X block):
conv1x1 (w_b = round(w_i * b)) -> BN -> ReLU -> grouped conv3x3 (w_b / g groups, the stage's
stride) -> BN -> ReLU [-> SE] -> conv1x1 (w_i) -> BN, plus the shortcut (1x1 conv + BN where the
shape changes), then ReLU. Y blocks add SE (hidden width round(block input width * se_ratio)).
`variant` picks the paper's design (d_i, w_i, g, b, se_ratio), as the reference's three:

    X-200MF: d (1, 1, 4, 7),  w (24, 56, 152, 368), g 8,  b 1          2,321,946 params
    X-400MF: d (1, 2, 7, 12), w (32, 64, 160, 384), g 16, b 1          4,779,338 params
    Y-400MF: d (1, 2, 7, 12), w (32, 64, 160, 384), g 16, b 1, SE 0.25 5,714,362 params

(10 classes; the reference's counts.) Deviations from the paper, as the reference: the CIFAR
stem (3x3, stride 1, 64 channels instead of 3x3 stride 2, 32) and stage strides (1, 1, 2, 2)
instead of 2 everywhere. Init: PyTorch's default, as the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cifarzoo.errors import require
from cifarzoo.models.se_resnet_preact import SqueezeExcitation

STEM_WIDTH = 64
STRIDES = (1, 1, 2, 2)


@dataclass(frozen=True)
class RegNetDesign:
    depths: tuple[int, ...]   # d_i: blocks per stage
    widths: tuple[int, ...]   # w_i: output width per stage
    group_width: int          # g
    bottleneck_ratio: float   # b
    se_ratio: float = 0.0     # 0: X blocks; > 0: Y blocks


VARIANTS: dict[str, RegNetDesign] = {
    "X-200MF": RegNetDesign((1, 1, 4, 7), (24, 56, 152, 368), 8, 1),
    "X-400MF": RegNetDesign((1, 2, 7, 12), (32, 64, 160, 384), 16, 1),
    "Y-400MF": RegNetDesign((1, 2, 7, 12), (32, 64, 160, 384), 16, 1, se_ratio=0.25),
}


class RegNetBlock(nn.Module):
    def __init__(self, w_in: int, w_out: int, stride: int, design: RegNetDesign) -> None:
        super().__init__()
        w_b = int(round(w_out * design.bottleneck_ratio))
        se: nn.Module = nn.Identity()
        if design.se_ratio > 0:
            se = SqueezeExcitation(w_b, act=nn.ReLU, hidden=int(round(w_in * design.se_ratio)))
        self.branch = nn.Sequential(
            nn.Conv2d(w_in, w_b, 1, bias=False), nn.BatchNorm2d(w_b), nn.ReLU(),
            nn.Conv2d(w_b, w_b, 3, stride, 1, groups=w_b // design.group_width, bias=False), nn.BatchNorm2d(w_b),
            nn.ReLU(), se,
            nn.Conv2d(w_b, w_out, 1, bias=False), nn.BatchNorm2d(w_out),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or w_in != w_out:
            self.shortcut = nn.Sequential(nn.Conv2d(w_in, w_out, 1, stride, bias=False), nn.BatchNorm2d(w_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.branch(x) + self.shortcut(x))


class RegNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, variant: str = "X-200MF") -> None:
        super().__init__()
        require(variant in VARIANTS, "model.variant", f"must be one of {', '.join(VARIANTS)}", variant)
        design = VARIANTS[variant]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, STEM_WIDTH, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(STEM_WIDTH), nn.ReLU())
        stages, w_in = [], STEM_WIDTH
        for depth, width, stride in zip(design.depths, design.widths, STRIDES):
            blocks = []
            for i in range(depth):
                blocks.append(RegNetBlock(w_in, width, stride if i == 0 else 1, design))
                w_in = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(w_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.fc(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))
