"""DenseNet for CIFAR (Huang, Liu, van der Maaten & Weinberger 2017, "Densely Connected
Convolutional Networks", arXiv:1608.06993).

Three dense blocks at 32x32, 16x16 and 8x8 (28x28 inputs: 28, 14, 7). Inside a block, layer
i sees the concatenation of the block input and every earlier layer's output, and adds
`growth_rate` (k) channels:

- basic layer (DenseNet): BN-ReLU-conv3x3 (k channels);
- bottleneck layer (DenseNet-B): BN-ReLU-conv1x1 (4k channels), BN-ReLU-conv3x3 (k channels).

Depth: the stem conv, the 3 blocks' convs, 2 transition convs and the classifier, so a basic
net has n = (depth - 4) / 3 layers per block and a bottleneck net n = (depth - 4) / 6.
Between blocks a transition BN-ReLU-conv1x1 maps c channels to floor(compression * c)
(theta; 1.0 = no compression, DenseNet-C / -BC use 0.5) and halves the resolution with a
2x2 average pool. After the last block: BN-ReLU, global average pool, linear classifier.
`drop_rate` > 0 adds dropout after every conv except the stem (the paper's setting without
data augmentation, 0.2).

Stem width rule: the stem conv3x3 has 16 output channels for the paper's plain DenseNet
(basic layers and compression 1.0) and 2k channels otherwise (DenseNet-B, -C and -BC). The
paper states 16 for DenseNet and 2k for DenseNet-BC; for -B and -C alone it says nothing,
and we use 2k as the official Torch code (which uses 2k for every variant) does.

Deviations: the official Torch code and hysts' pytorch_image_classification use a 2k stem
for the plain DenseNet too (L=40, k=12: 24 channels instead of the paper's 16); we follow the
paper. Adaptive average pooling replaces the fixed 8x8 pool so that 28x28 inputs work.
Initialisation: `init_weights` (He fan-out normal convs, BN 1/0, zero classifier bias), as
in the official code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cifarzoo.errors import is_int, require
from cifarzoo.models.init import init_weights


class BasicLayer(nn.Module):
    """BN-ReLU-conv3x3 to k channels, concatenated to the input."""

    def __init__(self, in_ch: int, growth_rate: int, drop_rate: float) -> None:
        super().__init__()
        self.drop_rate = drop_rate
        self.bn = nn.BatchNorm2d(in_ch)
        self.conv = nn.Conv2d(in_ch, growth_rate, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.dropout(self.conv(F.relu(self.bn(x))), self.drop_rate, self.training)
        return torch.cat([x, y], dim=1)


class BottleneckLayer(nn.Module):
    """BN-ReLU-conv1x1 to 4k channels, BN-ReLU-conv3x3 to k channels, concatenated to the input."""

    def __init__(self, in_ch: int, growth_rate: int, drop_rate: float) -> None:
        super().__init__()
        mid = 4 * growth_rate
        self.drop_rate = drop_rate
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, mid, 1, 1, 0, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, growth_rate, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.dropout(self.conv1(F.relu(self.bn1(x))), self.drop_rate, self.training)
        y = F.dropout(self.conv2(F.relu(self.bn2(y))), self.drop_rate, self.training)
        return torch.cat([x, y], dim=1)


class Transition(nn.Module):
    """BN-ReLU-conv1x1 (c -> floor(theta c) channels), then 2x2 average pool."""

    def __init__(self, in_ch: int, out_ch: int, drop_rate: float) -> None:
        super().__init__()
        self.drop_rate = drop_rate
        self.bn = nn.BatchNorm2d(in_ch)
        self.conv = nn.Conv2d(in_ch, out_ch, 1, 1, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.dropout(self.conv(F.relu(self.bn(x))), self.drop_rate, self.training)
        return F.avg_pool2d(x, 2, 2)


LAYERS = {"basic": BasicLayer, "bottleneck": BottleneckLayer}


def stem_channels(block: str, compression: float, growth_rate: int) -> int:
    """16 for the plain DenseNet (basic, compression 1.0), 2k for DenseNet-B/-C/-BC."""
    return 16 if block == "basic" and compression == 1.0 else 2 * growth_rate


class DenseNet(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        depth: int = 100,
        block: str = "bottleneck",
        growth_rate: int = 12,
        compression: float = 0.5,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        require(block in LAYERS, "model.block", "must be basic or bottleneck", block)
        convs_per_layer = 1 if block == "basic" else 2
        per_block = 3 * convs_per_layer
        n = (depth - 4) // per_block if isinstance(depth, int) else 0
        require(
            is_int(depth) and n >= 1 and n * per_block + 4 == depth,
            "model.depth",
            f"DenseNet with {block} layers needs depth = {per_block}n+4, n >= 1",
            depth,
        )
        require(is_int(growth_rate) and growth_rate >= 1,
                "model.growth_rate", "must be an int >= 1", growth_rate)
        require(isinstance(compression, (int, float)) and 0 < compression <= 1,
                "model.compression", "must be in (0, 1] (1.0 = no compression)", compression)
        require(isinstance(drop_rate, (int, float)) and 0 <= drop_rate < 1,
                "model.drop_rate", "must be in [0, 1)", drop_rate)

        layer = LAYERS[block]
        channels = stem_channels(block, float(compression), growth_rate)
        self.conv = nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False)
        stages = []
        for index in range(3):
            modules: list[nn.Module] = []
            for _ in range(n):
                modules.append(layer(channels, growth_rate, drop_rate))
                channels += growth_rate
            if index < 2:
                out_ch = int(compression * channels)  # floor, as in the paper's code
                modules.append(Transition(channels, out_ch, drop_rate))
                channels = out_ch
            stages.append(nn.Sequential(*modules))
        self.stages = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.conv(x))
        x = F.relu(self.bn(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
