"""Dual Path Networks (Chen et al. 2017, "Dual Path Networks", arXiv:1707.01629) as
pytorch-cifar-tricks (pprp, model/dpn.py at 7bf6ee9, = kuangliu's pytorch-cifar) trained them
at 32x32: its "dpn" is DPN-26, and DPN-92 has the paper's widths. For 10 classes:

    variant 26: blocks (2, 2, 2, 2)    11,574,842 params
    variant 92: blocks (3, 4, 20, 3)   34,236,634 params

Structure: a 3x3 stem conv of 64 channels (stride 1) -> BN -> ReLU; four stages with strides
(1, 2, 2, 2), bottleneck widths (96, 192, 384, 768), residual widths (256, 512, 1024, 2048) and
dense increments k = (16, 32, 24, 128); global average pool; linear. Block: conv1x1 (bottleneck
width) -> BN -> ReLU -> grouped conv3x3 (`cardinality` G = 32 groups, the stride) -> BN -> ReLU ->
conv1x1 (residual width + k) -> BN; its first `residual width` channels are added to the
input's (the residual path), its last k are appended to the input's other channels (the densely
connected path), then ReLU. A stage's first block first maps its input by conv1x1 (stride) -> BN
to residual width + k channels. Each block thus widens the dense path by k.

Deviations from the paper, as the reference: the CIFAR stem (one 3x3 conv, no max-pool), ReLU
after the block's concatenation (the paper's blocks are pre-activated). Beyond the reference:
its DPN-26 ignores `num_classes` (always 10 outputs); here every variant has `num_classes`
outputs (the same network and count at 10 classes). The pool is global (the reference's 4x4
average pool is global at 32x32). `widen` scales every width (not in the reference: small
test models; the reference is widen 1). Init: PyTorch's default, as the reference.
"""

from __future__ import annotations

import torch
from torch import nn

from cifarzoo.errors import is_int, is_number, require

STEM_WIDTH = 64
STRIDES = (1, 2, 2, 2)
BOTTLENECK_WIDTHS = (96, 192, 384, 768)
RESIDUAL_WIDTHS = (256, 512, 1024, 2048)
DENSE_DEPTHS = (16, 32, 24, 128)  # k
VARIANTS: dict[int, tuple[int, int, int, int]] = {26: (2, 2, 2, 2), 92: (3, 4, 20, 3)}  # blocks per stage


class DualPathBlock(nn.Module):
    def __init__(self, in_ch: int, bottleneck_width: int, residual_width: int, dense_depth: int, stride: int,
                 cardinality: int, project: bool) -> None:
        super().__init__()
        out = residual_width + dense_depth
        self.residual_width = residual_width
        self.branch = nn.Sequential(
            nn.Conv2d(in_ch, bottleneck_width, 1, bias=False), nn.BatchNorm2d(bottleneck_width), nn.ReLU(),
            nn.Conv2d(bottleneck_width, bottleneck_width, 3, stride, 1, groups=cardinality, bias=False),
            nn.BatchNorm2d(bottleneck_width), nn.ReLU(),
            nn.Conv2d(bottleneck_width, out, 1, bias=False), nn.BatchNorm2d(out),
        )
        self.project = nn.Sequential(nn.Conv2d(in_ch, out, 1, stride, bias=False), nn.BatchNorm2d(out)) \
            if project else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, x, d = self.branch(x), self.project(x), self.residual_width
        return torch.relu(torch.cat([x[:, :d] + y[:, :d], x[:, d:], y[:, d:]], 1))


class DPN(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, variant: int = 26, cardinality: int = 32,
                 widen: float = 1) -> None:
        super().__init__()
        require(variant in VARIANTS, "model.variant", f"must be one of {', '.join(map(str, VARIANTS))}", variant)
        require(is_int(cardinality) and cardinality >= 1, "model.cardinality", "must be an int >= 1", cardinality)
        every_width = (STEM_WIDTH, *BOTTLENECK_WIDTHS, *RESIDUAL_WIDTHS, *DENSE_DEPTHS)
        require(is_number(widen) and widen > 0 and all(float(w * widen).is_integer() and w * widen >= 1 for w in every_width),
                "model.widen", "must be > 0 with every width x widen a whole number >= 1", widen)

        def scaled(widths: tuple[int, ...]) -> list[int]:
            return [int(w * widen) for w in widths]

        stem, bottleneck, residual, dense = int(STEM_WIDTH * widen), *map(
            scaled, (BOTTLENECK_WIDTHS, RESIDUAL_WIDTHS, DENSE_DEPTHS))
        require(all(b % cardinality == 0 for b in bottleneck), "model.cardinality",
                f"must divide every bottleneck width {bottleneck}", cardinality)

        layers: list[nn.Module] = [nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU()]
        in_ch = stem
        for n, b, r, k, stride in zip(VARIANTS[variant], bottleneck, residual, dense, STRIDES):
            for i in range(n):
                layers.append(DualPathBlock(in_ch, b, r, k, stride if i == 0 else 1, cardinality, project=i == 0))
                in_ch = r + (i + 2) * k
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1))
