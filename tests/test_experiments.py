"""conf/experiment/*.yaml: each overlay (`+experiment=NAME`) composes, builds, and is its source's
recipe: the same config as the row of the study it names."""

from __future__ import annotations

import pytest
from conftest import CONF_DIR, compose_config
from omegaconf import OmegaConf

from cifarzoo.models import count_parameters
from cifarzoo.preflight import build_on_meta
from sweeps.study import load

# overlay -> (the study it names, the overrides that pick its row, parameters of its model)
RECIPES = {
    "wrn28_10_ricap": ("h001_cifar10_wrn_shake_aug", ["model=wrn", "aug=ricap", "train.epochs=200"], 36_479_194),
    "shake_shake26_2x96d_cosine1800": (
        "shake_cifar10_table1", ["model.base_channels=96", "model.shake_forward=shake", "model.shake_backward=shake"],
        26_190_000),
    "resnet_preact20_w4_cutout": ("h001_cifar10_preact20_w4_long", ["aug=cutout", "train.epochs=200"], None),
}


def test_every_overlay_is_tested():
    assert sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")) == sorted(RECIPES)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_experiment_is_its_sources_recipe_and_builds(name):
    text = (CONF_DIR / "experiment" / f"{name}.yaml").read_text()
    study_name, row, params = RECIPES[name]
    assert text.startswith("# @package _global_\n") and "Source:" in text and f"sweeps/{study_name}.yaml" in text
    cfg = compose_config([f"+experiment={name}"])
    (job,) = {tuple(j) for j in load(study_name).jobs() if set(row) <= set(j) and "seed=1" in j}
    study_cfg = compose_config(list(job))
    ours, theirs = (OmegaConf.to_container(c, resolve=True) for c in (cfg, study_cfg))
    for tree in (ours, theirs):
        del tree["seed"], tree["tracking"]
    assert ours == theirs
    build_on_meta(cfg)
    if params is not None:
        import torch

        from cifarzoo.config import build_model

        with torch.device("meta"):
            count = count_parameters(build_model(cfg.model, 3, 10))
        assert count == pytest.approx(params, rel=1e-3)
