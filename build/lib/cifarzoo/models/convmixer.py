"""ConvMixer (Trockman & Kolter 2022, "Patches Are All You Need?", arXiv:2201.09792), as in the
paper's reference code and the architecture-study seed (hongyaohongyao/train_cifar,
models/convmixer.py).

Structure: patch embedding conv (kernel = stride = `patch_size`, `dim` channels) -> act ->
norm; `depth` ConvMixer layers, each a residual depthwise conv (`kernel_size`, "same"
padding) -> act -> norm, then a pointwise 1x1 conv -> act -> norm; global average pool;
linear. All convs have a bias. Defaults = the seed's "convmixer256d16" (dim 256, depth 16,
kernel 7, patch 2): 1,280,266 parameters for 10 classes (the seed's 1.28M). The paper's
names are ConvMixer-h/d = `dim`/`depth` (e.g. ConvMixer-256/16).

Deviations, stated plainly:
- Init: PyTorch's default init, as in the paper's code (listed in the paper) and the seed,
  not the zoo's He fan-out `init_weights`: PyTorch's fan-out of a depthwise conv counts all
  `dim` output channels, so He fan-out would shrink the depthwise kernels by sqrt(dim).
- Padding is "same" (as the paper's code); the seed pads kernel_size // 2, the same for the
  odd kernels it uses, while "same" also allows even kernels.
- `norm` / `activation` (default batch / gelu, the paper's choice) are extra keys for the
  architecture study.
"""

from __future__ import annotations

import torch
from torch import nn

from cifarzoo.errors import is_int, require
from cifarzoo.models.layers import check_activation, check_norm


class Residual(nn.Sequential):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(x)


class ConvMixer(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        dim: int = 256,
        depth: int = 16,
        kernel_size: int = 7,
        patch_size: int = 2,
        activation: str = "gelu",
        norm: str = "batch",
    ) -> None:
        super().__init__()
        for key, value in (("dim", dim), ("depth", depth), ("kernel_size", kernel_size), ("patch_size", patch_size)):
            require(is_int(value) and value >= 1, f"model.{key}",
                    "must be an int >= 1", value)
        make_norm, make_act = check_norm(norm), check_activation(activation)

        self.embed = nn.Sequential(nn.Conv2d(in_channels, dim, patch_size, patch_size), make_act(), make_norm(dim))
        self.layers = nn.Sequential(*[
            nn.Sequential(
                Residual(nn.Conv2d(dim, dim, kernel_size, groups=dim, padding="same"), make_act(), make_norm(dim)),
                nn.Conv2d(dim, dim, 1), make_act(), make_norm(dim),
            )
            for _ in range(depth)
        ])
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.embed(x))
        return self.fc(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))
