"""hysts' VGG-like net (`model=vgg`): default layout and count, both input shapes, the keys."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import compose_config
from cifarzoo.config import build
from cifarzoo.errors import ConfigError
from cifarzoo.models import count_parameters
from cifarzoo.models.vgg import VGG

pytestmark = pytest.mark.usefixtures("one_thread")


SMALL = ["model.channels=[8,16,16,32,32]", "model.layers=[1,1,1,1,1]"]


def model_from_config(*overrides: str, channels: int = 3, num_classes: int = 10) -> nn.Module:
    cfg = compose_config(["model=vgg", *overrides])
    return build(cfg.model, in_channels=channels, num_classes=num_classes)


def test_default_is_hysts_vgg_15_bn_64():
    model = model_from_config()
    assert isinstance(model, VGG)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13 and convs[0].out_channels == 64 and convs[-1].out_channels == 512
    assert all(m.bias is not None for m in convs)  # hysts' convs keep their bias under BN
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 13
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 5
    assert count_parameters(model) == 14_728_266  # = kuangliu VGG-16 (BN); the study seed's "14.72M"


@pytest.mark.parametrize(("channels", "size"), [(3, 32), (1, 28)])
def test_forward_backward_on_cifar_and_mnist_shapes(channels, size):
    model = model_from_config(*SMALL, channels=channels, num_classes=7)
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_last_map_is_1x1_on_cifar_so_the_pooling_matches_hysts_flatten():
    model = model_from_config(*SMALL).eval()
    assert model.stages(torch.randn(2, 3, 32, 32)).shape == (2, 32, 1, 1)


def test_batch_norm_flag_and_stage_keys():
    with_bn = model_from_config(*SMALL)
    without = model_from_config(*SMALL, "model.batch_norm=false")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in without.modules())
    assert count_parameters(with_bn) - count_parameters(without) == 2 * (8 + 16 + 16 + 32 + 32)
    three_stages = model_from_config("model.channels=[8,16,32]", "model.layers=[2,1,3]")
    assert len(three_stages.stages) == 3 and three_stages.fc.in_features == 32
    assert sum(isinstance(m, nn.Conv2d) for m in three_stages.modules()) == 6
    gn = model_from_config(*SMALL, "model.norm=group", "model.activation=gelu")
    assert any(isinstance(m, nn.GroupNorm) for m in gn.modules()) and any(isinstance(m, nn.GELU) for m in gn.modules())


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.layers=[2,2,3]"], r"^model\.layers: needs one entry per stage"),
    (["model.channels=[64,0,256,512,512]"], r"^model\.channels: must be a non-empty list of ints >= 1"),
    (["model.layers=[]", "model.channels=[]"], r"^model\.channels: "),
    (["model.norm=weight"], r"^model\.norm: must be one of"),
    (["model.activation=swish"], r"^model\.activation: must be one of"),
])
def test_invalid_hyper_parameters_fail_with_the_rule(overrides, message):
    with pytest.raises(ConfigError, match=message):
        model_from_config(*overrides)
