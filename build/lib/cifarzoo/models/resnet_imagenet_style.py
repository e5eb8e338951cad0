"""ImageNet-layout ResNets at CIFAR resolution (He et al. 2015, "Deep Residual Learning for
Image Recognition", arXiv:1512.03385), as in kuangliu's pytorch-cifar and the
architecture-study seed (hongyaohongyao/train_cifar, models/resnet.py), the bottleneck
ResNet-50/101/152 of pytorch-cifar-tricks (pprp, model/resnet.py at 7bf6ee9, = kuangliu's), plus
the architecture-study seed's "resnext18" (`ResNeXtSmall`).

Structure: a 3x3 stem conv (stride 1, no max-pool) of 64*widen channels -> norm -> act; four
stages of basic blocks at (64, 128, 256, 512)*widen channels with strides (1, 2, 2, 2); global
average pool; linear. Basic block: conv3x3 -> norm -> act -> conv3x3 -> norm, plus the shortcut
(identity, or 1x1 conv + norm where the shape changes, "option B"), then act. Convs have no
bias. Blocks per stage by `depth` (= 2 * blocks + 2):

    depth 10: (1, 1, 1, 1)   the seed's resnet10
    depth 14: (2, 2, 1, 1)   the seed's "wider resnet14" (with widen 2: 21,063,818 params)
    depth 18: (2, 2, 2, 2)   ResNet-18: 11,173,962 params
    depth 34: (3, 4, 6, 3)   ResNet-34: 21,282,122 params

The seed's table truncates these to two decimals: 11.17 / 21.06 / 21.28M.

Depths 50, 101 and 152 use bottleneck blocks (He et al.'s Table 1; the tricks seed's "resnet50"):
conv1x1 (width) -> norm -> act -> conv3x3 (width, the stage's stride) -> norm -> act -> conv1x1
(4 x width) -> norm, plus the shortcut (1x1 conv + norm where the shape changes), then act; the
stages output (256, 512, 1024, 2048)*widen channels. Same stem, strides, pool and head:

    depth 50:  (3, 4, 6, 3)    23,520,842 params
    depth 101: (3, 4, 23, 3)   42,512,970 params
    depth 152: (3, 8, 36, 3)   58,156,618 params

exactly the counts of the tricks seed's ResNet50/101/152 for 10 classes.

`ResNeXtSmall` (the seed's "resnext18", 10,021,194 params = its 10.02M): the same network whose
blocks' first conv widens to `inner_widen` x the stage width and whose second conv is grouped
(`cardinality` groups) back to the stage width. That is the seed's construction, not Xie et
al.'s bottleneck ResNeXt (see `model=resnext` for that).

The seed's code differs from the textbook network in two ways; the defaults build the textbook
network (He et al., kuangliu), two switches build the seed's:
- `identity_shortcuts: false`: the seed adds a block's shortcut only when it is a projection
  (`if self.shortcut:` with `None` for identity), so its identity blocks have no skip
  connection at all; only the first block of stages 2-4 is residual. Default true: every block
  is residual. Parameter counts are the same either way.
- `norm_scope: stem`: the seed passes its norm layer only to the stem (`_make_layer` does not
  hand it on; the blocks always use BatchNorm), so its instance/layer/group-norm rows change one
  layer. Default `all`: `model.norm` replaces every norm layer. The seed's InstanceNorm has no
  affine parameters (128 fewer with norm_scope stem); `layers.py`'s has.
- Init: He fan-out normal (`init_weights`); the seed/kuangliu keep PyTorch's default init
  (`+model.init=pytorch_default`).
- `widen` may be fractional (e.g. 0.25 for tests) as long as 64*widen is a whole number.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from cifarzoo.errors import is_number, require
from cifarzoo.models.init import init_weights
from cifarzoo.models.layers import check_activation, check_norm

STAGE_BLOCKS: dict[int, tuple[int, int, int, int]] = {
    10: (1, 1, 1, 1),
    14: (2, 2, 1, 1),
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
}
BOTTLENECK_STAGE_BLOCKS: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}


class BasicBlock(nn.Module):
    """conv3x3 -> norm -> act -> conv3x3 (grouped if cardinality > 1) -> norm, + shortcut, act."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, inner_ch: int, groups: int,
                 norm: Callable[[int], nn.Module], act: Callable[[], nn.Module], identity_shortcut: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, inner_ch, 3, stride, 1, bias=False)
        self.bn1 = norm(inner_ch)
        self.act1 = act()
        self.conv2 = nn.Conv2d(inner_ch, out_ch, 3, 1, 1, groups=groups, bias=False)
        self.bn2 = norm(out_ch)
        self.act2 = act()
        # identity_shortcut=False: a block whose shortcut would be the identity has none (the seed's plain blocks).
        self.shortcut: nn.Module | None = nn.Identity() if identity_shortcut else None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, 0, bias=False), norm(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.shortcut is not None:
            y = y + self.shortcut(x)
        return self.act2(y)


class Bottleneck(nn.Module):
    """conv1x1 -> norm -> act -> conv3x3 (stride) -> norm -> act -> conv1x1 (x4) -> norm, + shortcut, act."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int, norm: Callable[[int], nn.Module],
                 act: Callable[[], nn.Module], identity_shortcut: bool = True) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.branch = nn.Sequential(
            nn.Conv2d(in_ch, width, 1, bias=False), norm(width), act(),
            nn.Conv2d(width, width, 3, stride, 1, bias=False), norm(width), act(),
            nn.Conv2d(width, out_ch, 1, bias=False), norm(out_ch),
        )
        self.act = act()
        self.shortcut: nn.Module | None = nn.Identity() if identity_shortcut else None  # as BasicBlock
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, 0, bias=False), norm(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.branch(x)
        return self.act(y if self.shortcut is None else y + self.shortcut(x))


def check_widen(widen: object) -> int:
    ok = is_number(widen) and widen > 0
    ok = ok and float(64 * widen).is_integer()
    require(ok, "model.widen", "must be > 0 with 64*widen a whole number (stem width)", widen)
    return int(64 * widen)


class ResNetImageNetStyle(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        depth: int = 18,
        widen: float = 1,
        activation: str = "relu",
        norm: str = "batch",
        identity_shortcuts: bool = True,
        norm_scope: str = "all",
    ) -> None:
        super().__init__()
        self._build(in_channels, num_classes, depth, widen, activation, norm, cardinality=1, inner_widen=1,
                    identity_shortcuts=identity_shortcuts, norm_scope=norm_scope,
                    depths=STAGE_BLOCKS | BOTTLENECK_STAGE_BLOCKS)

    def _build(self, in_channels: int, num_classes: int, depth: int, widen: float, activation: str, norm: str,
               cardinality: int, inner_widen: int, identity_shortcuts: bool = True, norm_scope: str = "all",
               depths: dict[int, tuple[int, int, int, int]] = STAGE_BLOCKS) -> None:
        names = ", ".join(str(d) for d in depths)
        require(isinstance(depth, int) and depth in depths, "model.depth", f"must be one of {names}", depth)
        base = check_widen(widen)
        require(isinstance(cardinality, int) and cardinality >= 1, "model.cardinality", "must be an int >= 1",
                cardinality)
        require(isinstance(inner_widen, int) and inner_widen >= 1, "model.inner_widen", "must be an int >= 1",
                inner_widen)
        require(base % cardinality == 0, "model.cardinality",
                f"must divide the stem width 64*widen = {base} (grouped conv)", cardinality)
        make_norm, make_act = check_norm(norm), check_activation(activation)
        require(isinstance(identity_shortcuts, bool), "model.identity_shortcuts", "must be true or false",
                identity_shortcuts)
        require(norm_scope in ("all", "stem"), "model.norm_scope", "must be all or stem", norm_scope)
        block_norm = make_norm if norm_scope == "all" else check_norm("batch")

        self.conv = nn.Conv2d(in_channels, base, 3, 1, 1, bias=False)
        self.bn = make_norm(base)
        self.act = make_act()
        stages, in_ch = [], base
        for i, (n, stride) in enumerate(zip(depths[depth], (1, 2, 2, 2))):
            width = base * 2**i
            blocks: list[nn.Module] = []
            for j in range(n):
                s = stride if j == 0 else 1
                if depth in BOTTLENECK_STAGE_BLOCKS:
                    blocks.append(Bottleneck(in_ch, width, s, block_norm, make_act, identity_shortcuts))
                    in_ch = width * Bottleneck.expansion
                else:
                    blocks.append(BasicBlock(in_ch, width, s, width * inner_widen, cardinality, block_norm, make_act,
                                             identity_shortcuts))
                    in_ch = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(in_ch, num_classes)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.act(self.bn(self.conv(x))))
        return self.fc(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))


class ResNeXtSmall(ResNetImageNetStyle):
    """The seed's "resnext18": ResNet-18 layout, block conv1 widened x`inner_widen`, conv2 grouped."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        depth: int = 18,
        cardinality: int = 32,
        inner_widen: int = 2,
        widen: float = 1,
        activation: str = "relu",
        norm: str = "batch",
        identity_shortcuts: bool = True,
        norm_scope: str = "all",
    ) -> None:
        nn.Module.__init__(self)
        self._build(in_channels, num_classes, depth, widen, activation, norm, cardinality, inner_widen,
                    identity_shortcuts, norm_scope)
