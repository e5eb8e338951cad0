"""ImageNet-layout DenseNet-BC at CIFAR resolution (Huang et al. 2017, "Densely Connected
Convolutional Networks", arXiv:1608.06993): DenseNet-121 as in kuangliu's pytorch-cifar and
the architecture-study seed (hongyaohongyao/train_cifar, models/densenet.py).

Structure: a 3x3 stem conv to 2*growth_rate channels (stride 1, no norm, no max-pool); four
dense blocks of `blocks` = (6, 12, 24, 16) bottleneck layers, each norm -> act -> conv1x1
(4*growth_rate) -> norm -> act -> conv3x3 (growth_rate), its output concatenated to its input;
between blocks a transition norm -> act -> conv1x1 to floor(channels*compression) -> 2x2
average pool; then norm -> act -> global average pool -> linear. Convs have no bias.
Defaults (growth 32, compression 0.5): 6,956,298 parameters for 10 classes; the seed's table
truncates this to 6.95M.

Deviations from the seed's code, stated plainly:
- The seed passes its activation/norm choice only to the final norm/act (dense layers and
  transitions always use BN/ReLU); here `model.norm` / `model.activation` apply to every layer.
  The seed's study does not vary them for DenseNet, so its results are unaffected.
- Init: He fan-out normal (`init_weights`); the seed/kuangliu keep PyTorch's default init.
- The concatenation order is [input, new features] (the seed puts the new ones first); this
  only permutes channels and changes neither the function class nor the count.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from cifarzoo.errors import is_int, require
from cifarzoo.models.init import init_weights
from cifarzoo.models.layers import check_activation, check_norm


class DenseLayer(nn.Module):
    """norm -> act -> conv1x1 (4k) -> norm -> act -> conv3x3 (k); output = [x, new]."""

    def __init__(self, in_ch: int, growth_rate: int, norm: Callable[[int], nn.Module],
                 act: Callable[[], nn.Module]) -> None:
        super().__init__()
        mid = 4 * growth_rate
        self.body = nn.Sequential(
            norm(in_ch), act(), nn.Conv2d(in_ch, mid, 1, 1, 0, bias=False),
            norm(mid), act(), nn.Conv2d(mid, growth_rate, 3, 1, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], dim=1)


class DenseNetImageNetStyle(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        blocks: Sequence[int] = (6, 12, 24, 16),
        growth_rate: int = 32,
        compression: float = 0.5,
        activation: str = "relu",
        norm: str = "batch",
    ) -> None:
        super().__init__()
        require(
            isinstance(blocks, (list, tuple)) and len(blocks) >= 1
            and all(is_int(b) and b >= 1 for b in blocks),
            "model.blocks", "must be a non-empty list of ints >= 1 (layers per dense block)", blocks,
        )
        require(isinstance(growth_rate, int) and growth_rate >= 1, "model.growth_rate", "must be an int >= 1",
                growth_rate)
        require(isinstance(compression, (int, float)) and 0 < compression <= 1, "model.compression",
                "must be in (0, 1]", compression)
        make_norm, make_act = check_norm(norm), check_activation(activation)

        channels = 2 * growth_rate
        features: list[nn.Module] = [nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False)]
        for i, n in enumerate(blocks):
            for _ in range(n):
                features.append(DenseLayer(channels, growth_rate, make_norm, make_act))
                channels += growth_rate
            if i < len(blocks) - 1:
                out = int(math.floor(channels * compression))
                require(out >= 1, "model.compression", f"leaves no channels after dense block {i + 1}", compression)
                features += [make_norm(channels), make_act(), nn.Conv2d(channels, out, 1, 1, 0, bias=False),
                             nn.AvgPool2d(2, 2)]
                channels = out
        features += [make_norm(channels), make_act()]
        self.features = nn.Sequential(*features)
        self.fc = nn.Linear(channels, num_classes)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.fc(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))
