"""Layer factories and checks shared by the families: the `model.norm` / `model.activation` keys
(the architecture study varies them), rate and width checks, variant presets, the drop-path
schedule, and the width rounding of the width-multiplied mobile families. An unknown or bad value
is a one-line ConfigError."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from cifarzoo.errors import is_int, is_number, require

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


def check_positive_ints(**values: object) -> None:
    """`model.<key>`: an int >= 1 (or a list of them)."""
    for key, value in values.items():
        items = value if isinstance(value, (list, tuple)) else [value]
        require(bool(items) and all(is_int(v) and v >= 1 for v in items), f"model.{key}",
                "must be an int >= 1" if items is value else "must be a list of ints >= 1", value)


def check_rates(**values: object) -> None:
    """`model.<key>`: a probability in [0, 1) (dropout and drop-path rates)."""
    for key, value in values.items():
        require(is_number(value) and 0 <= value < 1, f"model.{key}", "must be a number in [0, 1)", value)


def pick_variant(variants: dict[str, dict], variant: object) -> dict:
    """The preset hyper-parameters of `model.variant` (Hydra reads `model.variant=0` as an int)."""
    require(str(variant) in variants, "model.variant", f"must be one of {', '.join(variants)}", variant)
    return variants[str(variant)]


def drop_path_rates(rate: float, blocks: int) -> list[float]:
    """Stochastic-depth rate per residual block, rising linearly from 0 to `rate` (DeiT, Swin, timm)."""
    return [rate * i / max(blocks - 1, 1) for i in range(blocks)]


def round_width(width: int, multiplier: float, divisor: int = 8) -> int:
    """`width * multiplier` to a multiple of `divisor`, never more than 10% down: the rounding of
    MobileNetV2's and EfficientNet's reference code (`_make_divisible` / `round_filters`)."""
    scaled = width * multiplier
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)
