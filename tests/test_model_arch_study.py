"""Models of the architecture-study seed (004): kuangliu-style ResNet-18/34 and the "wider
resnet14", its "resnext18", DenseNet-121, VGG-16 and ConvMixer-256/16. Parameter counts vs the
seed's table (which truncates to two decimals), both input shapes, activation/norm, rules."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import compose_config
from cifarzoo.config import build
from cifarzoo.errors import ConfigError
from cifarzoo.models import count_parameters
from cifarzoo.models.convmixer import ConvMixer
from cifarzoo.models.densenet121 import DenseNetImageNetStyle
from cifarzoo.models.resnet_imagenet_style import ResNeXtSmall, ResNetImageNetStyle
from cifarzoo.models.vgg import VGG


pytestmark = pytest.mark.usefixtures("one_thread")


def model_from_config(*overrides: str, channels: int = 3, num_classes: int = 10) -> nn.Module:
    return build(compose_config(list(overrides)).model, in_channels=channels, num_classes=num_classes)


@pytest.mark.parametrize(("overrides", "exact", "seed_millions"), [
    (["model=resnet_imagenet_style"], 11_173_962, 11.17),                                     # resnet18
    (["model=resnet_imagenet_style", "model.depth=34"], 21_282_122, 21.28),                   # resnet34
    (["model=resnet_imagenet_style", "model.depth=14", "model.widen=2"], 21_063_818, 21.06),  # wider resnet14
    (["model=resnext_small"], 10_021_194, 10.02),                                             # resnext18
    (["model=densenet121"], 6_956_298, 6.95),
    (["model=vgg16"], 14_728_266, 14.72),
    (["model=convmixer"], 1_280_266, 1.28),                                                   # convmixer256d16
])
def test_parameter_counts_match_the_seed(overrides, exact, seed_millions):
    count = count_parameters(model_from_config(*overrides))
    assert count == exact  # the seed's own code gives these exact numbers
    assert math.floor(count / 1e4) / 100 == seed_millions  # its table truncates to 2 decimals


SMALL = {
    "resnet_imagenet_style": ["model.depth=10", "model.widen=0.25"],
    "resnext_small": ["model.depth=10", "model.widen=0.5", "model.cardinality=8"],
    "densenet121": ["model.blocks=[1,2,1,1]", "model.growth_rate=8"],
    "vgg16": ["model.channels=[8,8,16,16,16]", "model.layers=[1,1,1,1,1]"],
    "convmixer": ["model.dim=16", "model.depth=2"],
}


@pytest.mark.parametrize("option", list(SMALL))
@pytest.mark.parametrize(("channels", "size"), [(3, 32), (1, 28)])
def test_forward_backward_on_cifar_and_mnist_shapes(option, channels, size):
    model = model_from_config(f"model={option}", *SMALL[option], channels=channels, num_classes=7)
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


NORM_TYPES = {"batch": nn.BatchNorm2d, "instance": nn.InstanceNorm2d, "layer": nn.GroupNorm, "group": nn.GroupNorm}
ACT_TYPES = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "celu": nn.CELU, "gelu": nn.GELU}


@pytest.mark.parametrize(("activation", "norm"), [
    ("relu", "batch"), ("leaky_relu", "batch"), ("celu", "batch"), ("gelu", "batch"),
    ("relu", "instance"), ("relu", "layer"), ("relu", "group"),
])  # the seed's activation / normalisation table on resnet18
def test_activation_and_norm_apply_to_every_layer_of_the_resnet(activation, norm):
    model = model_from_config("model=resnet_imagenet_style", *SMALL["resnet_imagenet_style"],
                              f"model.activation={activation}", f"model.norm={norm}")
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm))]
    acts = [m for m in model.modules() if isinstance(m, tuple(ACT_TYPES.values()))]
    assert norms and all(type(m) is NORM_TYPES[norm] for m in norms)  # blocks and shortcuts too, not just the stem
    assert acts and all(type(m) is ACT_TYPES[activation] for m in acts)
    if norm == "layer":
        assert all(m.num_groups == 1 for m in norms)
    out = model(torch.randn(2, 3, 32, 32))
    out.sum().backward()


@pytest.mark.parametrize("option", ["densenet121", "convmixer", "vgg16", "resnext_small"])
def test_activation_and_norm_work_for_the_other_study_models(option):
    model = model_from_config(f"model={option}", *SMALL[option], "model.activation=celu", "model.norm=group")
    assert any(isinstance(m, nn.CELU) for m in model.modules())
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.ReLU, nn.GELU)) for m in model.modules())
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnet_layout_and_identity_blocks_are_residual():
    model = model_from_config("model=resnet_imagenet_style", "model.depth=14", "model.widen=0.25").eval()
    assert isinstance(model, ResNetImageNetStyle)
    assert [len(stage) for stage in model.stages] == [2, 2, 1, 1]  # the seed's widerres14 stages
    assert model.conv.kernel_size == (3, 3) and model.conv.stride == (1, 1) and model.fc.in_features == 128
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    block = model.stages[0][1]  # stride 1, same width: identity shortcut
    assert isinstance(block.shortcut, nn.Identity)
    nn.init.zeros_(block.bn2.weight)
    nn.init.zeros_(block.bn2.bias)  # residual branch now outputs 0: the block must pass relu(x) on
    x = torch.randn(2, 16, 8, 8)
    assert torch.equal(block(x), torch.relu(x))  # (the seed's code drops identity shortcuts: it would give 0)


def test_resnext_small_groups_the_second_conv():
    model = model_from_config("model=resnext_small")
    assert isinstance(model, ResNeXtSmall)
    block = model.stages[1][0]
    assert block.conv1.out_channels == 2 * 128 and block.conv2.groups == 32 and block.conv2.out_channels == 128


def test_densenet121_has_121_layers_and_the_bc_widths():
    model = model_from_config("model=densenet121")
    assert isinstance(model, DenseNetImageNetStyle)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) + 1 == 121  # stem + 2 per dense layer + 3 transitions + the linear layer
    assert convs[0].out_channels == 64 and model.fc.in_features == 1024


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_convmixer_patches_and_kernel():
    model = model_from_config("model=convmixer", "model.dim=16", "model.depth=3", "model.kernel_size=4",
                              "model.patch_size=4")
    assert isinstance(model, ConvMixer) and len(model.layers) == 3
    assert model.embed(torch.randn(2, 3, 32, 32)).shape == (2, 16, 8, 8)
    assert model.layers(torch.randn(2, 16, 8, 8)).shape == (2, 16, 8, 8)  # "same" padding, even kernel too
    depthwise = model.layers[0][0][0]
    assert depthwise.groups == 16 and depthwise.kernel_size == (4, 4)
    assert isinstance(model.layers[0][0][1], nn.GELU)  # the paper's activation by default


def test_vgg16_is_the_vgg_class_with_the_vgg16_layout():
    model = model_from_config("model=vgg16")
    assert isinstance(model, VGG)
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 13


@pytest.mark.parametrize(("overrides", "message"), [
    (["model=resnet_imagenet_style", "model.depth=20"], r"^model\.depth: must be one of 10, 14, 18, 34, 50, 101, 152 \(got 20\)"),
    (["model=resnet_imagenet_style", "model.widen=0.3"], r"^model\.widen: must be > 0 with 64\*widen a whole"),
    (["model=resnet_imagenet_style", "model.widen=0"], r"^model\.widen: "),
    (["model=resnet_imagenet_style", "model.activation=swish"], r"^model\.activation: must be one of relu"),
    (["model=resnet_imagenet_style", "model.norm=weight"], r"^model\.norm: must be one of batch"),
    (["model=resnext_small", "model.cardinality=24"], r"^model\.cardinality: must divide the stem width"),
    (["model=resnext_small", "model.inner_widen=0"], r"^model\.inner_widen: must be an int >= 1"),
    (["model=densenet121", "model.blocks=[]"], r"^model\.blocks: must be a non-empty list"),
    (["model=densenet121", "model.growth_rate=0"], r"^model\.growth_rate: must be an int >= 1"),
    (["model=densenet121", "model.compression=1.5"], r"^model\.compression: must be in \(0, 1\]"),
    (["model=convmixer", "model.dim=0"], r"^model\.dim: must be an int >= 1"),
    (["model=convmixer", "model.kernel_size=0"], r"^model\.kernel_size: must be an int >= 1"),
    (["model=convmixer", "model.patch_size=0"], r"^model\.patch_size: must be an int >= 1"),
    (["model=convmixer", "model.norm=weight"], r"^model\.norm: "),
])
def test_invalid_hyper_parameters_fail_with_the_rule(overrides, message):
    with pytest.raises(ConfigError, match=message):
        model_from_config(*overrides)
