"""ResNet in ResNet (Targ, Almeida & Lyman 2016, "Resnet in Resnet: Generalizing Residual
Architectures", arXiv:1603.08029) as the pytorch-cifar-tricks seed trained it at 32x32
(pprp/pytorch-cifar-tricks `model/rir.py`, "rir"; a port of weiaicunzai/pytorch-cifar100).

Generalized residual block (`GeneralizedResidual`): two parallel streams, residual r and
transient t, each a conv3x3 (with bias) of both streams summed - the residual stream also adds
its shortcut (identity, or a conv1x1 with bias where the shape changes) - then BN - ReLU per
stream. Network: conv3x3 - BN - ReLU per stream (`width` = 48 channels), 8 RiR blocks of 2
generalized blocks each, widths 48, 48, 96 (stride 2), 96, 96, 192 (stride 2), 192, 192; the two
streams concatenated (384 channels at 8x8), conv3x3 stride 2 unpadded to 100 channels - BN -
ReLU (3x3 = 900 features), linear 900 -> 450 - ReLU - dropout 0.5 - linear 450 -> classes.
Init as the repository: He normal (fan-in) convs with bias 0.01.

The repository is broken for 10 classes (the table's CIFAR-10 run): at 1f2a1e8 its conv to
`num_classes` channels feeds a 900-input linear (a shape error); 9c99830 widened that conv to
`num_classes * 10` = 100 channels but left the last linear at a hard-coded 100 outputs, so its
CIFAR-10 model (10,293,634 parameters) has 100 logits. Built here: the evident intent, the
100-channel conv that gives the 900 features the classifier was made for and a last linear to
`num_classes`: 10,253,044 parameters for 10 classes (the repository's minus 450x90 + 90 unused
logits' weights). The first convs take the dataset's channels (the repository: 3).
"""

from __future__ import annotations

import torch
from torch import nn

from cifarzoo.models.layers import check_positive_ints

HEAD_CHANNELS = 100  # the conv before the classifier; 100 x 3 x 3 = the classifier's 900 inputs


def conv_bn_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class GeneralizedResidual(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.r_to_r, self.r_to_t, self.t_to_t, self.t_to_r = (
            nn.Conv2d(in_ch, out_ch, 3, stride, 1) for _ in range(4))
        self.shortcut = nn.Identity() if in_ch == out_ch and stride == 1 else nn.Conv2d(in_ch, out_ch, 1, stride)
        self.bn_relu_r = nn.Sequential(nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))
        self.bn_relu_t = nn.Sequential(nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))

    def forward(self, streams: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        r, t = streams
        return (self.bn_relu_r(self.r_to_r(r) + self.t_to_r(t) + self.shortcut(r)),
                self.bn_relu_t(self.r_to_t(r) + self.t_to_t(t)))


class RiR(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, width: int = 48, layers_per_block: int = 2,
                 drop_rate: float = 0.5) -> None:
        super().__init__()
        check_positive_ints(width=width, layers_per_block=layers_per_block)
        self.stem_r, self.stem_t = conv_bn_relu(in_channels, width), conv_bn_relu(in_channels, width)
        blocks, in_ch = [], width
        for mult, stride in ((1, 1), (1, 1), (2, 2), (2, 1), (2, 1), (4, 2), (4, 1), (4, 1)):
            for i in range(layers_per_block):
                blocks.append(GeneralizedResidual(in_ch, width * mult, stride if i == 0 else 1))
                in_ch = width * mult
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Conv2d(2 * in_ch, HEAD_CHANNELS, 3, 2), nn.BatchNorm2d(HEAD_CHANNELS),
                                  nn.ReLU(inplace=True), nn.Flatten())
        self.classifier = nn.Sequential(nn.Linear(HEAD_CHANNELS * 9, 450), nn.ReLU(inplace=True),
                                        nn.Dropout(drop_rate), nn.Linear(450, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
                nn.init.constant_(m.bias, 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, t = self.blocks((self.stem_r(x), self.stem_t(x)))
        return self.classifier(self.head(torch.cat([r, t], 1)))
