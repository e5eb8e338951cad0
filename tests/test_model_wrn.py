"""WRN (Zagoruyko & Komodakis 2016): the paper's parameter counts, both input shapes, invalid
keys, pre-activation block with shared projection input, dropout between the convolutions,
`model.activation` / `model.norm`."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import compose_config
from cifarzoo.config import build
from cifarzoo.errors import ConfigError
from cifarzoo.models import count_parameters
from cifarzoo.models.wrn import WRN


def model_from_config(*overrides: str, channels: int = 3, classes: int = 10) -> nn.Module:
    cfg = compose_config(["model=wrn", *overrides])
    return build(cfg.model, in_channels=channels, num_classes=classes)


@pytest.mark.parametrize(("depth", "widen", "published"), [(16, 4, 2.7), (40, 4, 8.9), (16, 8, 11.0), (28, 10, 36.5)])
def test_parameter_counts_match_the_paper(depth, widen, published):
    model = model_from_config(f"model.depth={depth}", f"model.widen={widen}")
    assert round(count_parameters(model) / 1e6, 1) == published


def test_default_is_wrn_28_10_without_dropout():
    model = model_from_config()
    assert isinstance(model, WRN)
    assert [len(stage) for stage in model.stages] == [4, 4, 4]
    assert [stage[-1].conv2.out_channels for stage in model.stages] == [160, 320, 640]
    assert model.fc.in_features == 640
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())


@pytest.mark.parametrize("overrides", [["model.depth=10", "model.widen=2"], ["model.depth=10", "model.widen=1",
                                                                            "model.drop_rate=0.3"]])
@pytest.mark.parametrize(("channels", "size"), [(3, 32), (1, 28)])
def test_forward_backward_on_cifar_and_mnist_shapes(overrides, channels, size):
    model = model_from_config(*overrides, channels=channels, classes=100)
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 100)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_block_is_preactivated_and_projection_shares_the_preactivation():
    torch.manual_seed(0)
    model = model_from_config("model.depth=10", "model.widen=1").eval()
    relu = nn.functional.relu
    for block, in_ch in [(model.stages[0][0], 16), (model.stages[1][0], 16)]:
        for bn in (block.bn1, block.bn2):  # non-trivial BN statistics
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
        x = torch.randn(2, in_ch, 8, 8)
        pre = relu(block.bn1(x))
        residual = block.conv2(relu(block.bn2(block.conv1(pre))))
        if block is model.stages[1][0]:
            assert isinstance(block.shortcut, nn.Conv2d) and block.shortcut.kernel_size == (1, 1)
            expected = residual + block.shortcut(pre)  # 1x1 conv on the BN-ReLU output, no BN
        else:
            assert isinstance(block.shortcut, nn.Identity)
            expected = residual + x  # identity on the raw block input
        torch.testing.assert_close(block(x), expected)


def test_dropout_sits_between_the_convolutions_after_bn_relu():
    torch.manual_seed(0)
    model = model_from_config("model.depth=10", "model.widen=1", "model.drop_rate=0.5", "model.activation=gelu")
    block = model.stages[0][0]
    assert isinstance(block.dropout, nn.Dropout) and block.dropout.p == 0.5
    seen = {}
    block.conv1.register_forward_hook(lambda m, i, o: seen.__setitem__("conv1_out", o.detach()))
    block.conv2.register_forward_pre_hook(lambda m, i: seen.__setitem__("conv2_in", i[0].detach()))
    x = torch.randn(4, 3, 16, 16)
    model.train()(x)
    zeros = (seen["conv2_in"] == 0).float().mean().item()
    assert (seen["conv1_out"] != 0).all() and 0.4 < zeros < 0.6  # GELU gives no exact zeros; dropout does
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    assert (seen["conv2_in"] != 0).all()


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.depth=27"], "model.depth: WRN needs depth = 6n+4, n >= 1 (got 27)"),
    (["model.depth=4"], "model.depth: WRN needs depth = 6n+4, n >= 1"),
    (["model.widen=0"], "model.widen: must be an int >= 1"),
    (["model.widen=2.5"], "model.widen: must be an int >= 1"),
    (["model.drop_rate=1.0"], "model.drop_rate: must be a probability in [0, 1)"),
    (["model.drop_rate=-0.1"], "model.drop_rate: must be a probability in [0, 1)"),
    (["model.base_channels=0"], "model.base_channels: must be an int >= 1"),
    (["model.activation=tanh"], "model.activation: must be one of relu, leaky_relu, celu, gelu"),
    (["model.norm=none"], "model.norm: must be one of batch, instance, layer, group"),
])
def test_invalid_hyper_parameters_fail_with_the_rule(overrides, message):
    with pytest.raises(ConfigError) as error:
        model_from_config(*overrides)
    assert str(error.value).startswith(message)


NORM_TYPES = {"batch": nn.BatchNorm2d, "instance": nn.InstanceNorm2d, "layer": nn.GroupNorm, "group": nn.GroupNorm}
ACT_TYPES = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "celu": nn.CELU, "gelu": nn.GELU}


@pytest.mark.parametrize(("norm", "activation"), [("batch", "relu"), ("instance", "leaky_relu"),
                                                  ("layer", "celu"), ("group", "gelu")])
def test_activation_and_norm_options_replace_every_layer(norm, activation):
    model = model_from_config("model.depth=10", "model.widen=2", f"model.norm={norm}",
                              f"model.activation={activation}", channels=1)
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm))]
    acts = [m for m in model.modules() if isinstance(m, tuple(ACT_TYPES.values()))]
    assert norms and all(type(m) is NORM_TYPES[norm] for m in norms)
    assert acts and all(type(m) is ACT_TYPES[activation] for m in acts)
    if norm == "group":
        assert any(m.num_groups > 1 for m in norms)
    out = model(torch.randn(2, 1, 16, 16))
    out.sum().backward()
    assert out.shape == (2, 10) and all(p.grad is not None for p in model.parameters())
