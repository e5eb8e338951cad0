"""MobileNet (Howard et al. 2017, "MobileNets: Efficient Convolutional Neural Networks for Mobile
Vision Applications", arXiv:1704.04861) as pytorch-cifar-tricks (pprp, model/mobilenet.py at
7bf6ee9, = kuangliu's pytorch-cifar) trained it at 32x32: 3,217,226 parameters for 10 classes
(the reference's count).

Structure: a 3x3 stem conv of 32 channels (stride 1) -> BN -> ReLU; the paper's 13 depthwise
separable blocks (depthwise conv3x3 -> BN -> ReLU -> conv1x1 -> BN -> ReLU) to 64, 128/2, 128,
256/2, 256, 512/2, 5 x 512, 1024/2, 1024 channels (/2: stride 2); global average pool; linear.
Convs have no bias. `width_multiplier` is the paper's alpha: every width x alpha (rounded down).

Deviation from the paper, as the reference: the CIFAR stem (stride 1 instead of 2). The pool is
global (the reference's 2x2 average pool is global at 32x32). Init: PyTorch's default, as the
reference.
"""

from __future__ import annotations

import torch
from torch import nn

from cifarzoo.errors import is_number, require

STEM_WIDTH = 32
# (output width, stride) of the 13 depthwise separable blocks (the paper's Table 1).
BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1),
          (512, 1), (1024, 2), (1024, 1)]


def separable_block(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, in_ch, 3, stride, 1, groups=in_ch, bias=False), nn.BatchNorm2d(in_ch), nn.ReLU(),
        nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(),
    )


class MobileNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, width_multiplier: float = 1.0) -> None:
        super().__init__()
        require(is_number(width_multiplier) and 0 < width_multiplier and int(STEM_WIDTH * width_multiplier) >= 1,
                "model.width_multiplier", f"must be >= 1/{STEM_WIDTH} (alpha x 32 stem channels)", width_multiplier)
        in_ch = int(STEM_WIDTH * width_multiplier)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, in_ch, 3, 1, 1, bias=False), nn.BatchNorm2d(in_ch), nn.ReLU()]
        for width, stride in BLOCKS:
            out_ch = int(width * width_multiplier)
            layers.append(separable_block(in_ch, out_ch, stride))
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1))
