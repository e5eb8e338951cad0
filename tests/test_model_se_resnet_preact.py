"""SE-ResNet-preact (Hu et al. SENet on ResNet-preact): reuses ResNet-preact, the SE module
gates the residual branch before the addition, its parameter cost, keys and errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import compose_config
from cifarzoo.config import build
from cifarzoo.errors import ConfigError
from cifarzoo.models import count_parameters
from cifarzoo.models.resnet_preact import PreActBlock, PreActBottleneck, ResNetPreAct
from cifarzoo.models.se_resnet_preact import SEResNetPreAct, SqueezeExcitation


def build_option(option: str, *overrides: str, channels: int = 3) -> nn.Module:
    cfg = compose_config([f"model={option}", *overrides])
    return build(cfg.model, in_channels=channels, num_classes=10)


def se_cost(widths_and_blocks: list[tuple[int, int]], reduction: int) -> int:
    """FC C -> C//r and FC C//r -> C, with biases, per block."""
    return sum(n * (2 * c * (c // reduction) + c // reduction + c) for c, n in widths_and_blocks)


def test_reuses_resnet_preact_and_adds_the_se_parameters():
    plain, se = build_option("resnet_preact"), build_option("se_resnet_preact")
    assert isinstance(se, SEResNetPreAct) and isinstance(se, ResNetPreAct)
    assert all(isinstance(b, PreActBlock) and isinstance(b.se, SqueezeExcitation) for s in se.stages for b in s)
    assert count_parameters(plain) == 272_282
    assert count_parameters(se) - count_parameters(plain) == se_cost([(16, 3), (32, 3), (64, 3)], 16) == 2373


def test_bottleneck_and_reduction():
    plain = build_option("resnet_preact", "model.depth=164", "model.block=bottleneck")
    se = build_option("se_resnet_preact", "model.depth=164", "model.block=bottleneck", "model.se_reduction=8")
    assert all(isinstance(b, PreActBottleneck) for s in se.stages for b in s)
    assert se.stages[2][0].se.fc1.out_features == 256 // 8
    assert count_parameters(se) - count_parameters(plain) == se_cost([(64, 18), (128, 18), (256, 18)], 8)


def test_every_resnet_preact_key_is_available():
    cfg = compose_config(["model=se_resnet_preact"])
    plain_keys = set(compose_config(["model=resnet_preact"]).model) - {"_target_"}
    assert plain_keys | {"se_reduction"} == set(cfg.model) - {"_target_"}
    assert cfg.model.se_reduction == 16
    overrides = ["model.depth=8", "model.widen=2", "model.add_last_bn=true", "model.remove_first_relu=true",
                 "model.preact_stage=[true,false,false]"]
    plain, se = build_option("resnet_preact", *overrides), build_option("se_resnet_preact", *overrides)
    assert se.conv.out_channels == 32 and isinstance(se.stages[0][0].last_bn, nn.BatchNorm2d)
    assert se.stages[1][0].preact_shortcut is False
    assert set(plain.state_dict()) < set(se.state_dict())
    assert all(".se." in k for k in set(se.state_dict()) - set(plain.state_dict()))


def test_se_changes_the_output_with_the_same_shared_weights():
    torch.manual_seed(0)
    plain = build_option("resnet_preact", "model.depth=8").eval()
    se = build_option("se_resnet_preact", "model.depth=8").eval()
    missing, unexpected = se.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(".se." in k for k in missing)
    x = torch.randn(2, 3, 16, 16)
    assert not torch.allclose(plain(x), se(x))
    # Gates forced open (sigmoid -> 1): exactly the plain network, so SE only scales the residual branch.
    with torch.no_grad():
        for block in (b for s in se.stages for b in s):
            block.se.fc2.weight.zero_()
            block.se.fc2.bias.fill_(60.0)
    torch.testing.assert_close(plain(x), se(x))


def test_gate_acts_on_the_residual_branch_before_the_addition():
    torch.manual_seed(0)
    se = build_option("se_resnet_preact", "model.depth=14").eval()
    block = se.stages[0][1]  # identity shortcut
    with torch.no_grad():
        block.se.fc2.weight.zero_()
        block.se.fc2.bias.fill_(-60.0)  # gates closed: the block passes its input through
    x = torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(block(x), x)
    layer = SqueezeExcitation(8, 4)
    y = torch.randn(3, 8, 5, 5)
    gates = torch.sigmoid(layer.fc2(torch.relu(layer.fc1(y.mean(dim=(2, 3))))))
    torch.testing.assert_close(layer(y), y * gates[:, :, None, None])


@pytest.mark.parametrize("overrides", [["model.depth=8"], ["model.depth=11", "model.block=bottleneck"],
                                       ["model.depth=8", "model.norm=group", "model.activation=gelu"]])
@pytest.mark.parametrize(("channels", "size"), [(3, 32), (1, 28)])
def test_forward_backward_on_cifar_and_mnist_shapes(overrides, channels, size):
    model = build_option("se_resnet_preact", *overrides, channels=channels)
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(("activation", "kind"), [("leaky_relu", nn.LeakyReLU), ("celu", nn.CELU)])
def test_activation_reaches_the_se_module(activation, kind):
    model = build_option("se_resnet_preact", "model.depth=8", f"model.activation={activation}")
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert all(isinstance(b.se.act, kind) for s in model.stages for b in s)


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.se_reduction=0"], "model.se_reduction: must be an int >= 1"),
    (["model.se_reduction=2.5"], "model.se_reduction: must be an int >= 1"),
    (["model.depth=9"], "model.depth: ResNet-preact with basic blocks needs depth = 6n+2, n >= 1"),
    (["model.block=wide"], "model.block: must be basic or bottleneck"),
    (["model.activation=swish"], "model.activation: must be one of relu, leaky_relu, celu, gelu"),
    (["model.norm=batchnorm"], "model.norm: must be one of batch, instance, layer, group"),
])
def test_invalid_hyper_parameters_fail_with_the_rule(overrides, message):
    with pytest.raises(ConfigError) as error:
        build_option("se_resnet_preact", *overrides)
    assert str(error.value).startswith(message)
