"""ResNet with stochastic depth (Huang et al. 2016, "Deep Networks with Stochastic Depth",
arXiv:1603.09382) as the pytorch-cifar-tricks seed trained it at 32x32 (pprp/pytorch-cifar-tricks
`model/stochasticdepth.py` at 7bf6ee9, "stochastic_depth_resnet18"; a port of
weiaicunzai/pytorch-cifar100).

Network: the kuangliu-style ImageNet ResNet for CIFAR - conv3x3 64 (with bias) - BN - ReLU, four
stages of 64/128/256/512 channels (strides 1, 2, 2, 2), global average pooling, linear. `depth`
18/34 use basic blocks (two conv3x3 *with bias* - BN, ReLU between; projection shortcut conv1x1
with bias + BN), 50/101/152 bottlenecks (convs without bias, expansion 4).

Stochastic depth as the repository (and the paper's official Torch code): block l survives with
probability p_l, falling linearly from 1 for the first block to `survival_prob_last` (p_L = 0.5,
the paper's) for the last one; during training one Bernoulli draw per block and mini-batch either
keeps the residual branch or skips it (output = shortcut only, the branch is not computed); in
eval every branch runs, scaled by p_l. There is no ReLU after the addition (the official code's
choice, kept by the repository; the paper's equation has one). ResNet-18: 11,178,762 parameters
for 10 classes, exactly the repository's.

Deviations: the first conv takes the dataset's channels (the repository: 3). The paper's first
block has p = 1 - (1 - p_L)/L; the repository's, followed here, has p = 1. The draw is made on the device
(its default generator, seeded by the run) and multiplies the branch by 1 or 0, instead of a host-side
`if` that skips it: no device synchronisation, and a CUDA-graph replay draws anew (a host decision
would be frozen at capture). The function and the loss are the same; what differs for a dropped
branch: it is still computed (no speed-up from dropping), its BatchNorm layers update their running
statistics on that batch, and its parameters get zero gradients instead of none, so the optimizer
still applies weight decay and momentum to them in that step. PyTorch's default initialisation, as
the repository.
"""

from __future__ import annotations

import torch
from torch import nn

from cifarzoo.errors import is_number, require

# depth -> (bottleneck?, blocks per stage)
DEPTHS = {18: (False, (2, 2, 2, 2)), 34: (False, (3, 4, 6, 3)), 50: (True, (3, 4, 6, 3)),
          101: (True, (3, 4, 23, 3)), 152: (True, (3, 8, 36, 3))}


def basic_branch(in_ch: int, width: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, width, 3, stride, 1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
        nn.Conv2d(width, width, 3, 1, 1), nn.BatchNorm2d(width),
    )


def bottleneck_branch(in_ch: int, width: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
        nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
        nn.Conv2d(width, width * 4, 1, bias=False), nn.BatchNorm2d(width * 4),
    )


class StochasticDepthBlock(nn.Module):
    """shortcut(x) + branch(x), the branch kept with probability `survival_prob` while training
    and scaled by it in eval."""

    def __init__(self, branch: nn.Sequential, in_ch: int, out_ch: int, stride: int, conv_bias: bool,
                 survival_prob: float) -> None:
        super().__init__()
        self.branch = branch
        self.shortcut = nn.Identity() if in_ch == out_ch and stride == 1 else nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 1, stride, bias=conv_bias), nn.BatchNorm2d(out_ch))
        self.survival_prob = survival_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.shortcut(x) + self.branch(x) * self.survival_prob
        if self.survival_prob == 1:
            return self.shortcut(x) + self.branch(x)
        # The draw stays on the device (default generator): keep = 1 or 0 multiplies the branch, so a
        # captured CUDA graph draws anew on every replay instead of freezing one host-side choice.
        keep = (torch.rand((), device=x.device) < self.survival_prob).to(x.dtype)
        return self.shortcut(x) + self.branch(x) * keep


class StochasticDepthResNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, depth: int = 18, survival_prob_last: float = 0.5) -> None:
        super().__init__()
        require(depth in DEPTHS, "model.depth", f"must be one of {', '.join(map(str, DEPTHS))}", depth)
        require(is_number(survival_prob_last) and 0 < survival_prob_last <= 1, "model.survival_prob_last",
                "must be a number in (0, 1]", survival_prob_last)
        bottleneck, blocks = DEPTHS[depth]
        expansion, make_branch = (4, bottleneck_branch) if bottleneck else (1, basic_branch)
        total = sum(blocks)
        step = (1 - survival_prob_last) / max(total - 1, 1)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(inplace=True))
        layers, in_ch, index = [], 64, 0
        for stage, n in enumerate(blocks):
            width = 64 * 2**stage
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(StochasticDepthBlock(make_branch(in_ch, width, stride), in_ch, width * expansion,
                                                   stride, not bottleneck, 1 - index * step))
                in_ch, index = width * expansion, index + 1
        self.blocks = nn.Sequential(*layers)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))
