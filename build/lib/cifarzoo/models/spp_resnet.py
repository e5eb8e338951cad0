"""The pytorch-cifar-tricks seed's SPP attention networks (its table 3.10 "测试注意力机制":
spp_d11/d20/d29 x pN/pA/pB/pC/pD; pprp/pytorch-cifar-tricks `lib/models/spp_depth/spp_resnet.py`,
`SPPResNeXt` and its factories; the SPP module from `poolings.py`, YOLOv5's spatial pyramid pooling).

Network (`SPPResNeXt`): a CIFAR ResNeXt with cardinality 16 and group width 8 in the first stage
("16x8d", `resnext.py`): conv3x3 64 - BN - ReLU, 3 stages of (depth - 2) / 9 post-activation
bottlenecks (depth 11, 20, 29: 1, 2, 3 blocks) with 256/512/1024 outputs and group widths
8/16/32, global average pooling, linear. Init as the repository: He normal (fan-in) convs, BN 1 /
0, PyTorch's default linear.

`pooling` names the pyramid of the SPP module the repository meant for every block: N none,
A [3], B [5], C [7], D [3, 5, 7] (max-pool kernels, stride 1, same padding). The SPP module
(`spp: true`) acts on the block's residual branch after its last BN, before the addition:
conv1x1 C -> C/2 - BN - SiLU, concatenated with the max-pools of that, conv1x1 -> C - BN - SiLU.

`spp: false` (the default) is what the repository ran: every `spp_dXX_pY` factory calls
`build_spp_models(..., spp=False, kernel_list=...)`, so no SPP module is built and the pooling
has no effect; the 15 rows of table 3.10 are three networks (plain ResNeXt-11/20/29 16x8d), as its
weight column (7.36 / 13.4 / 19.4 MB for every pooling of a depth) shows. Their parameter counts
for 10 classes: 1,912,138 / 3,489,098 / 5,066,058, the repository's factories' (measured; with
`spp: true`: pN 3,293,770 / 6,252,362 / 9,210,954, pA-pC 3,981,898 / 7,628,618 / 11,275,338, pD
5,358,154 / 10,381,130 / 15,404,106, as the repository's `build_spp_models(spp=True)`).
`spp: true` builds the network the names describe (the repository's `build_spp_models(spp=True)`).

Deviations: the first conv takes the dataset's channels (the repository: 3); pooling is global
average (the repository's fixed 8x8, the same at 32x32) so 28x28 inputs work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cifarzoo.errors import require
from cifarzoo.models.layers import check_positive_ints
from cifarzoo.models.resnext import STEM_CHANNELS, ResNeXtBranch, check_resnext_depth, projection_shortcut, stage_widths

POOLINGS = {"N": (), "A": (3,), "B": (5,), "C": (7,), "D": (3, 5, 7)}  # the repository's table of kernel lists


def _he_normal_fan_in(module: nn.Module) -> None:
    """The repository's init: kaiming_normal_ (fan-in) convs; BN and linear keep PyTorch's defaults."""
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight)


def conv_bn_silu(in_ch: int, out_ch: int) -> nn.Sequential:
    """YOLOv5's `Conv` at kernel 1: conv1x1 (no bias) - BN - SiLU."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch), nn.SiLU())


class SPP(nn.Module):
    """Spatial pyramid pooling (YOLOv5): reduce to C/2, concatenate max-pools of `kernels`, back to C."""

    def __init__(self, channels: int, kernels: tuple[int, ...]) -> None:
        super().__init__()
        hidden = channels // 2
        self.reduce = conv_bn_silu(channels, hidden)
        self.pools = nn.ModuleList(nn.MaxPool2d(k, stride=1, padding=k // 2) for k in kernels)
        self.expand = conv_bn_silu(hidden * (len(kernels) + 1), channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        return self.expand(torch.cat([x, *(pool(x) for pool in self.pools)], 1))


class SPPBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, group_width: int, cardinality: int,
                 kernels: tuple[int, ...] | None) -> None:
        super().__init__()
        branch = ResNeXtBranch(in_ch, out_ch, stride, group_width, cardinality)
        self.residual = branch if kernels is None else nn.Sequential(branch, SPP(out_ch, kernels))
        self.shortcut = projection_shortcut(in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.residual(x) + self.shortcut(x))


class SPPResNeXt(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, depth: int = 11, pooling: str = "N", spp: bool = False,
                 cardinality: int = 16, base_channels: int = 8) -> None:
        super().__init__()
        n = check_resnext_depth(depth)
        require(pooling in POOLINGS, "model.pooling", f"must be one of {', '.join(POOLINGS)}", pooling)
        require(isinstance(spp, bool), "model.spp", "must be true or false", spp)
        check_positive_ints(cardinality=cardinality, base_channels=base_channels)
        kernels = POOLINGS[pooling] if spp else None
        self.stem = nn.Sequential(nn.Conv2d(in_channels, STEM_CHANNELS, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(STEM_CHANNELS), nn.ReLU(inplace=True))
        widths = stage_widths(base_channels)
        inputs = [STEM_CHANNELS, *(out_ch for _, _, out_ch in widths[:-1])]
        self.stages = nn.Sequential(*(
            nn.Sequential(*(SPPBlock(in_ch if i == 0 else out_ch, out_ch, stride if i == 0 else 1, group_width,
                                     cardinality, kernels) for i in range(n)))
            for in_ch, (stride, group_width, out_ch) in zip(inputs, widths)))
        self.fc = nn.Linear(widths[-1][2], num_classes)
        self.apply(_he_normal_fan_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.stages(self.stem(x)).mean((2, 3)))
