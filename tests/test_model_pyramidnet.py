"""PyramidNet (+ ShakeDrop): parameter counts, both input shapes, rounded widths, the unit
layout, ShakeDrop's forward/backward/eval semantics and one-line errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import compose_config
from cifarzoo.config import build
from cifarzoo.errors import ConfigError
from cifarzoo.models import count_parameters
from cifarzoo.models.pyramidnet import PyramidBasic, PyramidNet, ShakeDrop, ShakeDropFunction, pyramid_widths

SMALL_BASIC = ["model.depth=8", "model.alpha=12"]  # 1 unit per stage
SMALL_BOTTLENECK = ["model.depth=11", "model.block=bottleneck", "model.alpha=12"]


def pyramidnet(*overrides: str, channels: int = 3) -> PyramidNet:
    cfg = compose_config(["model=pyramidnet", *overrides])
    return build(cfg.model, in_channels=channels, num_classes=10)


# Han et al. 2017, table 4, publishes 1.7 / 3.8 / 28.3 / 27.0 / 26.0 M. The authors' own PyTorch
# code (dyhan0920/PyramidNet-PyTorch, PyramidNet('cifar10', depth, alpha, 10, bottleneck)) builds
# exactly the counts below (checked by instantiating it), as does hysts' implementation; the
# PyTorch literature quotes 26.2M for PyramidNet-272 alpha=200 (e.g. AutoAugment's
# PyramidNet+ShakeDrop). See the report: the table is 0.05-0.2M below every implementation.
@pytest.mark.parametrize(("overrides", "official_code", "published"), [
    (["model.alpha=48"], 1_772_706, 1.7),
    (["model.alpha=84"], 3_904_446, 3.8),
    (["model.alpha=270"], 28_485_477, 28.3),
    (["model.depth=164", "model.block=bottleneck", "model.alpha=270"], 27_216_021, 27.0),
    (["model.depth=272", "model.block=bottleneck", "model.alpha=200"], 26_210_842, 26.0),
])
def test_parameter_counts_match_the_official_code(overrides, official_code, published):
    with torch.device("meta"):  # same composition path; skips the costly weight init
        model = pyramidnet(*overrides)
    count = count_parameters(model)
    assert count == official_code
    assert abs(count / 1e6 - published) / published < 0.05


def test_default_is_pyramidnet_110_alpha_270_without_shakedrop():
    with torch.device("meta"):
        model = pyramidnet()
    units = [m for m in model.modules() if isinstance(m, PyramidBasic)]
    assert len(units) == 54 and model.fc.in_features == 16 + 270
    assert not any(isinstance(m, ShakeDrop) for m in model.modules())


def test_widths_are_rounded_not_floored():
    assert pyramid_widths(16, 48, 54)[:3] == [17, 18, 19]  # 16.89, 17.78, 18.67 (floor: 16, 17, 18)
    assert pyramid_widths(16, 270, 54)[-1] == 286
    model = pyramidnet("model.depth=20", "model.alpha=10")  # 9 units: 16 + 10 i / 9
    widths = [u.branch[1].out_channels for u in model.modules() if isinstance(u, PyramidBasic)]
    assert widths == [17, 18, 19, 20, 22, 23, 24, 25, 26]
    bottleneck = pyramidnet("model.depth=29", "model.block=bottleneck", "model.alpha=10")
    assert bottleneck.fc.in_features == 4 * 26 and bottleneck.conv.out_channels == 16


def test_unit_layout_and_zero_padded_shortcut():
    unit = pyramidnet("model.depth=20", "model.alpha=10").stages[1][0]  # downsampling unit
    kinds = [type(m) for m in unit.branch]
    assert kinds == [nn.BatchNorm2d, nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Conv2d, nn.BatchNorm2d]
    assert unit.branch[1].stride == (2, 2)
    assert sum(p.numel() for n, p in unit.named_parameters() if not n.startswith("branch")) == 0
    assert (unit.branch[0].num_features, unit.out_channels) == (19, 20)  # units 3 and 4 of 9
    x = torch.randn(2, 19, 8, 8)
    short = unit.shortcut(x)
    assert short.shape == (2, 20, 4, 4)
    assert torch.equal(short[:, :19], nn.functional.avg_pool2d(x, 2)) and not short[:, 19:].any()


@pytest.mark.parametrize("overrides", [
    SMALL_BASIC,
    [*SMALL_BOTTLENECK, "model.shakedrop_prob=0.5"],
])
@pytest.mark.parametrize(("channels", "size"), [(3, 32), (1, 28)])
def test_forward_backward_on_cifar_and_mnist_shapes(overrides, channels, size):
    model = pyramidnet(*overrides, channels=channels)
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_shakedrop_probabilities_decay_linearly():
    model = pyramidnet("model.depth=20", "model.shakedrop_prob=0.5")  # 9 units
    probs = [m.p_drop for m in model.modules() if isinstance(m, ShakeDrop)]
    assert probs == pytest.approx([0.5 * l / 9 for l in range(1, 10)])


def test_shakedrop_eval_output_is_the_expected_value():
    model = pyramidnet("model.depth=20", "model.alpha=10", "model.shakedrop_prob=0.5").eval()
    unit = model.stages[1][0]  # downsampling unit with a zero-padded shortcut
    p = unit.shakedrop.p_drop
    x = torch.randn(3, 19, 8, 8)
    with torch.no_grad():
        assert torch.equal(unit(x), (1 - p) * unit.residual(x) + unit.shortcut(x))
        y = torch.randn(2, 3, 32, 32)
        assert torch.equal(model(y), model(y))  # deterministic at eval


def test_shakedrop_train_coefficients_per_image():
    torch.manual_seed(0)
    x = torch.ones(64, 3, 4, 4, requires_grad=True)
    out = ShakeDropFunction.apply(x, 0.5)
    out.sum().backward()
    forward = out.detach().flatten(1)
    backward = x.grad.flatten(1)
    # one coefficient per image
    assert torch.equal(forward, forward[:, :1].expand_as(forward))
    assert torch.equal(backward, backward[:, :1].expand_as(backward))
    forward, backward = forward[:, 0], backward[:, 0]
    kept = forward == 1  # b = 1: both coefficients are exactly 1
    assert 0 < kept.sum() < 64
    assert torch.equal(backward[kept], torch.ones_like(backward[kept]))
    dropped = ~kept  # b = 0: forward alpha in [-1, 1], backward beta in [0, 1], drawn independently
    assert forward[dropped].abs().max() <= 1 and (forward[dropped] < 0).any()
    assert backward[dropped].min() >= 0 and backward[dropped].max() <= 1
    assert (backward[dropped] != forward[dropped]).any()
    assert not torch.equal(backward[dropped], forward[dropped].abs())


def test_shakedrop_with_p_zero_is_the_identity():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 4, 4, requires_grad=True)
    out = ShakeDropFunction.apply(x, 0.0)
    assert torch.equal(out, x)
    grad = torch.randn_like(out)
    out.backward(grad)
    assert torch.equal(x.grad, grad)
    # a model built with shakedrop_prob=0.5 whose ShakeDrop layers are set to p=0 computes
    # exactly what the plain PyramidNet (shakedrop_prob=0, no ShakeDrop layers) computes
    plain = pyramidnet(*SMALL_BASIC)
    shaken = pyramidnet(*SMALL_BASIC, "model.shakedrop_prob=0.5")
    assert count_parameters(plain) == count_parameters(shaken)
    shaken.load_state_dict(plain.state_dict())
    for module in shaken.modules():
        if isinstance(module, ShakeDrop):
            module.p_drop = 0.0
    y = torch.randn(4, 3, 16, 16)
    assert torch.equal(plain.train()(y), shaken.train()(y))


def test_shakedrop_makes_training_stochastic():
    model = pyramidnet(*SMALL_BASIC, "model.shakedrop_prob=0.9").train()
    y = torch.randn(4, 3, 16, 16)
    torch.manual_seed(0)
    assert not torch.allclose(model(y), model(y))


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.depth=111"], "model.depth: PyramidNet with basic blocks needs depth = 6n+2, n >= 1 (got 111)"),
    (["model.depth=2"], "model.depth: PyramidNet with basic blocks needs depth = 6n+2, n >= 1 (got 2)"),
    (["model.depth=100", "model.block=bottleneck"],
     "model.depth: PyramidNet with bottleneck blocks needs depth = 9n+2, n >= 1 (got 100)"),
    (["model.block=wide"], "model.block: must be basic or bottleneck (got 'wide')"),
    (["model.alpha=-1"], "model.alpha: must be a number >= 0"),
    (["model.base_channels=0"], "model.base_channels: must be an int >= 1 (got 0)"),
    (["model.shakedrop_prob=1.0"], "model.shakedrop_prob: must be in [0, 1)"),
    (["model.shakedrop_prob=-0.1"], "model.shakedrop_prob: must be in [0, 1)"),
])
def test_invalid_hyper_parameters_fail_with_the_rule(overrides, message):
    with pytest.raises(ConfigError) as error:
        pyramidnet(*overrides)
    assert str(error.value).startswith(message)
