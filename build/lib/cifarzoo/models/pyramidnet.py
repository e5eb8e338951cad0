"""PyramidNet for CIFAR (Han, Kim & Kim 2017, "Deep Pyramidal Residual Networks",
arXiv:1610.02915), with optional ShakeDrop (Yamada, Iwamura, Akiba & Kise 2018, "ShakeDrop
Regularization for Deep Residual Learning", arXiv:1802.02375).

Widths: instead of doubling at each stage, every residual unit widens by alpha / N, where N is
the number of units (3n). Unit i (1..N) has width round(base_channels + alpha * i / N) (rounded
to nearest, not floored, as in the official PyTorch code); a bottleneck unit outputs 4x that.
The stem conv3x3 has `base_channels` outputs (not x4), followed by BN (no ReLU).

Units (three stages of n units, the first unit of stages 2 and 3 downsamples with stride 2):

- basic (depth 6n+2): BN-conv3x3-BN-ReLU-conv3x3-BN;
- bottleneck (depth 9n+2): BN-conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1 (x4)-BN;

i.e. no ReLU at the start of a unit and a BN at its end. The shortcut is the identity,
zero-padded in the channel dimension to the unit's width, after a 2x2 average pool when the
unit downsamples (no projection parameters). After the last stage: BN-ReLU, global average
pool, linear classifier.

ShakeDrop (`shakedrop_prob` = p_L > 0): the residual of unit l (1..N) is multiplied, before
the shortcut is added, by b + a - b a in the forward pass and by b + c - b c in the backward
pass (computed exactly: 1 where b = 1, a or c where b = 0), with b ~ Bernoulli(1 - p_l),
a ~ U[-1, 1], c ~ U[0, 1] drawn per image (c independently of a) and
p_l = p_L * l / N (linear decay rule). At eval the residual is scaled by the expected value
E[b + a - b a] = 1 - p_l. `shakedrop_prob` = 0 builds the plain PyramidNet (no ShakeDrop
layers). The paper's PyramidNet + ShakeDrop uses p_L = 0.5.

Parameter counts: this module builds exactly the parameter counts of the authors' PyTorch
code (dyhan0920/PyramidNet-PyTorch) and of hysts' implementation, e.g. 1,772,706 / 3,904,446 /
28,485,477 for PyramidNet-110 alpha=48 / 84 / 270 and 27,216,021 / 26,210,842 for the bottleneck
164 alpha=270 / 272 alpha=200. The paper's table gives 1.7 / 3.8 / 28.3 / 27.0 / 26.0 M, 0.05 to
0.2 M below its own code; no architectural reading (rounding vs flooring, BN or classifier left
out, width offsets) reproduces all five, so we keep the official architecture. (The
AutoAugment/Fast AutoAugment literature quotes 26.2M for PyramidNet-272 alpha=200 + ShakeDrop.)

Deviations: the widely copied PyTorch ShakeDrop port (owruby/shake-drop_pytorch, also in
kakaobrain/fast-autoaugment; pytorch-cifar-tricks' own code was not available to check) draws
one gate b per mini-batch and a, c per image; we draw b per image too (the ShakeDrop paper's
image-level variant, as the issue specifies). Widths are computed as
base + alpha * i / N directly rather than by accumulating alpha / N in floating point (the
same integers for every published configuration). Python's `round` (half to even) is used,
like the official PyTorch code. Adaptive average pooling replaces the fixed 8x8 pool so that
28x28 inputs work. Initialisation: `init_weights` (He fan-out normal convs, BN 1/0, zero
classifier bias), as in the official code.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cifarzoo.errors import is_int, is_number, require
from cifarzoo.models.init import init_weights


class ShakeDropFunction(torch.autograd.Function):
    """Training-time ShakeDrop on a residual batch (N, C, H, W), coefficients per image."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, p_drop: float) -> torch.Tensor:
        shape = (x.size(0),) + (1,) * (x.dim() - 1)
        gate = torch.bernoulli(torch.full(shape, 1.0 - p_drop, device=x.device, dtype=x.dtype))
        alpha = torch.empty(shape, device=x.device, dtype=x.dtype).uniform_(-1.0, 1.0)
        ctx.save_for_backward(gate)
        return x * ShakeDropFunction.coefficient(gate, alpha)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        (gate,) = ctx.saved_tensors
        beta = torch.rand(gate.shape, device=grad_output.device, dtype=grad_output.dtype)
        return grad_output * ShakeDropFunction.coefficient(gate, beta), None

    @staticmethod
    def coefficient(gate: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """b + noise - b * noise for b in {0, 1}, computed exactly: 1 where b = 1, noise where b = 0."""
        return torch.where(gate > 0, torch.ones_like(noise), noise)


class ShakeDrop(nn.Module):
    """Scales a residual: random (see ShakeDropFunction) in training, by 1 - p at eval."""

    def __init__(self, p_drop: float) -> None:
        super().__init__()
        self.p_drop = p_drop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return ShakeDropFunction.apply(x, self.p_drop)
        return x * (1.0 - self.p_drop)

    def extra_repr(self) -> str:
        return f"p_drop={self.p_drop:.4f}"


class PyramidBasic(nn.Module):
    """BN-conv3x3-BN-ReLU-conv3x3-BN; zero-padded identity shortcut."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int, p_drop: float) -> None:
        super().__init__()
        self.out_channels = width * self.expansion
        self.branch = nn.Sequential(
            nn.BatchNorm2d(in_ch),
            nn.Conv2d(in_ch, width, 3, stride, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
        )
        self.pool = nn.AvgPool2d(2, 2) if stride > 1 else nn.Identity()
        self.shakedrop = ShakeDrop(p_drop) if p_drop > 0 else nn.Identity()

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x)

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        return F.pad(x, (0, 0, 0, 0, 0, self.out_channels - x.size(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shakedrop(self.residual(x)) + self.shortcut(x)


class PyramidBottleneck(PyramidBasic):
    """BN-conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1 (x4)-BN; zero-padded identity shortcut."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int, p_drop: float) -> None:
        nn.Module.__init__(self)
        self.out_channels = width * self.expansion
        self.branch = nn.Sequential(
            nn.BatchNorm2d(in_ch),
            nn.Conv2d(in_ch, width, 1, 1, 0, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, self.out_channels, 1, 1, 0, bias=False),
            nn.BatchNorm2d(self.out_channels),
        )
        self.pool = nn.AvgPool2d(2, 2) if stride > 1 else nn.Identity()
        self.shakedrop = ShakeDrop(p_drop) if p_drop > 0 else nn.Identity()


BLOCKS = {"basic": PyramidBasic, "bottleneck": PyramidBottleneck}


def pyramid_widths(base_channels: int, alpha: float, units: int) -> list[int]:
    """Width of units 1..units: round(base + alpha * i / units) (before the bottleneck's x4)."""
    return [int(round(base_channels + alpha * i / units)) for i in range(1, units + 1)]


class PyramidNet(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        depth: int = 110,
        block: str = "basic",
        alpha: float = 270,
        base_channels: int = 16,
        shakedrop_prob: float = 0.0,
    ) -> None:
        super().__init__()
        require(block in BLOCKS, "model.block", "must be basic or bottleneck", block)
        per_stage = 6 if block == "basic" else 9
        n = (depth - 2) // per_stage if isinstance(depth, int) else 0
        require(
            is_int(depth) and n >= 1 and n * per_stage + 2 == depth,
            "model.depth",
            f"PyramidNet with {block} blocks needs depth = {per_stage}n+2, n >= 1",
            depth,
        )
        require(is_number(alpha) and alpha >= 0,
                "model.alpha", "must be a number >= 0 (total widening over the network)", alpha)
        require(is_int(base_channels) and base_channels >= 1,
                "model.base_channels", "must be an int >= 1", base_channels)
        require(isinstance(shakedrop_prob, (int, float)) and 0 <= shakedrop_prob < 1,
                "model.shakedrop_prob", "must be in [0, 1) (final-unit ShakeDrop probability; 0 = off)",
                shakedrop_prob)

        unit = BLOCKS[block]
        total = 3 * n
        widths = pyramid_widths(base_channels, alpha, total)
        self.conv = nn.Conv2d(in_channels, base_channels, 3, 1, 1, bias=False)
        self.bn0 = nn.BatchNorm2d(base_channels)
        stages, in_ch, index = [], base_channels, 0
        for stride in (1, 2, 2):
            blocks = []
            for j in range(n):
                p_l = shakedrop_prob * (index + 1) / total
                blocks.append(unit(in_ch, widths[index], stride if j == 0 else 1, p_l))
                in_ch = blocks[-1].out_channels
                index += 1
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(in_ch)
        self.fc = nn.Linear(in_ch, num_classes)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.bn0(self.conv(x)))
        x = F.relu(self.bn(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
