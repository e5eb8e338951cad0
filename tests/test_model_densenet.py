"""DenseNet / DenseNet-BC: the paper's parameter counts, both input shapes, the depth/stem/
transition rules and one-line errors for bad hyper-parameters."""

from __future__ import annotations

import pytest
import torch

from conftest import compose_config
from cifarzoo.config import build
from cifarzoo.errors import ConfigError
from cifarzoo.models import count_parameters
from cifarzoo.models.densenet import BottleneckLayer, DenseNet, Transition

PLAIN = ["model.block=basic", "model.compression=1.0"]  # the paper's DenseNet (no B, no C)


def densenet(*overrides: str, channels: int = 3, num_classes: int = 10) -> torch.nn.Module:
    cfg = compose_config(["model=densenet", *overrides])
    return build(cfg.model, in_channels=channels, num_classes=num_classes)


@pytest.mark.parametrize(("overrides", "millions"), [
    ([*PLAIN, "model.depth=40", "model.growth_rate=12"], 1.0),  # Huang et al. 2017, table 2
    ([*PLAIN, "model.depth=100", "model.growth_rate=12"], 7.0),
    ([*PLAIN, "model.depth=100", "model.growth_rate=24"], 27.2),
    (["model.depth=100", "model.growth_rate=12"], 0.8),  # DenseNet-BC
    (["model.depth=250", "model.growth_rate=24"], 15.3),
    (["model.depth=190", "model.growth_rate=40"], 25.6),
])
def test_parameter_counts_match_the_paper(overrides, millions):
    with torch.device("meta"):  # same composition path; skips the costly weight init
        model = densenet(*overrides)
    assert round(count_parameters(model) / 1e6, 1) == millions


def test_default_is_densenet_bc_100_k12():
    model = densenet()
    assert isinstance(model, DenseNet)
    assert count_parameters(model) == 769_162  # 0.8M
    layers = [m for m in model.modules() if isinstance(m, BottleneckLayer)]
    assert len(layers) == 3 * 16 and layers[0].conv1.out_channels == 48  # n = (100-4)/6, 4k
    assert model.conv.out_channels == 24  # 2k stem


@pytest.mark.parametrize("overrides", [
    [*PLAIN, "model.depth=7"],  # 1 basic layer per block
    ["model.depth=10", "model.drop_rate=0.2"],  # 1 bottleneck layer per block, with dropout
])
@pytest.mark.parametrize(("channels", "size"), [(3, 32), (1, 28)])
def test_forward_backward_on_cifar_and_mnist_shapes(overrides, channels, size):
    model = densenet(*overrides, channels=channels)
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(("overrides", "stem"), [
    (PLAIN, 16),  # DenseNet: 16 channels
    (["model.growth_rate=12"], 24),  # DenseNet-BC: 2k
    (["model.block=basic", "model.compression=0.5", "model.growth_rate=12"], 24),  # DenseNet-C: 2k
    (["model.block=bottleneck", "model.compression=1.0", "model.growth_rate=12"], 24),  # DenseNet-B: 2k
])
def test_stem_width_follows_block_and_compression(overrides, stem):
    depth = "model.depth=7" if "model.block=basic" in overrides else "model.depth=10"
    assert densenet(*overrides, depth).conv.out_channels == stem


def test_dense_blocks_grow_by_k_and_transitions_compress_with_floor():
    model = densenet("model.block=basic", "model.depth=13", "model.growth_rate=5", "model.compression=0.3")
    # stem 2k = 10; block 1: 10 + 3*5 = 25 -> floor(0.3*25) = 7; block 2: 7 + 15 = 22 -> 6; block 3: 21
    transitions = [m for m in model.modules() if isinstance(m, Transition)]
    assert [(t.conv.in_channels, t.conv.out_channels) for t in transitions] == [(25, 7), (22, 6)]
    assert model.fc.in_features == 21
    x = torch.randn(2, 3, 32, 32)
    assert model.stages[0](model.conv(x)).shape == (2, 7, 16, 16)  # 2x2 average pool


def test_drop_rate_only_acts_in_training():
    model = densenet(*PLAIN, "model.depth=7", "model.drop_rate=0.5").eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(0)
    a = model(x)
    assert not torch.allclose(a, model(x))


@pytest.mark.parametrize(("overrides", "message"), [
    ([*PLAIN, "model.depth=41"], "model.depth: DenseNet with basic layers needs depth = 3n+4, n >= 1 (got 41)"),
    (["model.depth=3", "model.block=basic"], "model.depth: DenseNet with basic layers needs depth = 3n+4, n >= 1 (got 3)"),
    (["model.depth=42"], "model.depth: DenseNet with bottleneck layers needs depth = 6n+4, n >= 1 (got 42)"),
    (["model.depth=4"], "model.depth: DenseNet with bottleneck layers needs depth = 6n+4, n >= 1 (got 4)"),
    (["model.block=dense"], "model.block: must be basic or bottleneck (got 'dense')"),
    (["model.growth_rate=0"], "model.growth_rate: must be an int >= 1 (got 0)"),
    (["model.compression=0"], "model.compression: must be in (0, 1]"),
    (["model.compression=1.5"], "model.compression: must be in (0, 1]"),
    (["model.drop_rate=1.0"], "model.drop_rate: must be in [0, 1) (got 1.0)"),
])
def test_invalid_hyper_parameters_fail_with_the_rule(overrides, message):
    with pytest.raises(ConfigError) as error:
        densenet(*overrides)
    assert str(error.value).startswith(message)
