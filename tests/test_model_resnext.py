"""ResNeXt (Xie et al. 2017): the paper's parameter counts, both input shapes, the block
structure and the one-line errors for bad hyper-parameters."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import compose_config
from cifarzoo.config import build
from cifarzoo.errors import ConfigError
from cifarzoo.models import count_parameters
from cifarzoo.models.resnext import ResNeXt

SMALL = ["model.depth=11", "model.cardinality=2", "model.base_channels=4"]


def model_from_config(*overrides: str, channels: int = 3, classes: int = 10) -> torch.nn.Module:
    cfg = compose_config(["model=resnext", *overrides])
    return build(cfg.model, in_channels=channels, num_classes=classes)


@pytest.mark.parametrize(("cardinality", "exact", "millions"), [
    (8, 34_426_698, 34.4),
    (16, 68_155_210, 68.1),
])
def test_parameter_counts_match_the_paper(cardinality, exact, millions):
    # Xie et al. 2017, table 7 (CIFAR): ResNeXt-29 8x64d 34.4M, 16x64d 68.1M. The official
    # architecture has 68.155M (bearpaw/pytorch-classification measures 68.16M too): the paper
    # truncates to one decimal, so we compare the count truncated to 0.1M.
    count = count_parameters(model_from_config("model.depth=29", f"model.cardinality={cardinality}",
                                               "model.base_channels=64"))
    assert count == exact
    assert math.floor(count / 1e5) / 10 == millions


def test_default_is_resnext_29_8x64d():
    model = model_from_config()
    assert isinstance(model, ResNeXt)
    assert count_parameters(model) == 34_426_698


@pytest.mark.parametrize(("channels", "size"), [(3, 32), (1, 28)])
def test_forward_backward_on_cifar_and_mnist_shapes(channels, size):
    model = model_from_config(*SMALL, channels=channels)
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_block_structure_follows_the_official_cifar_network():
    model = model_from_config("model.depth=20", "model.cardinality=4", "model.base_channels=8")
    assert model.stem[0].out_channels == 64 and model.stem[0].kernel_size == (3, 3)
    assert [len(stage) for stage in model.stages] == [2, 2, 2]  # (20 - 2) / 9
    for i, stage in enumerate(model.stages):
        first = stage[0]
        conv1, grouped, conv3 = first.residual[0], first.residual[3], first.residual[6]
        assert conv1.out_channels == 4 * 8 * 2**i  # cardinality x group width, doubled per stage
        assert grouped.groups == 4 and grouped.kernel_size == (3, 3)
        assert grouped.stride == ((1, 1) if i == 0 else (2, 2))
        assert conv3.out_channels == 256 * 2**i  # stage outputs 256, 512, 1024
        assert isinstance(first.shortcut[0], torch.nn.Conv2d)  # projection where the shape changes
        assert isinstance(first.shortcut[1], torch.nn.BatchNorm2d)
        assert isinstance(stage[1].shortcut, torch.nn.Identity)
    assert model.fc.in_features == 1024


@pytest.mark.parametrize(("override", "message"), [
    ("model.depth=30", "model.depth: ResNeXt needs depth = 9n+2, n >= 1 (got 30)"),
    ("model.depth=2", "model.depth: ResNeXt needs depth = 9n+2, n >= 1 (got 2)"),
    ("model.cardinality=0", "model.cardinality: must be an int >= 1 (got 0)"),
    ("model.base_channels=0", "model.base_channels: must be an int >= 1"),
])
def test_invalid_hyper_parameters_fail_with_the_rule(override, message):
    with pytest.raises(ConfigError) as error:
        model_from_config(override)
    assert str(error.value).startswith(message)
