"""ResNet (He et al. 2015): the paper's parameter counts with option-A shortcuts, option B,
both input shapes, invalid keys, shortcut semantics; `model.activation` / `model.norm` for the
ResNet and ResNet-preact options."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import compose_config
from cifarzoo.config import build
from cifarzoo.errors import ConfigError
from cifarzoo.models import count_parameters
from cifarzoo.models.resnet import ResNet, ZeroPadShortcut


def model_from_config(*overrides: str, channels: int = 3, classes: int = 10) -> nn.Module:
    cfg = compose_config(["model=resnet", *overrides])
    return build(cfg.model, in_channels=channels, num_classes=classes)


@pytest.mark.parametrize(("depth", "published", "digits"), [(20, 0.27, 2), (56, 0.85, 2), (110, 1.7, 1)])
def test_parameter_counts_match_the_paper_with_option_a(depth, published, digits):
    model = model_from_config(f"model.depth={depth}", "model.shortcut=A")
    assert round(count_parameters(model) / 1e6, digits) == published


def test_default_is_resnet_20_with_projection_shortcuts():
    model = model_from_config()
    assert isinstance(model, ResNet)
    assert count_parameters(model) == 272_474
    first_of_stage2 = model.stages[1][0]
    conv, bn = first_of_stage2.shortcut
    assert isinstance(conv, nn.Conv2d) and conv.stride == (2, 2) and isinstance(bn, nn.BatchNorm2d)
    # B = A + two 1x1 conv + BN projections (16->32, 32->64)
    a = model_from_config("model.shortcut=A")
    assert count_parameters(model) - count_parameters(a) == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


@pytest.mark.parametrize("overrides", [
    ["model.depth=8"],
    ["model.depth=8", "model.shortcut=A"],
    ["model.depth=11", "model.block=bottleneck"],
    ["model.depth=11", "model.block=bottleneck", "model.shortcut=A"],
])
@pytest.mark.parametrize(("channels", "size"), [(3, 32), (1, 28)])
def test_forward_backward_on_cifar_and_mnist_shapes(overrides, channels, size):
    model = model_from_config(*overrides, channels=channels, classes=7)
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_bottleneck_widths_follow_the_paper():
    model = model_from_config("model.depth=164", "model.block=bottleneck")
    assert [stage[0].conv3.out_channels for stage in model.stages] == [64, 128, 256]
    assert model.stages[0][0].conv2.out_channels == 16
    assert round(count_parameters(model) / 1e6, 1) == 1.7


def test_option_a_is_a_zero_padded_subsampled_identity():
    model = model_from_config("model.depth=8", "model.shortcut=A")
    shortcut = model.stages[1][0].shortcut
    assert isinstance(shortcut, ZeroPadShortcut) and not list(shortcut.parameters())
    x = torch.randn(2, 16, 9, 9)
    y = shortcut(x)
    assert y.shape == (2, 32, 5, 5)  # same spatial size as the stride-2 3x3 conv gives
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2]) and not y[:, 16:].any()


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.depth=21"], "model.depth: ResNet with basic blocks needs depth = 6n+2, n >= 1"),
    (["model.depth=2"], "model.depth: ResNet with basic blocks needs depth = 6n+2, n >= 1"),
    (["model.depth=22", "model.block=bottleneck"], "model.depth: ResNet with bottleneck blocks needs depth = 9n+2"),
    (["model.block=wide"], "model.block: must be basic or bottleneck"),
    (["model.shortcut=C"], "model.shortcut: must be A (zero-pad identity) or B (1x1 conv + BN)"),
    (["model.base_channels=0"], "model.base_channels: must be an int >= 1"),
    (["model.activation=swish"], "model.activation: must be one of relu, leaky_relu, celu, gelu"),
    (["model.norm=batchnorm"], "model.norm: must be one of batch, instance, layer, group"),
])
def test_invalid_hyper_parameters_fail_with_the_rule(overrides, message):
    with pytest.raises(ConfigError) as error:
        model_from_config(*overrides)
    assert str(error.value).startswith(message)


# model.activation / model.norm for the ResNet families (WRN and SE-ResNet-preact test theirs).
SMALL = {"resnet": "model.depth=8", "resnet_preact": "model.depth=8"}
NORM_TYPES = {"batch": nn.BatchNorm2d, "instance": nn.InstanceNorm2d, "layer": nn.GroupNorm, "group": nn.GroupNorm}
ACT_TYPES = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "celu": nn.CELU, "gelu": nn.GELU}


def _build(option: str, *overrides: str, channels: int = 3) -> nn.Module:
    cfg = compose_config([f"model={option}", SMALL[option], *overrides])
    return build(cfg.model, in_channels=channels, num_classes=10)


def _run(model: nn.Module, channels: int, size: int) -> None:
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("option", list(SMALL))
@pytest.mark.parametrize("norm", list(NORM_TYPES))
def test_norm_option_replaces_every_batch_norm(option, norm):
    model = _build(option, f"model.norm={norm}", channels=1)
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm))]
    assert norms and all(type(m) is NORM_TYPES[norm] for m in norms)
    if norm == "layer":
        assert all(m.num_groups == 1 for m in norms)
    if norm == "group":
        assert any(m.num_groups > 1 for m in norms)
    _run(model, 1, 16)


@pytest.mark.parametrize("option", list(SMALL))
@pytest.mark.parametrize("activation", list(ACT_TYPES))
def test_activation_option_replaces_every_relu(option, activation):
    model = _build(option, f"model.activation={activation}")
    acts = [m for m in model.modules() if isinstance(m, tuple(ACT_TYPES.values()))]
    assert acts and all(type(m) is ACT_TYPES[activation] for m in acts)
    _run(model, 3, 16)


@pytest.mark.parametrize("option", list(SMALL))
def test_activation_and_norm_change_the_function_not_the_defaults(option):
    torch.manual_seed(0)
    base = _build(option).eval()
    assert count_parameters(_build(option, "model.norm=group")) == count_parameters(base)
    x = torch.randn(2, 3, 16, 16)
    for override in ("model.activation=gelu", "model.norm=layer"):
        other = _build(option, override).eval()
        other.load_state_dict(base.state_dict(), strict=False)
        assert not torch.allclose(base(x), other(x))
