"""ResNet-preact: the paper's parameter counts, both input shapes, and the ablation flags."""

from __future__ import annotations

import pytest
import torch

from conftest import compose_config
from cifarzoo.config import build
from cifarzoo.models import count_parameters
from cifarzoo.models.resnet_preact import ResNetPreAct


def model_from_config(*overrides: str, channels: int = 3) -> torch.nn.Module:
    cfg = compose_config(list(overrides))
    return build(cfg.model, in_channels=channels, num_classes=10)


@pytest.mark.parametrize(("overrides", "millions"), [
    (["model.depth=164", "model.block=bottleneck"], 1.7),  # He et al. 2016, table 3
    (["model.depth=110"], 1.7),
])
def test_parameter_counts_match_the_paper(overrides, millions):
    assert round(count_parameters(model_from_config(*overrides)) / 1e6, 1) == millions


def test_default_is_resnet_preact_20():
    model = model_from_config()
    assert isinstance(model, ResNetPreAct)
    assert count_parameters(model) == 272_282  # 0.27M, as ResNet-20


@pytest.mark.parametrize(("channels", "size"), [(3, 32), (1, 28)])
def test_forward_backward_on_cifar_and_mnist_shapes(channels, size):
    model = model_from_config("model.depth=8", channels=channels)
    out = model(torch.randn(4, channels, size, size))
    assert out.shape == (4, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_widen_scales_every_stage():
    narrow = model_from_config("model.depth=8")
    wide = model_from_config("model.depth=8", "model.widen=4")
    assert wide.conv.out_channels == 64 and wide.fc.in_features == 256
    assert count_parameters(wide) > 10 * count_parameters(narrow)


def test_ablation_flags_change_the_block():
    torch.manual_seed(0)
    base = model_from_config("model.depth=8", "model.preact_stage=[true,false,false]")
    last_bn = model_from_config("model.depth=8", "model.add_last_bn=true")
    assert count_parameters(last_bn) > count_parameters(base)
    assert isinstance(last_bn.stages[0][0].last_bn, torch.nn.BatchNorm2d)
    x = torch.randn(2, 3, 32, 32)
    no_relu = model_from_config("model.depth=8", "model.preact_stage=[true,false,false]", "model.remove_first_relu=true")
    no_relu.load_state_dict(base.state_dict())
    assert not torch.allclose(base(x), no_relu(x))  # same weights, different block
    preact_all = model_from_config("model.depth=8")
    preact_all.load_state_dict(base.state_dict())
    assert not torch.allclose(base(x), preact_all(x))  # shortcut taken after BN-ReLU in stages 2, 3
    assert base.stages[1][0].preact_shortcut is False and preact_all.stages[1][0].preact_shortcut is True
