"""NASNet-A (Zoph et al. 2018, "Learning Transferable Architectures for Scalable Image
Recognition", arXiv:1707.07012) as the pytorch-cifar-tricks seed built it for 32x32
(pprp/pytorch-cifar-tricks `model/nasnet.py` at 7bf6ee9, "nasnet", i.e. NASNet-A 4 @ 44 filters;
a port of weiaicunzai/pytorch-cifar100). The seed's table has no result for it: "out of mem".

Network: conv3x3 (no bias) - BN stem with `filters` (44) channels; `cells` (4) normal cells,
a reduction cell, 4 normal cells, a reduction cell, 4 normal cells, the filters doubling at each
reduction (44, 88, 176); ReLU, global average pooling, linear 6 x 176 -> classes. Each cell takes
the previous two cells' outputs (x, prev); `prev` is first fitted to x: a factorised reduction
(ReLU, two conv1x1 with bias on the map and on the map shifted by one pixel, both subsampled by 2,
concatenated, BN) where the resolutions differ, else ReLU - conv1x1 (with bias) - BN where the
widths differ, else as is; the first cell's prev is the stem output itself. x is reduced to the
cell's width by ReLU - conv1x1 - BN (no bias in normal cells, with bias in reduction cells).
Separable branches are two [ReLU - depthwise conv - pointwise conv1x1 (with bias) - BN].
Normal cell (F = filters): concat(prev, sep3(h) + h, sep3(prev) + sep5(h), avg3(h) + h,
2 avg3(prev), sep5(prev) + sep3(prev)) -> 6F. Reduction cell: a = sep7/2(prev) + sep5/2(h),
b = max3/2(h) + sep7/2(prev), c = avg3/2(h) + sep5/2(prev), concat(b, c, max3/2(h) + sep3(a),
avg3(a) + b) -> 4F. (Branch structure, biases and channel order exactly as the repository.)

Deviation: the repository gives every cell all three fitting paths' layers although each cell uses
one, so 887,568 of its 5,126,494 parameters (10 classes) never receive a gradient; only the used
layers are built here: 4,238,926 parameters for 10 classes, the repository's function exactly.
The stem takes the dataset's channels (the repository: 3). PyTorch's default initialisation, as
the repository.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cifarzoo.models.layers import check_positive_ints


def separable(in_ch: int, out_ch: int, kernel: int, stride: int, depthwise_bias: bool) -> nn.Sequential:
    """ReLU - depthwise conv - pointwise conv1x1 (with bias) - BN."""
    return nn.Sequential(nn.ReLU(), nn.Conv2d(in_ch, in_ch, kernel, stride, kernel // 2, groups=in_ch, bias=depthwise_bias),
                         nn.Conv2d(in_ch, out_ch, 1), nn.BatchNorm2d(out_ch))


def sep_branch(channels: int, kernel: int, stride: int = 1, bias: bool = True) -> nn.Sequential:
    """Two separable units; only the first strides, the second's depthwise conv always has a bias."""
    return nn.Sequential(separable(channels, channels, kernel, stride, bias), separable(channels, channels, kernel, 1, True))


def relu_conv_bn(in_ch: int, out_ch: int, bias: bool) -> nn.Sequential:
    return nn.Sequential(nn.ReLU(), nn.Conv2d(in_ch, out_ch, 1, bias=bias), nn.BatchNorm2d(out_ch))


class FactorizedReduce(nn.Module):
    """Halve the resolution without losing pixels: conv1x1 on the even and on the odd pixels."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.even, self.odd = nn.Conv2d(in_ch, out_ch // 2, 1), nn.Conv2d(in_ch, out_ch // 2, 1)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.bn(torch.cat([self.even(x[:, :, ::2, ::2]), self.odd(shifted[:, :, ::2, ::2])], 1))


def fit(prev_ch: int, prev_reduced: bool, filters: int) -> nn.Module:
    if prev_reduced:
        return FactorizedReduce(prev_ch, filters)
    return relu_conv_bn(prev_ch, filters, True) if prev_ch != filters else nn.Identity()


def avg3(stride: int = 1) -> nn.AvgPool2d:
    return nn.AvgPool2d(3, stride, 1)


class NormalCell(nn.Module):
    def __init__(self, x_ch: int, prev_ch: int, prev_reduced: bool, filters: int) -> None:
        super().__init__()
        self.fit = fit(prev_ch, prev_reduced, filters)
        self.reduce = relu_conv_bn(x_ch, filters, False)
        f = filters
        self.sep3_h, self.sep3_prev, self.sep5_h = sep_branch(f, 3, bias=False), sep_branch(f, 3, bias=False), sep_branch(f, 5, bias=False)
        self.sep5_prev, self.sep3_prev_b = sep_branch(f, 5, bias=False), sep_branch(f, 3, bias=False)
        self.avg = avg3()

    def forward(self, x: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        prev, h = self.fit(prev), self.reduce(x)
        return torch.cat([
            prev,
            self.sep3_h(h) + h,
            self.sep3_prev(prev) + self.sep5_h(h),
            self.avg(h) + h,
            self.avg(prev) * 2,
            self.sep5_prev(prev) + self.sep3_prev_b(prev),
        ], 1)


class ReductionCell(nn.Module):
    def __init__(self, x_ch: int, prev_ch: int, prev_reduced: bool, filters: int) -> None:
        super().__init__()
        self.fit = fit(prev_ch, prev_reduced, filters)
        self.reduce = relu_conv_bn(x_ch, filters, True)
        f = filters
        self.sep7_prev_a, self.sep5_h = sep_branch(f, 7, 2), sep_branch(f, 5, 2)
        self.sep7_prev_b, self.sep5_prev = sep_branch(f, 7, 2), sep_branch(f, 5, 2)
        self.sep3_a = sep_branch(f, 3)
        self.max_half, self.avg_half, self.avg = nn.MaxPool2d(3, 2, 1), avg3(2), avg3()

    def forward(self, x: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        prev, h = self.fit(prev), self.reduce(x)
        a = self.sep7_prev_a(prev) + self.sep5_h(h)
        b = self.max_half(h) + self.sep7_prev_b(prev)
        c = self.avg_half(h) + self.sep5_prev(prev)
        return torch.cat([b, c, self.max_half(h) + self.sep3_a(a), self.avg(a) + b], 1)


class NASNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, cells: int = 4, filters: int = 44, reductions: int = 2) -> None:
        super().__init__()
        check_positive_ints(cells=cells, filters=filters, reductions=reductions)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, filters, 3, padding=1, bias=False), nn.BatchNorm2d(filters))
        # (channels, reductions so far) of a cell's two inputs; the first cell's prev is the stem output
        x, prev, width, layers = (filters, 0), (filters, 0), filters, []
        for stage in range(reductions + 1):
            if stage > 0:
                width *= 2
                layers.append(ReductionCell(x[0], prev[0], prev[1] != x[1], width))
                x, prev = (4 * width, x[1] + 1), x
            for _ in range(cells):
                layers.append(NormalCell(x[0], prev[0], prev[1] != x[1], width))
                x, prev = (6 * width, x[1]), x
        self.cells = nn.ModuleList(layers)
        self.fc = nn.Linear(x[0], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = prev = self.stem(x)
        for cell in self.cells:
            x, prev = cell(x, prev), x
        return self.fc(F.relu(x).mean((2, 3)))
