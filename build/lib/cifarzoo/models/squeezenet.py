"""SqueezeNet with simple bypass (Iandola et al. 2016, "SqueezeNet: AlexNet-level accuracy with
50x fewer parameters and <0.5MB model size", arXiv:1602.07360) as the pytorch-cifar-tricks seed
trained it at 32x32 (pprp/pytorch-cifar-tricks `model/squeezenet.py` at 7bf6ee9, "squeezenet";
a port of weiaicunzai/pytorch-cifar100, whose docstring cites the wrong paper).

The repository's CIFAR network: conv3x3 96 (with bias) - BN - ReLU - max-pool 2; fire2..fire9
with BN after every conv, simple bypass (identity) around fire3, fire5, fire7 (and fire9 in the
paper, not here), max-pool 2 after fire4 and fire8; conv1x1 (with bias) to the classes, global
average pooling, no ReLU on the logits. Fire(s, e): squeeze conv1x1 s - BN - ReLU, then expand
conv1x1 e/2 and conv3x3 e/2 (each - BN - ReLU) concatenated. 734,986 parameters for 10 classes,
exactly the repository's.

Deviations: the first conv takes the dataset's channels (the repository: 3). PyTorch's default
initialisation, as the repository.
"""

from __future__ import annotations

import torch
from torch import nn

# (expand channels e, squeeze channels s, bypass) of fire2..fire9; a max-pool follows fire4 and fire8.
FIRES = ((128, 16, False), (128, 16, True), (256, 32, False), (256, 32, True),
         (384, 48, False), (384, 48, True), (512, 64, False), (512, 64, False))
POOL_AFTER = (2, 6)  # indexes into FIRES: fire4, fire8


def conv_bn_relu(in_ch: int, out_ch: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2), nn.BatchNorm2d(out_ch),
                         nn.ReLU(inplace=True))


class Fire(nn.Module):
    def __init__(self, in_ch: int, expand: int, squeeze: int, bypass: bool) -> None:
        super().__init__()
        self.squeeze = conv_bn_relu(in_ch, squeeze, 1)
        self.expand_1x1 = conv_bn_relu(squeeze, expand // 2, 1)
        self.expand_3x3 = conv_bn_relu(squeeze, expand // 2, 3)
        self.bypass = bypass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze(x)
        out = torch.cat([self.expand_1x1(s), self.expand_3x3(s)], 1)
        return out + x if self.bypass else out


class SqueezeNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn_relu(in_channels, 96, 3), nn.MaxPool2d(2)]
        in_ch = 96
        for i, (expand, squeeze, bypass) in enumerate(FIRES):
            layers.append(Fire(in_ch, expand, squeeze, bypass))
            layers += [nn.MaxPool2d(2)] if i in POOL_AFTER else []
            in_ch = expand
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(in_ch, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x)).mean((2, 3))
