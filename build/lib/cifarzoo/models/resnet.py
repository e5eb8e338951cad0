"""ResNet for CIFAR (He et al. 2015, "Deep Residual Learning for Image Recognition",
arXiv:1512.03385, section 4.2), the post-activation network:

    stem conv3x3(16)-BN-ReLU, three stages of n blocks at widths (16, 32, 64) x `base_channels`/16
    (stride 2 at the first block of stages 2 and 3), global average pooling, FC.
    basic block:      conv3x3-BN-ReLU, conv3x3-BN, (+ shortcut), ReLU            depth = 6n+2
    bottleneck block: conv1x1-BN-ReLU, conv3x3-BN-ReLU (stride here), conv1x1(x4)-BN,
                      (+ shortcut), ReLU                                         depth = 9n+2

Shortcuts where the shape changes (`shortcut`):
- A: parameter-free identity, subsampled with stride 2 and zero-padded with the new channels
  (the paper's CIFAR option A). The zero channels are appended after the input's channels.
- B: 1x1 conv (stride 2 where the stage downsamples) + BN, as in hysts' code (the default).

Deviations / notes:
- The paper's CIFAR networks are basic-block only; the bottleneck stages output
  (64, 128, 256) = (16, 32, 64) x 4 channels, as in He et al. 2016's CIFAR bottleneck
  networks and `resnet_preact.py`. hysts' code keeps the first bottleneck stage at 16 output
  channels (a 4-channel bottleneck); we do not.
- `activation` / `norm` (not in the paper; the architecture-study seed varies them) replace
  every ReLU / every BN, including the shortcut's BN. Defaults relu / batch are the paper's.
- Works on any input size (adaptive average pooling before the FC).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cifarzoo.errors import is_int, require
from cifarzoo.models.init import init_weights
from cifarzoo.models.layers import check_activation, check_norm
from cifarzoo.models.resnet_preact import Activation, Norm


class ZeroPadShortcut(nn.Module):
    """Option A: x[:, :, ::s, ::s] with (out - in) zero channels appended."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.extra, self.stride = out_ch - in_ch, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra)) if self.extra else x


def make_shortcut(kind: str, in_ch: int, out_ch: int, stride: int, norm: Norm) -> nn.Module:
    if in_ch == out_ch and stride == 1:
        return nn.Identity()
    if kind == "A":
        return ZeroPadShortcut(in_ch, out_ch, stride)
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, 0, bias=False), norm(out_ch))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU, conv3x3-BN, + shortcut, ReLU."""

    expansion = 1

    def __init__(self, in_ch: int, out_ch: int, stride: int, shortcut: str, norm: Norm, act: Activation) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1, self.act1 = norm(out_ch), act()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = norm(out_ch)
        self.shortcut = make_shortcut(shortcut, in_ch, out_ch, stride, norm)
        self.act_out = act()

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act_out(self.residual(x) + self.shortcut(x))


class Bottleneck(BasicBlock):
    """conv1x1-BN-ReLU, conv3x3-BN-ReLU (stride here), conv1x1 (x4 channels)-BN, + shortcut, ReLU."""

    expansion = 4

    def __init__(self, in_ch: int, out_ch: int, stride: int, shortcut: str, norm: Norm, act: Activation) -> None:
        nn.Module.__init__(self)
        mid = out_ch // self.expansion
        self.conv1 = nn.Conv2d(in_ch, mid, 1, 1, 0, bias=False)
        self.bn1, self.act1 = norm(mid), act()
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
        self.bn2, self.act2 = norm(mid), act()
        self.conv3 = nn.Conv2d(mid, out_ch, 1, 1, 0, bias=False)
        self.bn3 = norm(out_ch)
        self.shortcut = make_shortcut(shortcut, in_ch, out_ch, stride, norm)
        self.act_out = act()

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv1(x)))
        y = self.act2(self.bn2(self.conv2(y)))
        return self.bn3(self.conv3(y))


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}
SHORTCUTS = ("A", "B")


class ResNet(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        depth: int = 20,
        block: str = "basic",
        shortcut: str = "B",
        base_channels: int = 16,
        activation: str = "relu",
        norm: str = "batch",
    ) -> None:
        super().__init__()
        require(block in BLOCKS, "model.block", "must be basic or bottleneck", block)
        unit = BLOCKS[block]
        per_stage = 2 if block == "basic" else 3
        require(
            is_int(depth) and depth >= 3 * per_stage + 2
            and (depth - 2) % (3 * per_stage) == 0,
            "model.depth",
            f"ResNet with {block} blocks needs depth = {3 * per_stage}n+2, n >= 1",
            depth,
        )
        require(shortcut in SHORTCUTS, "model.shortcut", "must be A (zero-pad identity) or B (1x1 conv + BN)", shortcut)
        require(is_int(base_channels) and base_channels >= 1,
                "model.base_channels", "must be an int >= 1", base_channels)
        norm_layer, act = check_norm(norm), check_activation(activation)
        n = (depth - 2) // (3 * per_stage)

        self.conv = nn.Conv2d(in_channels, base_channels, 3, 1, 1, bias=False)
        self.bn, self.act = norm_layer(base_channels), act()
        stages, in_ch = [], base_channels
        for i, stride in enumerate((1, 2, 2)):
            out_ch = base_channels * (2**i) * unit.expansion
            blocks = [unit(in_ch, out_ch, stride, shortcut, norm_layer, act)]
            blocks += [unit(out_ch, out_ch, 1, shortcut, norm_layer, act) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            in_ch = out_ch
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(in_ch, num_classes)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.act(self.bn(self.conv(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
