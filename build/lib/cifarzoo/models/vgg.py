"""VGG-style plain conv nets for CIFAR: hysts' "VGG-like" net and the architecture study's
VGG-16 (Simonyan & Zisserman 2014, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", arXiv:1409.1556), as in hysts' pytorch_image_classification
(models/cifar/vgg.py) and kuangliu's pytorch-cifar (used by the architecture-study seed).

Structure: `len(channels)` stages; stage i is `layers[i]` times [conv3x3 (with bias) ->
norm -> activation] at `channels[i]` channels, then a 2x2 max-pool; global average pool; one
linear classifier. No hidden fully connected layers (unlike the ImageNet VGG).

Defaults = hysts' default VGG-like net ("depth 15, w/ BN, channel 64": channels
(64, 128, 256, 512, 512), layers (2, 2, 3, 3, 3), BN): 13 conv layers + 1 linear layer,
14,728,266 parameters for 10 classes. This is layer for layer the kuangliu VGG-16 (with BN)
of the architecture-study seed, whose table lists it as 14.72M (the seed truncates to two
decimals), so `model=vgg16` is this class with the same defaults.

Deviations, stated plainly:
- Pooling uses `ceil_mode=True` and the classifier sits on a global average pool instead of a
  flatten. On 32x32 inputs both are exact no-ops (every map size is even; the last map is
  1x1), so the network is hysts'/kuangliu's; on 28x28 MNIST-family inputs they let the five
  pools run (28 -> 14 -> 7 -> 4 -> 2 -> 1) where floor pooling would reach a 0x0 map.
- `norm` / `activation` (default batch / relu, the papers' choice) are extra keys for the
  architecture study; `batch_norm: false` (hysts' `use_bn`) drops normalisation entirely.
- Init: He fan-out normal as in hysts (`init_weights`); kuangliu/the seed keep PyTorch's
  default init (no effect on the parameter count). hysts' code also drew the BN weights from
  U(0, 1): `+model.bn_weight_init=uniform` (see `cifarzoo.models.init`).

`relu_per_stage` (hysts' code of the seeds' "VGG-like" rows): `all` (default) puts the
activation after every conv; `first` only after the first conv of each stage. hysts' code of
2017-2020 named every ReLU of a stage `relu`, so `add_module` replaced the earlier one in place
and each stage kept a single ReLU, after its first conv/BN (fixed upstream in Sep 2020, after the
tables): 5 ReLUs instead of 13 in the default net. Parameter count unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cifarzoo.errors import is_int, require
from cifarzoo.models.init import init_weights
from cifarzoo.models.layers import check_activation, check_norm


def _positive_ints(values: object) -> bool:
    return (
        isinstance(values, (list, tuple))
        and len(values) >= 1
        and all(is_int(v) and v >= 1 for v in values)
    )


class VGG(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: Sequence[int] = (64, 128, 256, 512, 512),
        layers: Sequence[int] = (2, 2, 3, 3, 3),
        batch_norm: bool = True,
        norm: str = "batch",
        activation: str = "relu",
        relu_per_stage: str = "all",
    ) -> None:
        super().__init__()
        require(_positive_ints(channels), "model.channels", "must be a non-empty list of ints >= 1, one per stage",
                channels)
        require(_positive_ints(layers), "model.layers", "must be a non-empty list of ints >= 1, one per stage",
                layers)
        require(len(layers) == len(channels), "model.layers",
                f"needs one entry per stage, as many as model.channels ({len(channels)})", list(layers))
        require(isinstance(batch_norm, bool), "model.batch_norm", "must be true or false", batch_norm)
        require(relu_per_stage in ("all", "first"), "model.relu_per_stage", "must be all or first", relu_per_stage)
        make_norm = check_norm(norm)
        make_act = check_activation(activation)

        stages, in_ch = [], in_channels
        for out_ch, n in zip(channels, layers):
            modules: list[nn.Module] = []
            for index in range(n):
                modules.append(nn.Conv2d(in_ch, out_ch, 3, 1, 1))
                if batch_norm:
                    modules.append(make_norm(out_ch))
                if relu_per_stage == "all" or index == 0:
                    modules.append(make_act())
                in_ch = out_ch
            modules.append(nn.MaxPool2d(2, 2, ceil_mode=True))
            stages.append(nn.Sequential(*modules))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(in_ch, num_classes)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(x)
        return self.fc(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))
