"""Layer factories for the `model.norm` and `model.activation` keys (the architecture study
varies them). Names are the config values; an unknown name is a one-line ConfigError. Also the
width rounding of the width-multiplied mobile families."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from cifarzoo.errors import require

NORMS: dict[str, Callable[[int], nn.Module]] = {
    "batch": nn.BatchNorm2d,
    "instance": lambda c: nn.InstanceNorm2d(c, affine=True),
    "layer": lambda c: nn.GroupNorm(1, c),  # LayerNorm over (C, H, W), as for conv nets
    "group": lambda c: nn.GroupNorm(min(32, c), c) if c % min(32, c) == 0 else nn.GroupNorm(1, c),
}

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.01, inplace=True),
    "celu": lambda: nn.CELU(inplace=True),
    "gelu": nn.GELU,
}


def check_norm(name: str) -> Callable[[int], nn.Module]:
    require(name in NORMS, "model.norm", f"must be one of {', '.join(NORMS)}", name)
    return NORMS[name]


def check_activation(name: str) -> Callable[[], nn.Module]:
    require(name in ACTIVATIONS, "model.activation", f"must be one of {', '.join(ACTIVATIONS)}", name)
    return ACTIVATIONS[name]


def round_width(width: int, multiplier: float, divisor: int = 8) -> int:
    """`width * multiplier` to a multiple of `divisor`, never more than 10% down: the rounding of
    MobileNetV2's and EfficientNet's reference code (`_make_divisible` / `round_filters`)."""
    scaled = width * multiplier
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)
