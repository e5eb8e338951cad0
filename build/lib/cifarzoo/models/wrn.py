"""Wide Residual Networks (Zagoruyko & Komodakis 2016, arXiv:1605.07146), WRN-d-k for CIFAR,
as in the authors' code (models/wide-resnet.lua) and hysts' pytorch_image_classification:

    stem conv3x3(16), three stages of n = (d-4)/6 blocks with widths (16k, 32k, 64k)
    (stride 2 at the first block of stages 2 and 3), BN-ReLU, global average pooling, FC.
    block: BN-ReLU-conv3x3 (stride), BN-ReLU-dropout-conv3x3, + shortcut   (pre-activation)
    Where the width changes, the shortcut is a 1x1 conv (no BN) and it takes the block's first
    BN-ReLU output, as in the authors' code; otherwise it is the identity on the block input.

Notes / deviations:
- Dropout (`drop_rate`, the paper uses 0.3 for its dropout results) sits between the two
  convolutions after the second BN-ReLU, as in the paper and the authors' code; hysts' code
  applies it before that BN-ReLU (right after the first conv).
- `activation` / `norm` (not in the paper; the architecture-study seed varies them) replace
  every ReLU / every BN. Defaults relu / batch are the paper's network.
- `base_channels` (16) scales the stem and all stage widths, as hysts' `initial_channels`.
- Works on any input size (adaptive average pooling before the FC).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cifarzoo.errors import is_int, is_number, require
from cifarzoo.models.init import init_weights
from cifarzoo.models.layers import check_activation, check_norm
from cifarzoo.models.resnet_preact import Activation, Norm


class WideBlock(nn.Module):
    """BN-ReLU-conv3x3, BN-ReLU-dropout-conv3x3, + identity or 1x1-conv shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, drop_rate: float, norm: Norm, act: Activation) -> None:
        super().__init__()
        self.project = in_ch != out_ch or stride != 1
        self.bn1, self.act1 = norm(in_ch), act()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn2, self.act2 = norm(out_ch), act()
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride, 0, bias=False) if self.project else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(x))
        if self.project:  # the projection shares the block's pre-activation
            x = y
        y = self.conv2(self.dropout(self.act2(self.bn2(self.conv1(y)))))
        return y + self.shortcut(x)


class WRN(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        depth: int = 28,
        widen: int = 10,
        drop_rate: float = 0.0,
        base_channels: int = 16,
        activation: str = "relu",
        norm: str = "batch",
    ) -> None:
        super().__init__()
        require(is_int(depth) and depth >= 10 and (depth - 4) % 6 == 0,
                "model.depth", "WRN needs depth = 6n+4, n >= 1", depth)
        require(is_int(widen) and widen >= 1,
                "model.widen", "must be an int >= 1", widen)
        require(is_number(drop_rate) and 0 <= drop_rate < 1,
                "model.drop_rate", "must be a probability in [0, 1)", drop_rate)
        require(is_int(base_channels) and base_channels >= 1,
                "model.base_channels", "must be an int >= 1", base_channels)
        norm_layer, act = check_norm(norm), check_activation(activation)
        n = (depth - 4) // 6

        self.conv = nn.Conv2d(in_channels, base_channels, 3, 1, 1, bias=False)
        stages, in_ch = [], base_channels
        for i, stride in enumerate((1, 2, 2)):
            out_ch = base_channels * widen * 2**i
            blocks = [WideBlock(in_ch, out_ch, stride, float(drop_rate), norm_layer, act)]
            blocks += [WideBlock(out_ch, out_ch, 1, float(drop_rate), norm_layer, act) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            in_ch = out_ch
        self.stages = nn.Sequential(*stages)
        self.bn, self.act = norm_layer(in_ch), act()
        self.fc = nn.Linear(in_ch, num_classes)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.stages(self.conv(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
