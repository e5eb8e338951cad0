"""SE-ResNet-preact: squeeze-and-excitation (Hu et al. 2018, "Squeeze-and-Excitation
Networks", arXiv:1709.01507) on the pre-activation ResNet of `resnet_preact.py`, as in hysts'
pytorch_image_classification `se_resnet_preact`.

The network, its blocks and all their keys (`depth`, `block`, `base_channels`, `widen`,
`remove_first_relu`, `add_last_bn`, `preact_stage`, `activation`, `norm`) are those of
`ResNetPreAct`; each block's residual branch ends with an SE module before the addition:

    s = sigmoid(W2 act(W1 avgpool(r)))      W1: C -> C // r,  W2: C // r -> C (with biases)
    out = r * s + shortcut(x)

with r = `se_reduction` (the paper's 16). Deviations:
- The hidden width is max(1, C // r), so narrow stages (C < r) still build (hysts' code would
  make a zero-width layer); at the defaults (C >= 16) it is C // r as in the paper.
- The SE nonlinearity follows `model.activation` (ReLU by default, as in the paper).
- The FC layers keep PyTorch's default weight init and zero biases (`init_weights`); hysts'
  SE code draws them He fan-out normal. The paper does not specify.
"""

from __future__ import annotations

import torch
from torch import nn

from cifarzoo.errors import is_int, require
from cifarzoo.models.layers import check_activation
from cifarzoo.models.resnet_preact import Activation, PreActBlock, PreActBottleneck, ResNetPreAct


class SqueezeExcitation(nn.Module):
    """Channel gates from global average pooling: FC-act-FC-sigmoid, multiplied onto the input.
    The hidden width is max(1, channels // reduction) unless `hidden` gives it (EfficientNet and
    RegNetY size it from the block's input width)."""

    def __init__(self, channels: int, reduction: int = 16, act: Activation | None = None,
                 hidden: int | None = None) -> None:
        super().__init__()
        hidden = max(1, channels // reduction) if hidden is None else hidden
        self.fc1 = nn.Linear(channels, hidden)
        self.act = act() if act is not None else nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3))
        s = torch.sigmoid(self.fc2(self.act(self.fc1(s))))
        return x * s[:, :, None, None]


class _SEResidual:
    """Mixin: the wrapped block's residual branch, followed by `self.se`."""

    se: SqueezeExcitation

    def residual(self, y: torch.Tensor) -> torch.Tensor:
        return self.se(super().residual(y))  # type: ignore[misc]


class SEPreActBlock(_SEResidual, PreActBlock):
    def __init__(self, in_ch: int, out_ch: int, stride: int, *, se_reduction: int, **options: object) -> None:
        super().__init__(in_ch, out_ch, stride, **options)
        self.se = SqueezeExcitation(out_ch, se_reduction, options.get("act"))


class SEPreActBottleneck(_SEResidual, PreActBottleneck):
    def __init__(self, in_ch: int, out_ch: int, stride: int, *, se_reduction: int, **options: object) -> None:
        super().__init__(in_ch, out_ch, stride, **options)
        self.se = SqueezeExcitation(out_ch, se_reduction, options.get("act"))


SE_BLOCKS = {"basic": SEPreActBlock, "bottleneck": SEPreActBottleneck}


class SEResNetPreAct(ResNetPreAct):
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
        se_reduction: int = 16,
    ) -> None:
        require(is_int(se_reduction) and se_reduction >= 1,
                "model.se_reduction", "must be an int >= 1", se_reduction)
        check_activation(activation)
        self.se_reduction = se_reduction  # read by make_block during ResNetPreAct.__init__
        super().__init__(in_channels, num_classes, depth=depth, block=block, base_channels=base_channels,
                         widen=widen, remove_first_relu=remove_first_relu, add_last_bn=add_last_bn,
                         preact_stage=preact_stage, activation=activation, norm=norm)

    def make_block(self, block: str, in_ch: int, out_ch: int, stride: int, **options: object) -> nn.Module:
        return SE_BLOCKS[block](in_ch, out_ch, stride, se_reduction=self.se_reduction, **options)
