"""DLA (Yu et al. 2018, "Deep Layer Aggregation", arXiv:1707.06484) as pytorch-cifar-tricks
(pprp, model/dla.py at 7bf6ee9, = kuangliu's pytorch-cifar) trained it at 32x32: DLA-34's
`levels` (1, 1, 1, 2, 2, 1) and `channels` (16, 32, 64, 128, 256, 512), 16,291,386 parameters
for 10 classes (the reference's count).

Structure: base conv3x3 (channels[0]) -> BN -> ReLU; level 0: levels[0] conv3x3-BN-ReLU at
channels[0]; level 1: levels[1] of them to channels[1]; levels 2-5: aggregation trees of depth
levels[i] to channels[i], strides (1, 2, 2, 2); global average pool; linear. A tree of depth 1 is
two basic residual blocks (`resnet_imagenet_style.BasicBlock`, the first with the stride) whose
outputs a root (conv1x1 -> BN -> ReLU over their concatenation) aggregates. A tree of depth L > 1
aggregates, in one root, a basic block of its input (the stride's "previous root"), the outputs of
its subtrees of depth L-1, ..., 1 applied one after another, and two basic blocks after them.

Deviations from the paper, as the reference: these simplified trees (the reference's own; the
paper's trees recurse on two subtrees and have residual roots), a 3x3 base conv, stride 1 at
levels 1 and 2 (the paper: 2), no extra downsampling path. Beyond the reference: in a tree of depth L > 2 only the first
subtree takes the tree's input width and stride (the reference gives them all, which cannot run
for L > 2; at its depths 1 and 2 this is the same network). The pool is global (the reference's
4x4 average pool is global at 32x32). Init: PyTorch's default, as the reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cifarzoo.errors import is_int, require
from cifarzoo.models.resnet_imagenet_style import BasicBlock

TREE_STRIDES = (1, 2, 2, 2)  # levels 2-5


def basic_block(in_ch: int, out_ch: int, stride: int) -> nn.Module:
    return BasicBlock(in_ch, out_ch, stride, out_ch, 1, nn.BatchNorm2d, nn.ReLU)


def conv_bn_relu(in_ch: int, out_ch: int) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU()]


class Tree(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, level: int, stride: int) -> None:
        super().__init__()
        self.prev_root = basic_block(in_ch, out_ch, stride) if level > 1 else None
        self.subtrees = nn.ModuleList()
        for i, sub_level in enumerate(reversed(range(1, level))):
            self.subtrees.append(Tree(in_ch if i == 0 else out_ch, out_ch, sub_level, stride if i == 0 else 1))
        first_in, first_stride = (out_ch, 1) if level > 1 else (in_ch, stride)
        self.left = basic_block(first_in, out_ch, first_stride)
        self.right = basic_block(out_ch, out_ch, 1)
        inputs = level + 2 if level > 1 else 2
        self.root = nn.Sequential(nn.Conv2d(inputs * out_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = [self.prev_root(x)] if self.prev_root is not None else []
        for subtree in self.subtrees:
            x = subtree(x)
            xs.append(x)
        x = self.left(x)
        xs.append(x)
        x = self.right(x)
        xs.append(x)
        return self.root(torch.cat(xs, 1))


class DLA(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, levels: Sequence[int] = (1, 1, 1, 2, 2, 1),
                 channels: Sequence[int] = (16, 32, 64, 128, 256, 512)) -> None:
        super().__init__()
        for key, value in (("levels", levels), ("channels", channels)):
            require(isinstance(value, (list, tuple)) and len(value) == 6 and all(is_int(v) and v >= 1 for v in value),
                    f"model.{key}", "must be a list of 6 ints >= 1 (levels 0-5)", value)
        layers = conv_bn_relu(in_channels, channels[0])
        for _ in range(levels[0]):
            layers += conv_bn_relu(channels[0], channels[0])
        for i in range(levels[1]):
            layers += conv_bn_relu(channels[0] if i == 0 else channels[1], channels[1])
        for i, stride in enumerate(TREE_STRIDES, start=2):
            layers.append(Tree(channels[i - 1], channels[i], levels[i], stride))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(channels[5], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1))
