"""LeNet-5 (LeCun et al. 1998, "Gradient-Based Learning Applied to Document Recognition") as
pytorch-cifar-tricks (pprp, model/lenet.py at 7bf6ee9, = kuangliu's pytorch-cifar) trained it:
conv5x5 (6) -> ReLU -> 2x2 max-pool -> conv5x5 (16) -> ReLU -> 2x2 max-pool -> FC 120 -> ReLU ->
FC 84 -> ReLU -> FC (classes). Convs and FC layers have biases. 62,006 parameters for
3-channel inputs and 10 classes, the reference's count.

Deviations from the paper, as the reference: ReLU and max-pooling instead of the scaled tanh
and trainable subsampling, a full C3 (no connection table), a linear classifier instead of RBF
units. Inputs: the paper fed 28x28 MNIST digits padded to 32x32, and so does this model for
any input smaller than 32x32 (zero padding = the mean colour after normalisation); larger inputs
are average-pooled to the 5x5 map the first FC layer takes (identity at 32x32).
Init: PyTorch's default, as the reference.
"""

from __future__ import annotations

import torch
from torch import nn

INPUT_SIZE = 32  # the paper's input; smaller images are zero-padded to it


class LeNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h < INPUT_SIZE or w < INPUT_SIZE:
            top, left = max(0, INPUT_SIZE - h) // 2, max(0, INPUT_SIZE - w) // 2
            x = nn.functional.pad(x, (left, max(0, INPUT_SIZE - w) - left, top, max(0, INPUT_SIZE - h) - top))
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 5)
        return self.classifier(x.flatten(1))
