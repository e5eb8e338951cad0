"""Pre-activation ResNet for CIFAR (He et al. 2016, "Identity Mappings in Deep Residual
Networks", arXiv:1603.05027), with the ablation flags of hysts' pytorch_image_classification:

- `remove_first_relu` / `add_last_bn`: the PyramidNet-style unit (Han et al. 2017) studied in
  the seeds' ResNet-preact-56 experiment.
- `preact_stage[i]`: whether the first block of stage i takes its shortcut after the
  block's BN-ReLU ("preactivate shortcut after downsampling"); later blocks never do.
- `activation` / `norm` (not in the paper; the architecture-study seed varies them): replace
  every ReLU / every BatchNorm of the network (see `cifarzoo.models.layers`). The defaults
  relu / batch are the paper's network, parameter for parameter.

Widths follow the paper: stage outputs are (16, 32, 64) x `widen` x expansion, so the
bottleneck stages output (64, 128, 256) as in the paper's ResNet-164. (hysts' code keeps the
first bottleneck stage at 16 output channels; we follow the paper's parameter count.)

Subclasses change the blocks through `make_block` (the SE variant in `se_resnet_preact.py`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from cifarzoo.errors import require
from cifarzoo.models.init import init_weights
from cifarzoo.models.layers import check_activation, check_norm

Norm = Callable[[int], nn.Module]
Activation = Callable[[], nn.Module]


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3, BN-ReLU-conv3x3."""

    expansion = 1

    def __init__(self, in_ch: int, out_ch: int, stride: int, remove_first_relu: bool, add_last_bn: bool,
                 preact_shortcut: bool, norm: Norm = nn.BatchNorm2d, act: Activation = nn.ReLU) -> None:
        super().__init__()
        self.preact_shortcut, self.remove_first_relu = preact_shortcut, remove_first_relu
        self.bn1, self.act1 = norm(in_ch), act()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn2, self.act2 = norm(out_ch), act()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.last_bn = norm(out_ch) if add_last_bn else nn.Identity()
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride, 0, bias=False) if in_ch != out_ch else nn.Identity()

    def residual(self, y: torch.Tensor) -> torch.Tensor:
        y = self.conv1(y)
        y = self.conv2(self.act2(self.bn2(y)))
        return self.last_bn(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preact_shortcut:
            x = self.act1(self.bn1(x))
            return self.residual(x) + self.shortcut(x)
        y = self.bn1(x)
        if not self.remove_first_relu:
            y = self.act1(y)
        return self.residual(y) + self.shortcut(x)


class PreActBottleneck(PreActBlock):
    """BN-ReLU-conv1x1, BN-ReLU-conv3x3 (stride here), BN-ReLU-conv1x1 (x4 channels)."""

    expansion = 4

    def __init__(self, in_ch: int, out_ch: int, stride: int, remove_first_relu: bool, add_last_bn: bool,
                 preact_shortcut: bool, norm: Norm = nn.BatchNorm2d, act: Activation = nn.ReLU) -> None:
        nn.Module.__init__(self)
        mid = out_ch // self.expansion
        self.preact_shortcut, self.remove_first_relu = preact_shortcut, remove_first_relu
        self.bn1, self.act1 = norm(in_ch), act()
        self.conv1 = nn.Conv2d(in_ch, mid, 1, 1, 0, bias=False)
        self.bn2, self.act2 = norm(mid), act()
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
        self.bn3, self.act3 = norm(mid), act()
        self.conv3 = nn.Conv2d(mid, out_ch, 1, 1, 0, bias=False)
        self.last_bn = norm(out_ch) if add_last_bn else nn.Identity()
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride, 0, bias=False) if in_ch != out_ch else nn.Identity()

    def residual(self, y: torch.Tensor) -> torch.Tensor:
        y = self.conv1(y)
        y = self.conv2(self.act2(self.bn2(y)))
        y = self.conv3(self.act3(self.bn3(y)))
        return self.last_bn(y)


BLOCKS = {"basic": PreActBlock, "bottleneck": PreActBottleneck}


class ResNetPreAct(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        depth: int = 20,
        block: str = "basic",
        base_channels: int = 16,
        widen: int = 1,
        remove_first_relu: bool = False,
        add_last_bn: bool = False,
        preact_stage: tuple[bool, bool, bool] = (True, True, True),
        activation: str = "relu",
        norm: str = "batch",
    ) -> None:
        super().__init__()
        require(block in BLOCKS, "model.block", "must be basic or bottleneck", block)
        unit = BLOCKS[block]
        layers_per_block = 2 if block == "basic" else 3
        n = (depth - 2) // (3 * layers_per_block)
        require(
            isinstance(depth, int) and n >= 1 and n * 3 * layers_per_block + 2 == depth,
            "model.depth",
            f"ResNet-preact with {block} blocks needs depth = {3 * layers_per_block}n+2, n >= 1",
            depth,
        )
        require(isinstance(base_channels, int) and base_channels >= 1, "model.base_channels", "must be an int >= 1",
                base_channels)
        require(isinstance(widen, int) and widen >= 1, "model.widen", "must be an int >= 1", widen)
        require(len(preact_stage) == 3, "model.preact_stage", "must list 3 booleans, one per stage", list(preact_stage))
        norm_layer, act = check_norm(norm), check_activation(activation)

        stem = base_channels * widen
        self.conv = nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False)
        stages, in_ch = [], stem
        for i, stride in enumerate((1, 2, 2)):
            out_ch = stem * (2**i) * unit.expansion
            opts = dict(remove_first_relu=remove_first_relu, add_last_bn=add_last_bn, norm=norm_layer, act=act)
            blocks = [self.make_block(block, in_ch, out_ch, stride, preact_shortcut=bool(preact_stage[i]), **opts)]
            blocks += [self.make_block(block, out_ch, out_ch, 1, preact_shortcut=False, **opts) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            in_ch = out_ch
        self.stages = nn.Sequential(*stages)
        self.bn, self.act = norm_layer(in_ch), act()
        self.fc = nn.Linear(in_ch, num_classes)
        self.apply(init_weights)

    def make_block(self, block: str, in_ch: int, out_ch: int, stride: int, **options: object) -> nn.Module:
        """One residual unit; `options` are the block constructor's keyword arguments."""
        return BLOCKS[block](in_ch, out_ch, stride, **options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.conv(x))
        x = self.act(self.bn(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))
