"""Inception-ResNet-v2 (Szegedy et al. 2017, arXiv:1602.07261) as the pytorch-cifar-tricks seed
trained it at 32x32 (pprp/pytorch-cifar-tricks `model/inceptionv4.py` at 7bf6ee9,
"inception_resnet_v2"; a port of weiaicunzai/pytorch-cifar100).

Network: the Inception-v4 CIFAR stem (`inception_v4.inception_stem`, 384 channels at 30x30),
`blocks` = (5, 10, 5) Inception-ResNet-A/B/C modules with reduction A (k, l, m, n = 256, 256, 384,
384; 30 -> 14) and reduction B (14 -> 6) between them, global average pooling, dropout 0.2
(`drop_rate`), linear 2048 -> classes.

The repository's residual module (followed here, not the paper's): the concatenated branches go
through a 1x1 conv *with bias* to the module's width (A 384, B 1154, C 2048); the shortcut is
always a 1x1 conv with bias (even where the widths match); then BN(shortcut + residual) - ReLU.
B and C scale the residual by 0.1, A does not. Branch convs are conv (no bias) - BN - ReLU.
65,257,662 parameters for 10 classes, exactly the repository's.

Deviations: the first conv takes the dataset's channels (the repository: 3); Dropout2d on the
pooled 1x1 maps is written as dropout on the flattened vector (the same distribution). PyTorch's
default initialisation, as the repository.
"""

from __future__ import annotations

import torch
from torch import nn

from cifarzoo.models.inception_layers import Concat, InceptionNet, c, chain
from cifarzoo.models.inception_v4 import STEM_CHANNELS, check_abc, inception_stem, reduction_a
from cifarzoo.models.layers import check_rates


class ResidualInception(nn.Module):
    """BN(conv1x1(x) + scale * conv1x1(concat(branches(x)))) - ReLU."""

    def __init__(self, in_ch: int, branches: Concat, branch_ch: int, out_ch: int, scale: float) -> None:
        super().__init__()
        self.branches = branches
        self.reduction = nn.Conv2d(branch_ch, out_ch, 1)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1)
        self.bn = nn.BatchNorm2d(out_ch)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.shortcut(x) + self.reduction(self.branches(x)) * self.scale))


def block_a(in_ch: int) -> ResidualInception:
    branches = Concat([chain(in_ch, c(32)), chain(in_ch, c(32), c(32, 3)), chain(in_ch, c(32), c(48, 3), c(64, 3))])
    return ResidualInception(in_ch, branches, 128, 384, 1.0)


def block_b(in_ch: int) -> ResidualInception:
    branches = Concat([chain(in_ch, c(192)), chain(in_ch, c(128), c(160, (1, 7)), c(192, (7, 1)))])
    return ResidualInception(in_ch, branches, 384, 1154, 0.1)


def block_c(in_ch: int) -> ResidualInception:
    branches = Concat([chain(in_ch, c(192)), chain(in_ch, c(192), c(224, (1, 3)), c(256, (3, 1)))])
    return ResidualInception(in_ch, branches, 448, 2048, 0.1)


def reduction_b(in_ch: int) -> Concat:
    """Output channels: 384 + 288 + 320 + in_ch."""
    return Concat([
        chain(in_ch, c(256), c(384, 3, 2)),
        chain(in_ch, c(256), c(288, 3, 2)),
        chain(in_ch, c(256), c(288, 3), c(320, 3, 2)),
        nn.MaxPool2d(3, 2),
    ])


class InceptionResNetV2(InceptionNet):
    def __init__(self, in_channels: int, num_classes: int, blocks: list[int] = (5, 10, 5),
                 drop_rate: float = 0.2) -> None:
        check_rates(drop_rate=drop_rate)
        a, b, c_ = check_abc(blocks)
        width_a, width_b = STEM_CHANNELS, STEM_CHANNELS + 384 + 384  # after reduction A: in + n + m
        width_c = 1154 + 384 + 288 + 320
        super().__init__([
            inception_stem(in_channels),
            *[block_a(width_a) for _ in range(a)],
            reduction_a(width_a, 256, 256, 384, 384),
            *[block_b(width_b if i == 0 else 1154) for i in range(b)],
            reduction_b(1154),
            *[block_c(width_c if i == 0 else 2048) for i in range(c_)],
        ], 2048, num_classes, drop_rate)
