"""Inception-v4 (Szegedy et al. 2017, "Inception-v4, Inception-ResNet and the Impact of Residual
Connections on Learning", arXiv:1602.07261) as the pytorch-cifar-tricks seed trained it at 32x32
(pprp/pytorch-cifar-tricks `model/inceptionv4.py` at 7bf6ee9, "inceptionv4"; a port of
weiaicunzai/pytorch-cifar100).

The repository's CIFAR stem (also Inception-ResNet-v2's, `inception_stem`): conv3x3 32 (unpadded,
32 -> 30) - 3x3 32 - 3x3 64; [3x3 96 | max-pool 3x3 s1] -> 160; [1x1 64 - 7x1 64 - 1x7 64 - 3x3 96 |
1x1 64 - 3x3 96] -> 192; [max-pool 3x3 s1 | 3x3 192] -> 384, all at 30x30 (the paper's stem
downsamples 299 -> 35). Then `blocks` = (A, B, C) = (4, 7, 3) Inception-A/B/C modules with
reduction A (k, l, m, n = 192, 224, 256, 384; 30 -> 14) and reduction B (14 -> 7) between them,
global average pooling, dropout 0.2 (the paper's keep 0.8; `drop_rate`), linear 1536 -> classes.
Every conv is conv (no bias) - BN - ReLU. 41,158,186 parameters for 10 classes, exactly the
repository's.

Deviations: the first conv takes the dataset's channels (the repository: 3). Pooling is adaptive
where the repository's is a fixed 7x7 (the same at 32x32; 28x28 inputs end at 6x6). Its Dropout2d
on the pooled 1x1 maps equals dropout on the flattened vector. PyTorch's default initialisation,
as the repository.
"""

from __future__ import annotations

from torch import nn

from cifarzoo.errors import require
from cifarzoo.models.inception_layers import Concat, InceptionNet, Split, c, chain, conv_bn_relu, pooled
from cifarzoo.models.layers import check_positive_ints, check_rates

STEM_CHANNELS = 384


def check_abc(blocks: object) -> tuple[int, int, int]:
    """`model.blocks`: the numbers of Inception-A, -B and -C modules."""
    require(isinstance(blocks, (list, tuple)) and len(blocks) == 3, "model.blocks",
            "must be 3 ints (Inception-A, -B, -C modules)", blocks)
    check_positive_ints(blocks=list(blocks))
    return tuple(blocks)


def inception_stem(in_channels: int) -> nn.Sequential:
    return nn.Sequential(
        chain(in_channels, c(32, 3, 1, 0), c(32, 3), c(64, 3)),
        Concat([chain(64, c(96, 3)), nn.MaxPool2d(3, 1, 1)]),
        Concat([chain(160, c(64), c(64, (7, 1)), c(64, (1, 7)), c(96, 3)), chain(160, c(64), c(96, 3))]),
        Concat([nn.MaxPool2d(3, 1, 1), chain(192, c(192, 3))]),
    )


def reduction_a(in_ch: int, k: int, l: int, m: int, n: int) -> Concat:  # noqa: E741 (the paper's names)
    """Output channels: in_ch + n + m."""
    return Concat([chain(in_ch, c(k), c(l, 3), c(m, 3, 2)), chain(in_ch, c(n, 3, 2)), nn.MaxPool2d(3, 2)])


def inception_a(in_ch: int) -> Concat:
    return Concat([
        chain(in_ch, c(64), c(96, 3), c(96, 3)),
        chain(in_ch, c(64), c(96, 3)),
        chain(in_ch, c(96)),
        pooled(nn.AvgPool2d(3, 1, 1), in_ch, c(96)),
    ])


def inception_b(in_ch: int) -> Concat:
    return Concat([
        chain(in_ch, c(384)),
        chain(in_ch, c(192), c(224, (1, 7)), c(256, (7, 1))),
        chain(in_ch, c(192), c(192, (1, 7)), c(224, (7, 1)), c(224, (1, 7)), c(256, (7, 1))),
        pooled(nn.AvgPool2d(3, 1, 1), in_ch, c(128)),
    ])


def reduction_b(in_ch: int) -> Concat:
    return Concat([
        chain(in_ch, c(192), c(192, 3, 2, 1)),
        chain(in_ch, c(256), c(256, (1, 7)), c(320, (7, 1)), c(320, 3, 2, 1)),
        nn.MaxPool2d(3, 2, 1),
    ])


def inception_c(in_ch: int) -> Concat:
    def fan_out(trunk: nn.Module, width: int, first: tuple, second: tuple) -> Split:
        return Split(trunk, conv_bn_relu(width, 256, first, 1, (first[0] // 2, first[1] // 2)),
                     conv_bn_relu(width, 256, second, 1, (second[0] // 2, second[1] // 2)))

    return Concat([
        chain(in_ch, c(256)),
        fan_out(chain(in_ch, c(384)), 384, (3, 1), (1, 3)),
        fan_out(chain(in_ch, c(384), c(448, (1, 3)), c(512, (3, 1))), 512, (1, 3), (3, 1)),
        pooled(nn.AvgPool2d(3, 1, 1), in_ch, c(256)),
    ])


class InceptionV4(InceptionNet):
    def __init__(self, in_channels: int, num_classes: int, blocks: list[int] = (4, 7, 3),
                 drop_rate: float = 0.2) -> None:
        check_rates(drop_rate=drop_rate)
        a, b, c_ = check_abc(blocks)
        super().__init__([
            inception_stem(in_channels),
            *[inception_a(STEM_CHANNELS) for _ in range(a)],
            reduction_a(STEM_CHANNELS, 192, 224, 256, 384),
            *[inception_b(1024) for _ in range(b)],
            reduction_b(1024),
            *[inception_c(1536) for _ in range(c_)],
        ], 1536, num_classes, drop_rate)
