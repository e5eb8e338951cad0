"""Inception-v3 (Szegedy et al. 2016, "Rethinking the Inception Architecture for Computer
Vision", arXiv:1512.00567) as the pytorch-cifar-tricks seed trained it at 32x32
(pprp/pytorch-cifar-tricks `model/inceptionv3.py` at 7bf6ee9, "inceptionv3"; a port of
weiaicunzai/pytorch-cifar100).

The CIFAR adaptation of that repository (followed here, not the ImageNet network):
- Stem without the ImageNet downsampling: conv3x3 32 - 3x3 32 - 3x3 64 (all padded) - 1x1 80 -
  3x3 192 (unpadded): 32x32 -> 30x30. Every conv is conv (no bias) - BN - ReLU.
- 3 Inception-A (35x35 modules of the paper, here on 30x30), whose pooling branch is avg-pool
  3x3 then a *3x3* conv (the paper/torchvision: 1x1), 32/64/64 pool features.
- Reduction B (30 -> 14), 4 Inception-C with 1x7/7x1 factorisation (c7 = 128, 160, 160, 192;
  the single-factorisation branch runs 7x1 then 1x7), reduction D (14 -> 6), 2 Inception-E.
- No auxiliary classifier; global average pooling, dropout 0.5 (`drop_rate`), linear 2048 -> classes.
22,133,738 parameters for 10 classes, exactly the repository's.

Deviations: the repository's first conv takes 3 channels; here it takes the dataset's. Its
Dropout2d on the pooled 1x1 maps is the same distribution as dropout on the flattened vector,
used here. Initialisation: PyTorch's defaults, as the repository.
"""

from __future__ import annotations

from torch import nn

from cifarzoo.models.inception_layers import Concat, InceptionNet, Split, c, chain, conv_bn_relu, pooled
from cifarzoo.models.layers import check_rates


def inception_a(in_ch: int, pool_features: int) -> Concat:
    return Concat([
        chain(in_ch, c(64)),
        chain(in_ch, c(48), c(64, 5)),
        chain(in_ch, c(64), c(96, 3), c(96, 3)),
        pooled(nn.AvgPool2d(3, 1, 1), in_ch, c(pool_features, 3)),
    ])


def reduction_b(in_ch: int) -> Concat:
    return Concat([
        chain(in_ch, c(384, 3, 2)),
        chain(in_ch, c(64), c(96, 3), c(96, 3, 2)),
        nn.MaxPool2d(3, 2),
    ])


def inception_c(in_ch: int, c7: int) -> Concat:
    return Concat([
        chain(in_ch, c(192)),
        chain(in_ch, c(c7), c(c7, (7, 1)), c(192, (1, 7))),
        chain(in_ch, c(c7), c(c7, (7, 1)), c(c7, (1, 7)), c(c7, (7, 1)), c(192, (1, 7))),
        pooled(nn.AvgPool2d(3, 1, 1), in_ch, c(192)),
    ])


def reduction_d(in_ch: int) -> Concat:
    return Concat([
        chain(in_ch, c(192), c(320, 3, 2)),
        chain(in_ch, c(192), c(192, (1, 7)), c(192, (7, 1)), c(192, 3, 2)),
        nn.AvgPool2d(3, 2),
    ])


def inception_e(in_ch: int) -> Concat:
    def fan_out(trunk: nn.Module, width: int) -> Split:
        return Split(trunk, conv_bn_relu(width, 384, (1, 3), 1, (0, 1)), conv_bn_relu(width, 384, (3, 1), 1, (1, 0)))

    return Concat([
        chain(in_ch, c(320)),
        fan_out(chain(in_ch, c(384)), 384),
        fan_out(chain(in_ch, c(448), c(384, 3)), 384),
        pooled(nn.AvgPool2d(3, 1, 1), in_ch, c(192)),
    ])


class InceptionV3(InceptionNet):
    def __init__(self, in_channels: int, num_classes: int, drop_rate: float = 0.5) -> None:
        check_rates(drop_rate=drop_rate)
        super().__init__([
            chain(in_channels, c(32, 3), c(32, 3), c(64, 3), c(80), c(192, 3, 1, 0)),
            inception_a(192, 32), inception_a(256, 64), inception_a(288, 64),
            reduction_b(288),
            inception_c(768, 128), inception_c(768, 160), inception_c(768, 160), inception_c(768, 192),
            reduction_d(768),
            inception_e(1280), inception_e(2048),
        ], 2048, num_classes, drop_rate)
