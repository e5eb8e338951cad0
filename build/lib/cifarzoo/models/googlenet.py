"""GoogLeNet (Szegedy et al. 2015, "Going Deeper with Convolutions", arXiv:1409.4842) as
pytorch-cifar-tricks (pprp, model/googlenet.py at 7bf6ee9, = kuangliu's pytorch-cifar) trained it
at 32x32: 6,166,250 parameters for 10 classes (the reference's count).

Structure: a 3x3 stem conv of 192 channels (stride 1) -> BN -> ReLU; inception 3a, 3b; 3x3/2
max-pool; 4a-4e; 3x3/2 max-pool; 5a, 5b; global average pool; linear. The inception modules have
the paper's widths (its Table 1) and four branches, concatenated: conv1x1; conv1x1 -> conv3x3;
conv1x1 -> conv3x3 -> conv3x3 (the paper's 5x5, as two 3x3 convs of its width); 3x3/1 max-pool ->
conv1x1. Every conv has a bias and is followed by BN -> ReLU.

Deviations from the paper, as the reference: BN after every conv, the 5x5 conv as two 3x3 convs,
the CIFAR stem (one 3x3 conv instead of the 7x7/2 conv, pools and 1x1/3x3 convs) and no max-pool
before 3a, no dropout and no auxiliary classifiers. The pool is global (the reference's 8x8
average pool is global at 32x32). `widen` scales every width (not in the reference: small test
models; the reference is widen 1). Init: PyTorch's default, as the reference.
"""

from __future__ import annotations

import torch
from torch import nn

from cifarzoo.errors import is_number, require

STEM_WIDTH = 192
# The paper's Table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj; "pool" = 3x3/2 max-pool.
INCEPTIONS: list[tuple[int, int, int, int, int, int] | str] = [
    (64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64), "pool",                          # 3a, 3b
    (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),    # 4a-4c
    (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128), "pool",                      # 4d, 4e
    (256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128),                           # 5a, 5b
]


def conv_bn_relu(in_ch: int, out_ch: int, kernel_size: int) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2), nn.BatchNorm2d(out_ch), nn.ReLU()]


class Inception(nn.Module):
    def __init__(self, in_ch: int, n1x1: int, n3x3_reduce: int, n3x3: int, n5x5_reduce: int, n5x5: int,
                 pool_proj: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList([
            nn.Sequential(*conv_bn_relu(in_ch, n1x1, 1)),
            nn.Sequential(*conv_bn_relu(in_ch, n3x3_reduce, 1), *conv_bn_relu(n3x3_reduce, n3x3, 3)),
            nn.Sequential(*conv_bn_relu(in_ch, n5x5_reduce, 1), *conv_bn_relu(n5x5_reduce, n5x5, 3),
                          *conv_bn_relu(n5x5, n5x5, 3)),
            nn.Sequential(nn.MaxPool2d(3, 1, 1), *conv_bn_relu(in_ch, pool_proj, 1)),
        ])
        self.out_channels = n1x1 + n3x3 + n5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], 1)


class GoogLeNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, widen: float = 1) -> None:
        super().__init__()
        require(is_number(widen) and widen > 0, "model.widen", "must be > 0", widen)

        def scaled(width: int) -> int:
            return max(1, round(width * widen))

        layers = conv_bn_relu(in_channels, scaled(STEM_WIDTH), 3)
        channels = scaled(STEM_WIDTH)
        for spec in INCEPTIONS:
            if spec == "pool":
                layers.append(nn.MaxPool2d(3, 2, 1))
                continue
            inception = Inception(channels, *(scaled(w) for w in spec))
            layers.append(inception)
            channels = inception.out_channels
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1))
