"""Weight initialisation: each family's own (`init_weights`, as the reference implementations)
and the schemes `model.init` / `model.bn_weight_init` choose for any family (`apply_init`).

`apply_init` runs after a model is built (`cifarzoo.config.build_model`), so every family,
including ones added later, takes the keys without a line of its own. What each scheme sets:

    scheme            Conv2d weight                  Linear weight        conv/linear biases
    default           the family's own init, untouched (no random numbers are drawn)
    kaiming_fan_in    He normal, std sqrt(2/fan_in)  PyTorch's default    0
    kaiming_fan_out   He normal, std sqrt(2/fan_out) PyTorch's default    0
    xavier_uniform    Glorot uniform (gain 1)        Glorot uniform       0
    xavier_normal     Glorot normal (gain 1)         Glorot normal        0
    pytorch_default   each layer's reset_parameters(): PyTorch's own init of every conv,
                      linear and norm layer (Kaiming-uniform a=sqrt(5) weights, uniform biases)

The Kaiming schemes leave the linear weights at PyTorch's default, as hysts' code of the seeds'
tables did (WRN: fan_in; the other families fan_out) and the tricks seed's shake-shake (fan_in);
the Xavier schemes cover the linear layers too, as the tricks seed's WRN. "Linear" is every
nn.Linear (the classifier, and e.g. SE blocks' FC layers). Every scheme but `default` sets
BatchNorm (and GroupNorm/InstanceNorm/LayerNorm) weight 1 and bias 0.

`bn_weight_init`: `one` leaves BatchNorm weights as the scheme set them (1 for every family and
scheme); `uniform` draws every BatchNorm weight from U(0, 1) (hysts' VGG and WRN), bias 0.
It applies to BatchNorm layers only (as hysts), after `init`, whatever `init` is.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from cifarzoo.errors import require

_NORMS = (_BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)


def init_weights(module: nn.Module) -> None:
    """He (fan-out) normal for convolutions, BN weight 1 / bias 0, zero classifier bias."""
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
        if module.weight is not None:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def _kaiming(mode: str) -> Callable[[nn.Module], None]:
    def init(module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode=mode, nonlinearity="relu")
        _zero_bias_unit_norm(module)

    return init


def _xavier(fill: Callable) -> Callable[[nn.Module], None]:
    def init(module: nn.Module) -> None:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            fill(module.weight)
        _zero_bias_unit_norm(module)

    return init


def _zero_bias_unit_norm(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
        nn.init.zeros_(module.bias)
    elif isinstance(module, _NORMS) and getattr(module, "weight", None) is not None:
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def _pytorch_default(module: nn.Module) -> None:
    reset = getattr(module, "reset_parameters", None)
    if isinstance(module, (nn.Conv2d, nn.Linear, *_NORMS)) and reset is not None:
        reset()


INIT_SCHEMES: dict[str, Callable[[nn.Module], None] | None] = {
    "default": None,
    "kaiming_fan_in": _kaiming("fan_in"),
    "kaiming_fan_out": _kaiming("fan_out"),
    "xavier_uniform": _xavier(nn.init.xavier_uniform_),
    "xavier_normal": _xavier(nn.init.xavier_normal_),
    "pytorch_default": _pytorch_default,
}
BN_WEIGHT_INITS = ("one", "uniform")


def apply_init(model: nn.Module, init: str = "default", bn_weight_init: str = "one") -> nn.Module:
    """Re-initialise `model` in place by `init` and `bn_weight_init` (module docstring); the
    defaults leave it untouched and draw no random numbers."""
    require(init in INIT_SCHEMES, "model.init", f"must be one of {', '.join(INIT_SCHEMES)}", init)
    require(bn_weight_init in BN_WEIGHT_INITS, "model.bn_weight_init", f"must be one of {', '.join(BN_WEIGHT_INITS)}",
            bn_weight_init)
    scheme = INIT_SCHEMES[init]
    if scheme is not None:
        model.apply(scheme)
    if bn_weight_init == "uniform":
        for module in model.modules():
            if isinstance(module, _BatchNorm) and module.weight is not None:
                nn.init.uniform_(module.weight, 0.0, 1.0)
                nn.init.zeros_(module.bias)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
