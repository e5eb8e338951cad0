"""Shake-Shake regularized ResNets for CIFAR (Gastaldi 2017, "Shake-Shake regularization",
arXiv:1705.07485), as the official Torch code (xgastaldi/shake-shake, `models/shakeshake.lua`
and `models/shakeshakeblock.lua`).

Every residual block has two residual branches whose outputs are mixed by a random convex
combination: forward alpha * b1 + (1 - alpha) * b2, backward the gradient reaches b1 scaled by
beta and b2 by 1 - beta (`ShakeShakeFunction`). The seed's Table 1 names are
`shake_forward` (shake: alpha ~ U(0, 1) | even: alpha = 0.5), `shake_backward` (shake: a new
beta ~ U(0, 1) | even: beta = 0.5 | keep: beta = alpha) and `shake_level` (batch: one
coefficient per block for the whole mini-batch | image: one per image). E.g. S-S-I is
`shake, shake, image`; E-E-B (the paper's "Even-Even", level n/a) is `even, even, batch`.
At eval time alpha = 0.5: the two branches are averaged.

`branch: basic` (the paper's CIFAR-10 network, "26 2x32d"): conv3x3 (16) - BN, then 3 stages of
n = (depth - 2) / 6 blocks with widths (1, 2, 4) x `base_channels`, ReLU, global average
pooling, linear. Each branch is ReLU - conv3x3 - BN - ReLU - conv3x3 - BN; the shortcut is the
identity, or, where the shape changes, ReLU then two paths (path 1: 1x1 average pooling with
the stride - conv1x1 to half the channels; path 2: the same on the input shifted by one pixel),
concatenated along channels, then BN. No ReLU after the addition (the next block's branches
start with one).

`branch: bottleneck` (the seed's CIFAR-100 network "29 2x4x64d", `shakeshake.lua` CIFAR-100
branch): ResNeXt-29 (see `cifarzoo.models.resnext`) whose blocks have two ResNeXt branches
(conv1x1 - BN - ReLU - grouped conv3x3 - BN - ReLU - conv1x1 - BN, `cardinality` groups of
width `base_channels` x 2^stage) mixed as above, a conv1x1 + BN projection shortcut where the
shape changes and ReLU after the addition; stem conv3x3 (64) - BN - ReLU; stage outputs 256,
512, 1024; depth 9n+2. Reach it with
`model.branch=bottleneck model.depth=29 model.cardinality=4 model.base_channels=64`.

Initialisation: `init_weights` (He fan-out normal convs, as the official ConvInit; BN 1 / 0;
zero classifier bias).

Deviations:
- The official code's path-2 shift pads one zero row/column at the top/left and drops the last
  row/column (so it sees the pixels at odd positions before each sampled one); we do the same.
  hysts' pytorch_image_classification shifts the other way (drops the first row/column, pads at
  the bottom/right). Parameter counts are unaffected.
- The paper calls "keep" the backward pass reusing the forward coefficients; the released Torch
  code has no such switch (its backward is either a new draw or 0.5). `keep` implements the
  paper's definition.
- Global average pooling is adaptive (instead of the official 8x8 pooling) so 28x28 inputs work.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cifarzoo.errors import require
from cifarzoo.models.init import init_weights
from cifarzoo.models.resnext import ResNeXtBranch, check_resnext_depth, projection_shortcut, stage_widths

FORWARD_MODES = ("shake", "even")
BACKWARD_MODES = ("shake", "even", "keep")
LEVELS = ("batch", "image")
BRANCHES = ("basic", "bottleneck")


class ShakeShakeFunction(torch.autograd.Function):
    """y = alpha * x1 + (1 - alpha) * x2; the gradient reaches x1 as beta * g and x2 as
    (1 - beta) * g. alpha and beta broadcast against x1 (shape (1, 1, 1, 1) or (N, 1, 1, 1))."""

    @staticmethod
    def forward(ctx: Any, x1: torch.Tensor, x2: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(beta)
        return alpha * x1 + (1 - alpha) * x2

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (beta,) = ctx.saved_tensors
        beta = beta.to(grad.dtype)
        grad_x1 = grad * beta if ctx.needs_input_grad[0] else None
        grad_x2 = grad * (1 - beta) if ctx.needs_input_grad[1] else None
        return grad_x1, grad_x2, None, None


def shake_shake(x1: torch.Tensor, x2: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    return ShakeShakeFunction.apply(x1, x2, alpha, beta)


def shake_coefficients(
    batch_size: int, forward: str, backward: str, level: str, device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, beta) for one block in training: shape (N, 1, 1, 1) at the image level,
    (1, 1, 1, 1) at the batch level."""
    shape = (batch_size if level == "image" else 1, 1, 1, 1)

    def draw(mode: str) -> torch.Tensor:
        if mode == "shake":
            return torch.rand(shape, device=device, dtype=dtype)
        return torch.full(shape, 0.5, device=device, dtype=dtype)

    alpha = draw(forward)
    beta = alpha if backward == "keep" else draw(backward)
    return alpha, beta


class ShakeMixer(nn.Module):
    """Mixes two branch outputs: shake-shake in training, their average at eval time."""

    def __init__(self, forward: str, backward: str, level: str) -> None:
        super().__init__()
        self.forward_mode, self.backward_mode, self.level = forward, backward, level

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return 0.5 * (x1 + x2)
        alpha, beta = shake_coefficients(x1.size(0), self.forward_mode, self.backward_mode, self.level,
                                         x1.device, x1.dtype)
        return shake_shake(x1, x2, alpha, beta)

    def extra_repr(self) -> str:
        return f"forward={self.forward_mode}, backward={self.backward_mode}, level={self.level}"


class BasicBranch(nn.Sequential):
    """ReLU - conv3x3 (stride here) - BN - ReLU - conv3x3 - BN."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__(
            nn.ReLU(inplace=False),  # the input is shared with the other branch and the shortcut
            nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        )


class TwoPathShortcut(nn.Module):
    """ReLU, then conv1x1 on the strided input and on the input shifted by one pixel (each to
    half the output channels), concatenated, then BN."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(in_ch, out_ch // 2, 1, 1, 0, bias=False)
        self.conv2 = nn.Conv2d(in_ch, out_ch // 2, 1, 1, 0, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        shifted = F.pad(x, (1, 0, 1, 0))[:, :, :-1, :-1]  # one pixel right and down, zero-filled
        y1 = self.conv1(x[:, :, :: self.stride, :: self.stride])
        y2 = self.conv2(shifted[:, :, :: self.stride, :: self.stride])
        return self.bn(torch.cat([y1, y2], dim=1))


class ShakeBlock(nn.Module):
    def __init__(self, branch1: nn.Module, branch2: nn.Module, shortcut: nn.Module, mixer: ShakeMixer,
                 relu_after_add: bool) -> None:
        super().__init__()
        self.branch1, self.branch2, self.shortcut, self.mixer = branch1, branch2, shortcut, mixer
        self.relu_after_add = relu_after_add

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mixer(self.branch1(x), self.branch2(x)) + self.shortcut(x)
        return F.relu(y) if self.relu_after_add else y


class ShakeShake(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        depth: int = 26,
        base_channels: int = 32,
        shake_forward: str = "shake",
        shake_backward: str = "shake",
        shake_level: str = "image",
        branch: str = "basic",
        cardinality: int = 1,
    ) -> None:
        super().__init__()
        require(shake_forward in FORWARD_MODES, "model.shake_forward", "must be shake or even", shake_forward)
        require(shake_backward in BACKWARD_MODES, "model.shake_backward", "must be shake, even or keep",
                shake_backward)
        require(shake_level in LEVELS, "model.shake_level", "must be batch or image", shake_level)
        require(branch in BRANCHES, "model.branch", "must be basic or bottleneck", branch)
        require(isinstance(cardinality, int) and cardinality >= 1, "model.cardinality", "must be an int >= 1",
                cardinality)
        mixer = (shake_forward, shake_backward, shake_level)

        if branch == "basic":
            n = (depth - 2) // 6 if isinstance(depth, int) else 0
            require(n >= 1 and 6 * n + 2 == depth, "model.depth",
                    "shake-shake with basic branches needs depth = 6n+2, n >= 1", depth)
            require(isinstance(base_channels, int) and base_channels >= 2 and base_channels % 2 == 0,
                    "model.base_channels", "must be an even int >= 2 (the two-path shortcut halves it)",
                    base_channels)
            require(cardinality == 1, "model.cardinality",
                    "basic branches have no groups; must be 1 (grouped branches: model.branch=bottleneck)",
                    cardinality)
            stem = 16
            self.stem = nn.Sequential(nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem))
            stages, in_ch = [], stem
            for i, stride in enumerate((1, 2, 2)):
                out_ch = base_channels * 2**i
                blocks = []
                for j in range(n):
                    cin, s = (in_ch, stride) if j == 0 else (out_ch, 1)
                    shortcut = TwoPathShortcut(cin, out_ch, s) if (cin != out_ch or s != 1) else nn.Identity()
                    blocks.append(ShakeBlock(BasicBranch(cin, out_ch, s), BasicBranch(cin, out_ch, s), shortcut,
                                             ShakeMixer(*mixer), relu_after_add=False))
                stages.append(nn.Sequential(*blocks))
                in_ch = out_ch
            self.stages = nn.Sequential(*stages)
            self.head = nn.ReLU()
        else:
            n = check_resnext_depth(depth)
            require(isinstance(base_channels, int) and base_channels >= 1, "model.base_channels",
                    "must be an int >= 1 (width of one group in the first stage)", base_channels)
            stem = 64
            self.stem = nn.Sequential(nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem),
                                      nn.ReLU())
            stages, in_ch = [], stem
            for stride, group_width, out_ch in stage_widths(base_channels):
                blocks = []
                for j in range(n):
                    cin, s = (in_ch, stride) if j == 0 else (out_ch, 1)
                    blocks.append(ShakeBlock(ResNeXtBranch(cin, out_ch, s, group_width, cardinality),
                                             ResNeXtBranch(cin, out_ch, s, group_width, cardinality),
                                             projection_shortcut(cin, out_ch, s), ShakeMixer(*mixer),
                                             relu_after_add=True))
                stages.append(nn.Sequential(*blocks))
                in_ch = out_ch
            self.stages = nn.Sequential(*stages)
            self.head = nn.Identity()  # the last block already ends with ReLU
        self.fc = nn.Linear(in_ch, num_classes)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.stages(self.stem(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
