"""ImageNet-layout pre-activation ResNets at CIFAR resolution, as pytorch-cifar-tricks (pprp,
model/preact_resnet.py and model/senet.py at 7bf6ee9, = kuangliu's pytorch-cifar) trained them:
PreActResNet-18 (He et al. 2016, "Identity Mappings in Deep Residual Networks",
arXiv:1603.05027) and SENet-18, the same network with squeeze-and-excitation (Hu et al. 2018,
"Squeeze-and-Excitation Networks", arXiv:1709.01507) on every residual branch.

Structure: a 3x3 stem conv of 64*widen channels (stride 1, no max-pool; SENet-18 adds norm ->
act after it, PreActResNet-18 has none); four stages of pre-activation basic blocks at (64, 128,
256, 512)*widen channels with strides (1, 2, 2, 2), blocks per stage by `depth` as
`resnet_imagenet_style` (18: 2-2-2-2); global average pool; linear. Block (`resnet_preact`'s
PreActBlock): norm -> act -> conv3x3 (stride) -> norm -> act -> conv3x3 [-> SE], plus the
shortcut: the input itself, or, where the shape changes, a 1x1 conv (no norm) of the block's
pre-activated input. SE: global average pool -> FC (C // se_reduction) -> ReLU -> FC (C) ->
sigmoid, multiplied onto the branch (the reference's 1x1 convs with bias = these FC layers).

Parameter counts for 10 classes equal the reference's: PreActResNet-18 11,171,146;
SENet-18 11,260,354.

Deviations from the reference, stated plainly:
- As in the reference (and unlike the paper's networks) there is no final norm -> act before
  the pool: the last block's sum goes straight to the pool.
- The pool is global (the reference's 4x4 average pool is global at 32x32), so 28x28 inputs work.
- `depth` also allows 10, 14, 34 and `widen` scales the widths (small test models); the
  reference's options are depth 18 at widen 1.
- Init: PyTorch's default, as the reference.
"""

from __future__ import annotations

import torch
from torch import nn

from cifarzoo.errors import is_int, require
from cifarzoo.models.resnet_imagenet_style import STAGE_BLOCKS, check_widen
from cifarzoo.models.resnet_preact import PreActBlock
from cifarzoo.models.se_resnet_preact import SEPreActBlock


class PreActResNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, depth: int = 18, widen: float = 1) -> None:
        super().__init__()
        names = ", ".join(str(d) for d in STAGE_BLOCKS)
        require(is_int(depth) and depth in STAGE_BLOCKS, "model.depth", f"must be one of {names}", depth)
        base = check_widen(widen)
        self.stem = self.make_stem(in_channels, base)
        stages, in_ch = [], base
        for i, (n, stride) in enumerate(zip(STAGE_BLOCKS[depth], (1, 2, 2, 2))):
            width = base * 2**i
            blocks = []
            for j in range(n):
                blocks.append(self.make_block(in_ch, width, stride if j == 0 else 1))
                in_ch = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(in_ch, num_classes)

    def make_stem(self, in_channels: int, width: int) -> nn.Module:
        return nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)

    def make_block(self, in_ch: int, out_ch: int, stride: int) -> nn.Module:
        # The reference's block takes a projection shortcut (only there) from the pre-activated input.
        return PreActBlock(in_ch, out_ch, stride, remove_first_relu=False, add_last_bn=False,
                           preact_shortcut=in_ch != out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.fc(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))


class SENet(PreActResNet):
    """SENet-18 of the reference: conv -> norm -> act stem, SE pre-activation blocks."""

    def __init__(self, in_channels: int, num_classes: int, depth: int = 18, widen: float = 1,
                 se_reduction: int = 16) -> None:
        require(is_int(se_reduction) and se_reduction >= 1, "model.se_reduction", "must be an int >= 1", se_reduction)
        self.se_reduction = se_reduction
        super().__init__(in_channels, num_classes, depth, widen)

    def make_stem(self, in_channels: int, width: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())

    def make_block(self, in_ch: int, out_ch: int, stride: int) -> nn.Module:
        return SEPreActBlock(in_ch, out_ch, stride, se_reduction=self.se_reduction, remove_first_relu=False,
                             add_last_bn=False, preact_shortcut=in_ch != out_ch)
