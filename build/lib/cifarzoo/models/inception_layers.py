"""Building blocks of the Inception family (inception_v3, inception_v4, inception_resnet_v2):
the conv - BN - ReLU unit ("BasicConv2d"), chains of them, and parallel branches concatenated
along the channels."""

from __future__ import annotations

import torch
from torch import nn

# One conv of a chain: (out_channels, kernel, stride, padding); kernel/padding may be (h, w).
Conv = tuple[int, "int | tuple[int, int]", int, "int | tuple[int, int]"]


def conv_bn_relu(in_ch: int, out_ch: int, kernel: int | tuple[int, int] = 1, stride: int = 1,
                 padding: int | tuple[int, int] = 0) -> nn.Sequential:
    """Conv without bias - BN - ReLU."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, stride, padding, bias=False), nn.BatchNorm2d(out_ch),
                         nn.ReLU(inplace=True))


def chain(in_ch: int, *convs: Conv) -> nn.Sequential:
    """conv_bn_relu units one after another, each taking the previous one's channels."""
    layers = []
    for out_ch, kernel, stride, padding in convs:
        layers.append(conv_bn_relu(in_ch, out_ch, kernel, stride, padding))
        in_ch = out_ch
    return nn.Sequential(*layers)


def pooled(pool: nn.Module, in_ch: int, *convs: Conv) -> nn.Sequential:
    """A pooling branch, optionally followed by convs."""
    return nn.Sequential(pool, *chain(in_ch, *convs))


class Concat(nn.ModuleList):
    """Parallel branches on the same input, concatenated along the channels in the given order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self], 1)


class Split(nn.Module):
    """A trunk followed by parallel heads, concatenated (Inception's 1x3 / 3x1 fan-out)."""

    def __init__(self, trunk: nn.Module, *heads: nn.Module) -> None:
        super().__init__()
        self.trunk, self.heads = trunk, Concat(heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.trunk(x))


def same(kernel: int | tuple[int, int]) -> int | tuple[int, int]:
    """'Same' padding of an odd kernel."""
    return tuple(k // 2 for k in kernel) if isinstance(kernel, tuple) else kernel // 2


def c(out_ch: int, kernel: int | tuple[int, int] = 1, stride: int = 1, padding: int | tuple[int, int] | None = None) -> Conv:
    """A chain entry; stride-1 convs pad 'same' unless told."""
    return (out_ch, kernel, stride, same(kernel) if padding is None and stride == 1 else padding or 0)


class InceptionNet(nn.Module):
    """Feature modules, global average pooling, dropout, linear: the head all three share."""

    def __init__(self, features: list[nn.Module], width: int, num_classes: int, drop_rate: float) -> None:
        super().__init__()
        self.features = nn.Sequential(*features, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.features(x)))
