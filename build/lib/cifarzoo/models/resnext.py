"""ResNeXt for CIFAR (Xie et al. 2017, "Aggregated Residual Transformations for Deep Neural
Networks", arXiv:1611.05431), section 5.2 and the official Torch code
(facebookresearch/ResNeXt, `models/resnext.lua`, CIFAR branch, block form (C)).

Network: conv3x3 (64) - BN - ReLU, then 3 stages of n = (depth - 2) / 9 bottleneck blocks
(ResNeXt-29: n = 3), global average pooling and a linear classifier.

Block (post-activation, as the original ResNet):
    conv1x1 (C*d) - BN - ReLU - grouped conv3x3 (C*d, C groups, stride here) - BN - ReLU
    - conv1x1 (4x the stage's base width) - BN, plus the shortcut, then ReLU.
Stage i (i = 0, 1, 2) outputs 256 * 2^i channels (256, 512, 1024); its group width is
d * 2^i, with d = `base_channels` (the "64d" of "8x64d") and C = `cardinality` (the "8").
Shortcut: identity, or a projection conv1x1 (with the stride) + BN where the shape changes
(the official code's shortcut type B). Convolutions have no bias.

Initialisation: `init_weights` (He fan-out normal convs, as the official ConvInit; BN 1 / 0;
zero classifier bias).

Deviations:
- Blocks are the official code's original (post-activation) bottlenecks. The official README
  notes that the arXiv paper's CIFAR results used pre-activated bottleneck blocks and that the
  original blocks test better; the parameter count differs by only a few thousand BN parameters.
- Parameter counts: ResNeXt-29 8x64d has 34,426,698 and 16x64d 68,155,210 parameters here
  (other PyTorch ports measure the same 34.43M / 68.16M); the paper prints 34.4M / 68.1M, i.e.
  it truncates to one decimal rather than rounding.
- Global average pooling is adaptive (instead of the official 8x8 pooling) so 28x28 inputs work.

hysts' pytorch_image_classification builds the same network (its `initial_channels` = 64
is our fixed stem width); the group width there is also `base_channels * 2^stage`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cifarzoo.errors import require
from cifarzoo.models.init import init_weights

STEM_CHANNELS = 64
EXPANSION = 4


class ResNeXtBranch(nn.Sequential):
    """The aggregated residual transformation (form C): conv1x1 - BN - ReLU - grouped
    conv3x3 - BN - ReLU - conv1x1 - BN. Also the residual branch of shake-shake's
    ResNeXt-style CIFAR-100 network."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, group_width: int, cardinality: int) -> None:
        inner = group_width * cardinality
        super().__init__(
            nn.Conv2d(in_ch, inner, 1, 1, 0, bias=False),
            nn.BatchNorm2d(inner),
            nn.ReLU(inplace=True),
            nn.Conv2d(inner, inner, 3, stride, 1, groups=cardinality, bias=False),
            nn.BatchNorm2d(inner),
            nn.ReLU(inplace=True),
            nn.Conv2d(inner, out_ch, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_ch),
        )


def projection_shortcut(in_ch: int, out_ch: int, stride: int) -> nn.Module:
    """Identity, or conv1x1 (with the stride) + BN where the shape changes (type B)."""
    if in_ch == out_ch and stride == 1:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, 0, bias=False), nn.BatchNorm2d(out_ch))


class ResNeXtBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, group_width: int, cardinality: int) -> None:
        super().__init__()
        self.residual = ResNeXtBranch(in_ch, out_ch, stride, group_width, cardinality)
        self.shortcut = projection_shortcut(in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.residual(x) + self.shortcut(x))


def stage_widths(base_channels: int) -> list[tuple[int, int, int]]:
    """(stride, group width, output channels) of the three CIFAR stages."""
    return [(stride, base_channels * 2**i, STEM_CHANNELS * EXPANSION * 2**i) for i, stride in enumerate((1, 2, 2))]


def check_resnext_depth(depth: int) -> int:
    """Blocks per stage for a 9n+2 depth (3 stages of 3-layer blocks, stem and classifier)."""
    n = (depth - 2) // 9 if isinstance(depth, int) else 0
    require(n >= 1 and 9 * n + 2 == depth, "model.depth", "ResNeXt needs depth = 9n+2, n >= 1", depth)
    return n


class ResNeXt(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        depth: int = 29,
        cardinality: int = 8,
        base_channels: int = 64,
    ) -> None:
        super().__init__()
        n = check_resnext_depth(depth)
        require(isinstance(cardinality, int) and cardinality >= 1, "model.cardinality", "must be an int >= 1",
                cardinality)
        require(isinstance(base_channels, int) and base_channels >= 1, "model.base_channels",
                "must be an int >= 1 (width of one group in the first stage)", base_channels)

        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, STEM_CHANNELS, 3, 1, 1, bias=False),
            nn.BatchNorm2d(STEM_CHANNELS),
            nn.ReLU(inplace=True),
        )
        stages, in_ch = [], STEM_CHANNELS
        for stride, group_width, out_ch in stage_widths(base_channels):
            blocks = [ResNeXtBlock(in_ch if i == 0 else out_ch, out_ch, stride if i == 0 else 1, group_width,
                                   cardinality) for i in range(n)]
            stages.append(nn.Sequential(*blocks))
            in_ch = out_ch
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(in_ch, num_classes)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
