"""`+model.init` / `+model.bn_weight_init` on every model family: what each scheme initialises
(weight statistics, biases, norm layers), that the defaults leave today's models untouched, and
one-line errors."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from omegaconf import DictConfig
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from conftest import QUICK, compose_config
from test_model_zoo import OPTIONS, SMALL
from cifarzoo.build import build_components
from cifarzoo.config import build, build_model
from cifarzoo.errors import ConfigError
from cifarzoo.models import count_parameters

pytestmark = pytest.mark.usefixtures("one_thread")

SCHEMES = ["kaiming_fan_in", "kaiming_fan_out", "xavier_uniform", "xavier_normal", "pytorch_default"]


@functools.lru_cache(maxsize=None)
def model_config(option: str, *extra: str) -> DictConfig:
    return compose_config([f"model={option}", *SMALL[option], *extra]).model


def model_of(option: str, *extra: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(model_config(option, *extra), 3, 10)


@pytest.mark.parametrize("option", OPTIONS)
def test_defaults_are_todays_init_and_draw_no_random_numbers(option):
    torch.manual_seed(0)
    today = build(model_config(option), in_channels=3, num_classes=10)  # the family's constructor alone
    after_today = torch.rand(3)
    explicit = model_of(option, "+model.init=default", "+model.bn_weight_init=one")
    assert torch.equal(torch.rand(3), after_today)  # same random stream after building
    assert count_parameters(explicit) == count_parameters(today)
    for (name, a), b in zip(today.state_dict().items(), explicit.state_dict().values()):
        assert torch.equal(a, b), name
    assert all(torch.equal(a, b) for a, b in zip(model_of(option).state_dict().values(), today.state_dict().values()))


@pytest.mark.parametrize(("option", "scheme"), [(o, SCHEMES[i % len(SCHEMES)]) for i, o in enumerate(OPTIONS)])
def test_every_family_takes_the_schemes(option, scheme):
    model = model_of(option, f"+model.init={scheme}", "+model.bn_weight_init=uniform")
    default = model_of(option)
    assert count_parameters(model) == count_parameters(default)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    default_convs = [m for m in default.modules() if isinstance(m, nn.Conv2d)]
    assert any(not torch.equal(a.weight, b.weight) for a, b in zip(convs, default_convs))
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.weight is not None]
    for bn in bns:  # U(0, 1) weights, zero bias, whatever the scheme
        assert 0 <= bn.weight.min() and bn.weight.max() < 1 and not bn.bias.any()
        assert bn.weight.numel() == 1 or bn.weight.std() > 0  # tiny test widths can leave one channel
    if scheme != "pytorch_default":
        assert not any(m.bias.any() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
                       and m.bias is not None)


def big_layers(scheme: str) -> tuple[nn.Conv2d, nn.Linear, nn.BatchNorm2d]:
    """The first 128->256 conv, the classifier and a BN of a VGG with wide stages (enough weights
    for tight statistics)."""
    model = model_of("vgg", "model.channels=[128,256]", "model.layers=[1,1]", f"+model.init={scheme}")
    return model.stages[1][0], model.fc, model.stages[0][1]


def test_kaiming_schemes_draw_he_normal_convs_over_fan_in_or_out_and_leave_the_classifier():
    fan_in, fan_out = 128 * 9, 256 * 9
    for scheme, fan in (("kaiming_fan_in", fan_in), ("kaiming_fan_out", fan_out)):
        conv, fc, bn = big_layers(scheme)
        assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan), rel=0.02)
        assert conv.weight.abs().max() > 3 * math.sqrt(2 / fan)  # normal, not uniform
        assert not conv.bias.any() and not fc.bias.any()
        assert fc.weight.abs().max() <= 1 / math.sqrt(256)  # PyTorch's default U(+-1/sqrt(fan_in)) kept
        assert torch.equal(bn.weight, torch.ones(128)) and not bn.bias.any()


def test_xavier_schemes_draw_glorot_convs_and_linear_weights():
    conv_bound = math.sqrt(6 / (128 * 9 + 256 * 9))
    fc_bound = math.sqrt(6 / (256 + 10))
    conv, fc, _ = big_layers("xavier_uniform")
    assert conv.weight.abs().max() <= conv_bound and conv.weight.std().item() == pytest.approx(conv_bound / math.sqrt(3),
                                                                                              rel=0.02)
    assert fc.weight.abs().max() <= fc_bound and fc.weight.abs().max() > 0.8 * fc_bound
    conv, fc, _ = big_layers("xavier_normal")
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (128 * 9 + 256 * 9)), rel=0.02)
    assert conv.weight.abs().max() > conv_bound  # normal, not uniform
    assert fc.weight.std().item() == pytest.approx(math.sqrt(2 / (256 + 10)), rel=0.1)


def test_pytorch_default_is_each_layers_own_reset():
    conv, fc, bn = big_layers("pytorch_default")
    bound = 1 / math.sqrt(128 * 9)  # kaiming_uniform(a=sqrt(5)) and the bias bound
    assert conv.weight.abs().max() <= bound and conv.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    assert conv.bias.abs().max() <= bound and conv.bias.any()  # hysts'/cifarzoo's init zeroes it
    assert fc.bias.any() and torch.equal(bn.weight, torch.ones(128))


def test_bn_weight_uniform_alone_keeps_the_familys_convs():
    uniform, default = model_of("wrn", *["+model.bn_weight_init=uniform"]), model_of("wrn")
    convs = [(a.weight, b.weight) for a, b in zip(uniform.modules(), default.modules()) if isinstance(a, nn.Conv2d)]
    assert all(torch.equal(a, b) for a, b in convs)
    weights = torch.cat([m.weight for m in uniform.modules() if isinstance(m, nn.BatchNorm2d)])
    assert weights.mean().item() == pytest.approx(0.5, abs=0.1) and 0 <= weights.min() and weights.max() < 1


@pytest.mark.parametrize(("override", "message"), [
    ("+model.init=he", r"^model.init: must be one of default, kaiming_fan_in, kaiming_fan_out, xavier_uniform, "
                       r"xavier_normal, pytorch_default \(got 'he'\)$"),
    ("+model.bn_weight_init=zero", r"^model.bn_weight_init: must be one of one, uniform \(got 'zero'\)$"),
])
def test_bad_values_are_one_line_config_errors_before_training(override, message):
    with pytest.raises(ConfigError, match=message):
        build_components(compose_config([*QUICK, override]))


def test_a_run_builds_its_model_with_the_scheme():
    c = build_components(compose_config([*QUICK, "model.depth=8", "+model.init=xavier_uniform"]))
    conv = next(m for m in c.model.modules() if isinstance(m, nn.Conv2d) and m.in_channels == 16)
    assert conv.weight.abs().max() <= math.sqrt(6 / (16 * 9 + conv.out_channels * 9))
