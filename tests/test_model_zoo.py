"""Every `conf/model/*.yaml` option builds from config and trains a step on CIFAR- and
MNIST-shaped batches. A new option must add its small test setting below."""

from __future__ import annotations

import pytest
import torch

from conftest import CONF_DIR, compose_config
from cifarzoo.config import build

# Small settings per option, to keep CPU time low; defaults are the papers' big models.
SMALL: dict[str, list[str]] = {
    "coatnet": ["model.blocks=[1,1,1,1,1]", "model.channels=[8,8,16,16,16]"],
    "convmixer": ["model.dim=16", "model.depth=2"],
    "cvt": ["model.dims=[8,16,16]", "model.depths=[1,1,1]"],
    "densenet": ["model.depth=10"],
    "densenet121": ["model.blocks=[1,1,1,1]", "model.growth_rate=8"],
    "dla": ["model.levels=[1,1,1,2,1,1]", "model.channels=[4,4,8,8,8,8]"],
    "dpn": ["model.widen=0.125", "model.cardinality=4"],
    "efficientnet_b0": ["model.width_coefficient=0.25", "model.depth_coefficient=0.5", "model.drop_connect_rate=0.2"],
    "ge_resnext": ["model.depth=11", "model.cardinality=2", "model.base_channels=4"],
    "googlenet": ["model.widen=0.0625"],
    "inception_resnet_v2": ["model.blocks=[1,1,1]"],
    "inception_v3": [],
    "inception_v4": ["model.blocks=[1,1,1]"],
    "lenet": [],
    "mobilenet": ["model.width_multiplier=0.125"],
    "mobilenetv2": ["model.width_multiplier=0.25"],
    "mobilevit": ["model.variant=xxs", "model.dims=[8,8,8]", "model.channels=[4,4,4,4,4,4,4,4,4,4,8]"],
    "nasnet": ["model.cells=1", "model.filters=8"],
    "pnasnet": ["model.num_cells=1", "model.num_filters=8"],
    "preact_resnet18": ["model.depth=10", "model.widen=0.25"],
    "pyramidnet": ["model.depth=8", "model.alpha=12", "model.shakedrop_prob=0.5"],
    "regnet": [],  # RegNetX-200MF itself (2.3M params) is fast enough
    "resnet": ["model.depth=8"],
    "resnet_imagenet_style": ["model.depth=10", "model.widen=0.25"],
    "resnet_preact": ["model.depth=8"],
    "resnext": ["model.depth=11", "model.cardinality=2", "model.base_channels=4"],
    "resnext_small": ["model.depth=10", "model.widen=0.25", "model.cardinality=2"],
    "rir": ["model.width=8", "model.layers_per_block=1"],
    "se_resnet_preact": ["model.depth=8"],
    "senet18": ["model.depth=10", "model.widen=0.25"],
    "shake_shake": ["model.depth=8", "model.base_channels=4"],
    "spp_resnet": ["model.cardinality=2", "model.base_channels=4", "model.spp=true", "model.pooling=D"],
    "squeezenet": [],
    "stochastic_depth_resnet": ["model.survival_prob_last=1.0"],  # every block kept: all parameters get gradients
    "swin": ["model.depths=[2,2,2,2]", "model.embed_dim=8", "model.heads=[1,1,1,1]"],
    "vgg": ["model.channels=[8,8,8,8,8]", "model.layers=[1,1,1,1,1]"],
    "vgg16": ["model.channels=[8,8,8,8,8]", "model.layers=[1,1,1,1,1]"],
    "vit": ["model.dim=16", "model.depth=2", "model.heads=2", "model.mlp_dim=32"],
    "wrn": ["model.depth=10", "model.widen=1"],
}

OPTIONS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))


def test_every_option_has_a_small_setting():
    assert sorted(SMALL) == OPTIONS


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize(("channels", "size", "classes"), [(3, 32, 10), (1, 28, 100)])
def test_option_trains_a_step(option, channels, size, classes):
    torch.manual_seed(0)
    cfg = compose_config([f"model={option}", *SMALL.get(option, [])])
    model = build(cfg.model, in_channels=channels, num_classes=classes)
    model.train()
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, classes)
    out.logsumexp(1).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
