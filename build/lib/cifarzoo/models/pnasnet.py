"""PNASNet (Liu et al. 2018, "Progressive Neural Architecture Search", arXiv:1712.00559) as
pytorch-cifar-tricks (pprp, model/pnasnet.py at 7bf6ee9, = kuangliu's pytorch-cifar) trained it:
its "pnasnet" is PNASNetB, 451,626 parameters for 10 classes (the reference's count).

Structure: a 3x3 stem conv of F = `num_filters` channels -> BN -> ReLU; N = `num_cells` cells at
F; a reduction cell (stride 2) to 2F; N cells at 2F; a reduction cell to 4F; N cells at 4F;
global average pool; linear. The cell (the reference's cell B, a reduced form of the paper's
PNASNet-5 cell): branch 1 = ReLU(sep7x7(x) + sep3x3(x)); branch 2 = ReLU(maxpool3x3(x) +
sep5x5(x)), the pool followed by conv1x1 -> BN in reduction cells; their concatenation ->
conv1x1 (back to the cell's width) -> BN -> ReLU. A "sep" conv is, as in the reference, one
depthwise conv (groups = input width, stride of the cell) -> BN.

Deviations from the paper, as the reference: the reference's cell, which is not the paper's
five-block cell (its separable convs have no pointwise conv, cells take only the previous
cell's output), and a single 3x3 stem conv. The pool is global (the reference's 8x8 average
pool is global at 32x32). Init: PyTorch's default, as the reference.
"""

from __future__ import annotations

import torch
from torch import nn

from cifarzoo.errors import is_int, require


def sep_conv(in_ch: int, out_ch: int, kernel_size: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel_size, stride, kernel_size // 2, groups=in_ch, bias=False),
                         nn.BatchNorm2d(out_ch))


class Cell(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.sep7, self.sep3, self.sep5 = (sep_conv(in_ch, out_ch, k, stride) for k in (7, 3, 5))
        self.pool = nn.MaxPool2d(3, stride, 1)
        self.pool_proj: nn.Module = nn.Identity()
        if stride == 2:
            self.pool_proj = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch))
        self.combine = nn.Sequential(nn.Conv2d(2 * out_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = torch.relu(self.sep7(x) + self.sep3(x))
        b2 = torch.relu(self.pool_proj(self.pool(x)) + self.sep5(x))
        return self.combine(torch.cat([b1, b2], 1))


class PNASNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, num_cells: int = 6, num_filters: int = 32) -> None:
        super().__init__()
        for key, value in (("num_cells", num_cells), ("num_filters", num_filters)):
            require(is_int(value) and value >= 1, f"model.{key}", "must be an int >= 1", value)
        f = num_filters
        layers: list[nn.Module] = [nn.Conv2d(in_channels, f, 3, 1, 1, bias=False), nn.BatchNorm2d(f), nn.ReLU()]
        for i, width in enumerate((f, 2 * f, 4 * f)):
            if i > 0:
                layers.append(Cell(width // 2, width, stride=2))
            layers += [Cell(width, width, stride=1) for _ in range(num_cells)]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(4 * f, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1))
