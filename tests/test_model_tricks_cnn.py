"""The CNNs of the pytorch-cifar-tricks seed's table 3.3 (pprp/pytorch-cifar-tricks at 7bf6ee9):
each option's parameter count for CIFAR-10 equals the count of the reference's own model,
measured by instantiating the reference's model file outside this project (not copied here);
plus what each family must do beyond its count (train-only drop connect, the MNIST input of
LeNet, num_classes where the reference ignored it) and the one-line errors."""

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
from cifarzoo.models.dpn import DPN
from cifarzoo.models.efficientnet import MBConv
from cifarzoo.models.preact_resnet import SENet
from cifarzoo.models.resnet_imagenet_style import Bottleneck
from cifarzoo.models.resnet_preact import PreActBlock
from cifarzoo.models.se_resnet_preact import SqueezeExcitation

pytestmark = pytest.mark.usefixtures("one_thread")


def build_model(*overrides: str, channels: int = 3, num_classes: int = 10) -> nn.Module:
    with torch.device("meta"):  # shapes only: the big ones build in milliseconds
        return build(compose_config(list(overrides)).model, in_channels=channels, num_classes=num_classes)


@pytest.mark.parametrize(("overrides", "reference"), [
    (["model=lenet"], 62_006),                                           # LeNet
    (["model=senet18"], 11_260_354),                                     # senet18_cifar
    (["model=resnet_imagenet_style", "model.depth=50"], 23_520_842),     # ResNet50
    (["model=resnet_imagenet_style", "model.depth=101"], 42_512_970),    # ResNet101
    (["model=resnet_imagenet_style", "model.depth=152"], 58_156_618),    # ResNet152
    (["model=regnet"], 2_321_946),                                       # RegNetX_200MF
    (["model=regnet", "model.variant=X-400MF"], 4_779_338),              # RegNetX_400MF
    (["model=regnet", "model.variant=Y-400MF"], 5_714_362),              # RegNetY_400MF
    (["model=dla"], 16_291_386),                                         # DLA
    (["model=googlenet"], 6_166_250),                                    # GoogLeNet
    (["model=efficientnet_b0"], 3_599_686 - 1_088),                      # EfficientNetB0 less its unused layer
    (["model=mobilenet"], 3_217_226),                                    # MobileNet
    (["model=mobilenetv2"], 2_296_922),                                  # MobileNetV2
    (["model=pnasnet"], 451_626),                                        # PNASNetB
    (["model=preact_resnet18"], 11_171_146),                             # PreActResNet18
    (["model=dpn"], 11_574_842),                                         # DPN26
    (["model=dpn", "model.variant=92"], 34_236_634),                     # DPN92
])
def test_parameter_counts_equal_the_reference(overrides, reference):
    assert count_parameters(build_model(*overrides)) == reference


def test_describe_prints_the_reference_count_and_the_macs(capsys):
    assert describe.main(["--json", "model=lenet"]) == 0
    info = json.loads(capsys.readouterr().out)
    conv1, conv2, fcs = 28 * 28 * 6 * 3 * 25, 10 * 10 * 16 * 6 * 25, 400 * 120 + 120 * 84 + 84 * 10
    assert (info["model"], info["params"], info["macs"]) == ("lenet", 62_006, conv1 + conv2 + fcs)


def test_num_classes_is_honoured_where_the_reference_ignored_it():
    # The reference's DPN-26 always has 10 outputs; its classifier reads 2048 + 3 x 128 channels.
    model = build_model("model=dpn", num_classes=100)
    assert isinstance(model, DPN) and model.fc.in_features == 2048 + 3 * 128 and model.fc.out_features == 100
    assert count_parameters(model) == 11_574_842 + 90 * (2048 + 3 * 128 + 1)


def test_lenet_pads_mnist_to_32x32_as_the_paper():
    torch.manual_seed(0)
    model = build(compose_config(["model=lenet"]).model, in_channels=1, num_classes=10).eval()
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(model(x), model(nn.functional.pad(x, (2, 2, 2, 2))))


def test_efficientnet_drop_connect_rises_linearly_and_is_train_only():
    blocks = [m for m in build_model("model=efficientnet_b0", "model.drop_connect_rate=0.2").modules()
              if isinstance(m, MBConv)]
    assert len(blocks) == 16 and [b.drop_connect.p for b in blocks] == [0.2 * i / 16 for i in range(16)]
    assert len([m for m in blocks[0].branch if isinstance(m, nn.Conv2d)]) == 2  # expansion 1: no expansion conv

    torch.manual_seed(0)
    small = ["model=efficientnet_b0", "model.width_coefficient=0.25", "model.depth_coefficient=0.5"]
    dropping = build(compose_config([*small, "model.drop_connect_rate=0.9", "model.drop_rate=0"]).model,
                     in_channels=3, num_classes=10)
    plain = build(compose_config([*small, "model.drop_connect_rate=0", "model.drop_rate=0"]).model,
                  in_channels=3, num_classes=10)
    plain.load_state_dict(dropping.state_dict())
    x = torch.randn(4, 3, 32, 32)
    dropping.eval(), plain.eval()
    assert torch.equal(dropping(x), plain(x))  # eval: deterministic, no drop
    dropping.train(), plain.train()
    assert not torch.allclose(dropping(x), plain(x))


def test_senet18_is_preact_resnet18_with_se_and_a_normalised_stem():
    plain, se = build_model("model=preact_resnet18"), build_model("model=senet18")
    assert isinstance(se, SENet) and isinstance(plain.stem, nn.Conv2d) and isinstance(se.stem[1], nn.BatchNorm2d)
    blocks = [b for stage in se.stages for b in stage]
    assert all(isinstance(b, PreActBlock) and isinstance(b.se, SqueezeExcitation) for b in blocks)
    # Projection shortcuts (stages 2-4) take the pre-activated input, identity ones the block input.
    assert [b.preact_shortcut for b in blocks] == [False, False, True, False, True, False, True, False]
    se_params = sum(2 * c * (c // 16) + c // 16 + c for c in (64, 64, 128, 128, 256, 256, 512, 512))
    assert count_parameters(se) - count_parameters(plain) == se_params + 2 * 64  # + the stem's BN


def test_resnet50_has_bottleneck_stages():
    model = build_model("model=resnet_imagenet_style", "model.depth=50")
    assert [len(s) for s in model.stages] == [3, 4, 6, 3]
    assert all(isinstance(b, Bottleneck) for s in model.stages for b in s) and model.fc.in_features == 2048
    torch.manual_seed(0)
    small = build(compose_config(["model=resnet_imagenet_style", "model.depth=50", "model.widen=0.125"]).model,
                  in_channels=1, num_classes=3)
    small(torch.randn(2, 1, 28, 28)).sum().backward()
    assert all(p.grad is not None for p in small.parameters())


def test_dla_trees_deeper_than_the_reference_build_and_run():
    # The reference gives every subtree the tree's input width and stride, which breaks at depth 3.
    model = build(compose_config(["model=dla", "model.levels=[1,1,1,3,1,1]", "model.channels=[4,4,8,8,8,8]"]).model,
                  in_channels=1, num_classes=5)
    tree = model.features[-3]
    assert len(tree.subtrees) == 2 and tree.root[0].in_channels == (3 + 2) * 8
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 5)


@pytest.mark.parametrize(("overrides", "message"), [
    (["model=resnet_imagenet_style", "model.depth=20"], r"^model\.depth: must be one of 10, 14, 18, 34, 50, 101, 152 "),
    (["model=resnext_small", "model.depth=50"], r"^model\.depth: must be one of 10, 14, 18, 34 \(got 50\)"),
    (["model=preact_resnet18", "model.depth=50"], r"^model\.depth: must be one of 10, 14, 18, 34 \(got 50\)"),
    (["model=senet18", "model.se_reduction=0"], r"^model\.se_reduction: must be an int >= 1"),
    (["model=regnet", "model.variant=X-800MF"], r"^model\.variant: must be one of X-200MF, X-400MF, Y-400MF"),
    (["model=dla", "model.levels=[1,2,2,1]"], r"^model\.levels: must be a list of 6 ints >= 1"),
    (["model=googlenet", "model.widen=0"], r"^model\.widen: must be > 0"),
    (["model=efficientnet_b0", "model.width_coefficient=0"], r"^model\.width_coefficient: must be > 0"),
    (["model=efficientnet_b0", "model.drop_connect_rate=1"], r"^model\.drop_connect_rate: must be in \[0, 1\)"),
    (["model=mobilenet", "model.width_multiplier=0.01"], r"^model\.width_multiplier: must be >= 1/32"),
    (["model=mobilenetv2", "model.width_multiplier=-1"], r"^model\.width_multiplier: must be > 0"),
    (["model=pnasnet", "model.num_cells=0"], r"^model\.num_cells: must be an int >= 1"),
    (["model=dpn", "model.variant=68"], r"^model\.variant: must be one of 26, 92 \(got 68\)"),
    (["model=dpn", "model.cardinality=5"], r"^model\.cardinality: must divide every bottleneck width"),
    (["model=dpn", "model.widen=0.1"], r"^model\.widen: must be > 0 with every width x widen a whole number"),
])
def test_invalid_hyper_parameters_fail_with_the_rule(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_model(*overrides)
