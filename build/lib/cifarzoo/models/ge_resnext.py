"""Gather-Excite ResNeXt (Hu et al. 2018, "Gather-Excite: Exploiting Feature Context in
Convolutional Neural Networks", arXiv:1810.12348) as the pytorch-cifar-tricks seed trained it at
32x32 (pprp/pytorch-cifar-tricks `model/genet.py` at 7bf6ee9, "ge_resnext29_8x64d"; from
BIGBALLON/CIFAR-ZOO).

Network: ResNeXt-29 8x64d for CIFAR (`resnext.py`: conv3x3 64 - BN - ReLU, 3 stages of (depth-2)/9
post-activation bottlenecks with 256/512/1024 outputs, global average pooling, linear) with a
GE-theta module on every block's residual branch before the addition: gather = a depthwise conv
whose kernel covers the whole feature map of the stage at `image_size` (32, 16, 8; no bias) - BN,
giving one value per channel; excite = conv1x1 C -> C/16 - ReLU - conv1x1 C/16 -> C (no bias) -
sigmoid, multiplying the branch. Init as the repository: He normal (fan-in) convs, BN 1 / 0.
36,329,802 parameters for 10 classes, exactly the repository's.

Deviations: the first conv takes the dataset's channels (the repository: 3). Inputs smaller than
`image_size` (28x28 MNIST-family images: stage maps 28/14/7) are zero-padded, centred, to the
gather kernel's extent before the gather (equivalent to a kernel cropped to the map); larger maps
are an error. Pooling is adaptive where the repository's is a fixed 8x8 (the same at 32x32).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cifarzoo.models.layers import check_positive_ints
from cifarzoo.models.resnext import STEM_CHANNELS, ResNeXtBranch, check_resnext_depth, projection_shortcut, stage_widths


class GatherExcite(nn.Module):
    def __init__(self, channels: int, extent: int, reduction: int) -> None:
        super().__init__()
        self.extent = extent
        self.gather = nn.Sequential(nn.Conv2d(channels, channels, extent, groups=channels, bias=False),
                                    nn.BatchNorm2d(channels))
        self.excite = nn.Sequential(nn.Conv2d(channels, channels // reduction, 1, bias=False), nn.ReLU(inplace=True),
                                    nn.Conv2d(channels // reduction, channels, 1, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if (h, w) != (self.extent, self.extent):
            if h > self.extent or w > self.extent:
                raise ValueError(f"GE-ResNeXt: a {h}x{w} feature map exceeds the gather extent {self.extent}; "
                                 "set model.image_size to the input size")
            dh, dw = self.extent - h, self.extent - w
            x_pad = F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))
            return x * self.excite(self.gather(x_pad))
        return x * self.excite(self.gather(x))


class GEBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, group_width: int, cardinality: int, extent: int,
                 reduction: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(ResNeXtBranch(in_ch, out_ch, stride, group_width, cardinality),
                                      GatherExcite(out_ch, extent, reduction))
        self.shortcut = projection_shortcut(in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.residual(x) + self.shortcut(x))


class GEResNeXt(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, depth: int = 29, cardinality: int = 8,
                 base_channels: int = 64, reduction: int = 16, image_size: int = 32) -> None:
        super().__init__()
        n = check_resnext_depth(depth)
        check_positive_ints(cardinality=cardinality, base_channels=base_channels, reduction=reduction,
                            image_size=image_size)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, STEM_CHANNELS, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(STEM_CHANNELS), nn.ReLU(inplace=True))
        stages, in_ch, extent = [], STEM_CHANNELS, image_size
        for stride, group_width, out_ch in stage_widths(base_channels):
            extent = (extent + stride - 1) // stride
            stages.append(nn.Sequential(*[
                GEBlock(in_ch if i == 0 else out_ch, out_ch, stride if i == 0 else 1, group_width, cardinality,
                        extent, reduction) for i in range(n)]))
            in_ch = out_ch
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(in_ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.stages(self.stem(x)).mean((2, 3)))
