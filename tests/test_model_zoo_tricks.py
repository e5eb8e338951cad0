"""The pytorch-cifar-tricks seed's models (its table 1.0 transformers and its table 3.3 CNNs):
parameter counts equal to the seed repository's own models (measured by instantiating its files,
see each module's docstring), composed as users compose them; drop-path and stochastic depth act
only in training; the input-size rules of the transformers."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from conftest import compose_config
from cifarzoo import describe
from cifarzoo.config import build
from cifarzoo.errors import ConfigError
from cifarzoo.models import count_parameters

pytestmark = pytest.mark.usefixtures("one_thread")


def model_from_config(*overrides: str, channels: int = 3, num_classes: int = 10, meta: bool = False) -> nn.Module:
    cfg = compose_config(list(overrides))
    if meta:  # parameters without memory or init: instant even for the 65M-parameter models
        with torch.device("meta"):
            return build(cfg.model, in_channels=channels, num_classes=num_classes)
    return build(cfg.model, in_channels=channels, num_classes=num_classes)


# Counts of pprp/pytorch-cifar-tricks' models for 10 classes (transformers at 72bb2a5 / 551e7bb,
# CNNs at 7bf6ee9), except where the module docstring documents a deviation (rir, nasnet).
REFERENCE_COUNTS = [
    (["model=vit"], 12_470_026),
    (["model=mobilevit", "model.variant=s"], 5_003_120),
    (["model=mobilevit", "model.variant=xs"], 2_002_784),
    (["model=mobilevit", "model.variant=xxs"], 1_014_672),
    (["model=coatnet", "model.variant=0"], 16_997_816),
    (["model=coatnet", "model.variant=1"], 32_326_976),
    (["model=coatnet", "model.variant=2"], 54_668_496),
    (["model=cvt"], 19_547_466),
    (["model=swin", "model.variant=t"], 27_428_086),
    (["model=swin", "model.variant=s"], 48_708_418),
    (["model=inception_v3"], 22_133_738),
    (["model=inception_v4"], 41_158_186),
    (["model=inception_resnet_v2"], 65_257_662),
    (["model=rir"], 10_253_044),  # the repository's 10,293,634 has a hard-coded 100-logit layer
    (["model=squeezenet"], 734_986),
    (["model=stochastic_depth_resnet", "model.depth=18"], 11_178_762),
    (["model=stochastic_depth_resnet", "model.depth=34"], 21_290_634),
    (["model=stochastic_depth_resnet", "model.depth=50"], 23_520_906),
    (["model=ge_resnext"], 36_329_802),
    (["model=nasnet"], 4_238_926),  # the repository's 5,126,494 less 887,568 never-used parameters
]


@pytest.mark.parametrize(("overrides", "exact"), REFERENCE_COUNTS, ids=lambda v: "-".join(v) if isinstance(v, list) else "")
def test_parameter_counts_match_the_seed_repository(overrides, exact):
    assert count_parameters(model_from_config(*overrides, "data=cifar10", meta=True)) == exact


def test_describe_prints_the_reference_count_and_macs(capsys):
    assert describe.main(["--json", "model=squeezenet", "data=cifar10"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 734_986 and info["num_classes"] == 10
    assert info["macs"] > 0


@pytest.mark.parametrize("overrides", [
    ["model=vit", "model.dim=16", "model.depth=3", "model.heads=2", "model.mlp_dim=32"],
    ["model=mobilevit", "model.variant=xxs", "model.dims=[8,8,8]", "model.channels=[4,4,4,4,4,4,4,4,4,4,8]"],
    ["model=coatnet", "model.blocks=[1,2,1,2,1]", "model.channels=[8,8,16,16,16]"],
    ["model=cvt", "model.dims=[8,16,16]", "model.depths=[1,1,2]"],
    ["model=swin", "model.depths=[2,2,2,2]", "model.embed_dim=8", "model.heads=[1,1,1,1]"],
])
def test_drop_path_is_train_only(overrides):
    torch.manual_seed(0)
    model = model_from_config(*overrides, "model.drop_path_rate=0.5")
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # eval: deterministic, no path dropped
        model.train()
        outs = [model(x) for _ in range(4)]
    assert any(not torch.allclose(outs[0], out) for out in outs[1:])  # train: paths dropped at random


def test_stochastic_depth_survival_probabilities_and_train_only_drops():
    model = model_from_config("model=stochastic_depth_resnet")
    probs = [block.survival_prob for block in model.blocks]
    assert probs == pytest.approx([1 - i * 0.5 / 7 for i in range(8)])  # 1 -> p_L = 0.5, linearly
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        block = model.blocks[-1]
        expected = block.shortcut(x_in := torch.randn(2, 512, 4, 4)) + block.branch(x_in) * 0.5
        assert torch.allclose(block(x_in), expected)  # eval scales the branch by its survival probability
        block.train()
        outs = {tuple(block(x_in).flatten()[:3].tolist()) for _ in range(20)}
    assert len(outs) == 2  # train: the branch is either kept whole or skipped


def test_transformer_input_size_rules():
    vit = model_from_config("model=vit", "model.dim=16", "model.depth=1", "model.heads=2", "model.mlp_dim=32")
    with pytest.raises(ValueError, match="patch_size"):
        vit(torch.randn(1, 3, 30, 30))
    coatnet = model_from_config("model=coatnet", "model.blocks=[1,1,1,1,1]", "model.channels=[8,8,16,16,16]")
    assert coatnet(torch.randn(2, 3, 28, 28)).shape == (2, 10)  # 28 reaches the same 2x2 / 1x1 grids as 32
    with pytest.raises(ValueError, match="model.image_size"):
        coatnet(torch.randn(2, 3, 64, 64))


@pytest.mark.parametrize(("overrides", "key"), [
    (["model=mobilevit", "model.variant=m"], "model.variant"),
    (["model=coatnet", "model.variant=3"], "model.variant"),
    (["model=swin", "model.variant=b"], "model.variant"),
    (["model=swin", "model.depths=[2,2,3,2]"], "model.depths"),
    (["model=vit", "model.drop_path_rate=1.0"], "model.drop_path_rate"),
    (["model=inception_v4", "model.blocks=[4,7]"], "model.blocks"),
    (["model=stochastic_depth_resnet", "model.depth=20"], "model.depth"),
    (["model=nasnet", "model.cells=0"], "model.cells"),
])
def test_bad_values_are_one_line_config_errors(overrides, key):
    with pytest.raises(ConfigError) as error:
        model_from_config(*overrides, meta=True)
    assert error.value.key == key and "\n" not in str(error.value)
