"""model=spp_resnet: the tricks seed's SPP attention networks (table 3.10), parameter counts equal
to pprp/pytorch-cifar-tricks' `spp_depth` models (measured by instantiating its files)."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from conftest import compose_config
from cifarzoo.config import build
from cifarzoo.errors import ConfigError
from cifarzoo.models import count_parameters
from cifarzoo.models.spp_resnet import SPP, SPPResNeXt


@functools.cache
def _model_node():
    return compose_config(["model=spp_resnet", "data=cifar10"]).model


def model(meta: bool = True, **values) -> torch.nn.Module:
    node = copy.deepcopy(_model_node())
    for key, value in values.items():
        node[key] = value
    with torch.device("meta" if meta else "cpu"):
        return build(node, in_channels=3, num_classes=10)


# The repository's spp_dXX_pY(10) (every factory passes spp=False) and build_spp_models(spp=True).
AS_RUN = {11: 1_912_138, 20: 3_489_098, 29: 5_066_058}
WITH_SPP = {
    (11, "N"): 3_293_770, (11, "A"): 3_981_898, (11, "D"): 5_358_154,
    (20, "N"): 6_252_362, (20, "B"): 7_628_618, (20, "D"): 10_381_130,
    (29, "N"): 9_210_954, (29, "C"): 11_275_338, (29, "D"): 15_404_106,
}


@pytest.mark.parametrize("depth", sorted(AS_RUN))
def test_parameter_counts_of_the_repositorys_factories(depth):
    for pooling in "NABCD":
        built = model(depth=depth, pooling=pooling)
        assert isinstance(built, SPPResNeXt) and count_parameters(built) == AS_RUN[depth], pooling
        assert not any(isinstance(m, SPP) for m in built.modules())  # spp=False: the pooling builds nothing


@pytest.mark.parametrize(("depth", "pooling"), sorted(WITH_SPP))
def test_parameter_counts_with_the_spp_modules(depth, pooling):
    assert count_parameters(model(depth=depth, pooling=pooling, spp=True)) == WITH_SPP[(depth, pooling)]


def test_spp_module_sits_on_the_residual_branch_after_its_last_bn():
    built = model(meta=False, depth=11, pooling="D", spp=True)
    blocks = [m for m in built.modules() if hasattr(m, "residual")]
    assert len(blocks) == 3
    for block in blocks:
        branch, spp = block.residual
        assert isinstance(branch[-1], torch.nn.BatchNorm2d) and isinstance(spp, SPP)
        assert [p.kernel_size for p in spp.pools] == [3, 5, 7] and all(p.stride == 1 for p in spp.pools)
    # forward = relu(spp(branch(x)) + shortcut(x)), the maps keep their size through the pools
    block = blocks[1].eval()
    x = torch.randn(2, 256, 8, 8)
    expected = torch.relu(block.residual[1](block.residual[0](x)) + block.shortcut(x))
    assert torch.equal(block(x), expected) and built(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"pooling": "E"}, "model.pooling: must be one of N, A, B, C, D (got 'E')"),
        ({"depth": 12}, "model.depth: ResNeXt needs depth = 9n+2, n >= 1 (got 12)"),
        ({"spp": "yes"}, "model.spp: must be true or false (got 'yes')"),
    ],
)
def test_bad_values_are_one_line_config_errors(values, message):
    with pytest.raises(ConfigError) as info:
        model(**values)
    assert str(info.value) == message
