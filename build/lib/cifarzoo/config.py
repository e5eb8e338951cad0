"""Helpers over the composed config: instantiation with one-line errors, flattening, hashing."""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cifarzoo.errors import ConfigError

GROUPS = ("model", "aug", "optim", "sched", "data", "precision")
# `+key=true` switches of run.py (cifarzoo.task): the only top-level keys beyond conf/config.yaml's.
SWITCHES = ("plan", "rerun_failed", "restart")
# Keys that say where things are, how a sweep is driven or how progress is shown, not what is
# trained: left out of `config_hash`.
_LOCATION_KEYS = (("tracking",), ("data", "root"), ("data", "download"), ("seed",), ("plan",), ("rerun_failed",), ("restart",),
                  ("train", "progress"), ("train", "progress_every_s"))


@functools.lru_cache(maxsize=1)
def top_level_keys() -> frozenset[str]:
    """The top-level keys a run's config may hold: conf/config.yaml's, the groups and the switches."""
    from cifarzoo.paths import REPO_DIR

    primary = OmegaConf.load(REPO_DIR / "conf" / "config.yaml")
    return frozenset(k for k in primary if k != "defaults") | set(GROUPS) | set(SWITCHES)


def check_top_level_keys(cfg: DictConfig) -> None:
    """`+experimnt=x` or `+lr=0.1` would otherwise train the default and log a junk param."""
    unknown = sorted(set(cfg) - top_level_keys())
    if unknown:
        raise ConfigError(unknown[0], "unknown top-level key (a typo? experiments are +experiment=NAME from "
                          "conf/experiment/; run switches are +plan, +restart, +rerun_failed)", cfg[unknown[0]])


def build(node: DictConfig, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate`, re-raising a ConfigError from the target as itself."""
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, ConfigError):
            raise error.__cause__ from None
        raise


# Keys every model option takes without naming them in its yaml (set them with `+model.init=...`):
# applied after the family's constructor (`cifarzoo.models.init.apply_init`), with these defaults.
MODEL_INIT_KEYS = {"init": "default", "bn_weight_init": "one"}


def build_model(node: DictConfig, in_channels: int, num_classes: int) -> Any:
    """The `model` group's network: its `_target_` built from the other keys, then initialised by
    `model.init` / `model.bn_weight_init` when the config sets them (absent = the family's own init)."""
    from cifarzoo.models.init import apply_init

    node = copy.deepcopy(node)
    with_struct = OmegaConf.is_struct(node)
    OmegaConf.set_struct(node, False)
    init = {key: node.pop(key, default) for key, default in MODEL_INIT_KEYS.items()}
    OmegaConf.set_struct(node, with_struct)
    return apply_init(build(node, in_channels=in_channels, num_classes=num_classes), **init)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Dotted keys -> string values (lists as JSON); `_target_` entries are left out."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        if key == "_target_":
            continue
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, dotted + "."))
        elif isinstance(value, (list, tuple)):
            flat[dotted] = json.dumps(value)
        else:
            flat[dotted] = str(value)
    return flat


def config_hash(resolved: dict[str, Any]) -> str:
    """Stable hash of the resolved config without the seed and without paths/locations."""
    tree = copy.deepcopy(resolved)
    for path in _LOCATION_KEYS:
        node = tree
        for key in path[:-1]:
            node = node.get(key, {})
        node.pop(path[-1], None)
    return hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()[:16]


def list_choices(task_overrides: list[str]) -> dict[str, str]:
    """Group choices given as lists on the command line (`aug=[cutout,mixup]`), which Hydra leaves
    out of `hydra.runtime.choices`."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    found = {}
    for override in OverridesParser.create().parse_overrides(task_overrides):
        group = override.key_or_group
        if group in GROUPS and override.package is None and isinstance(override.value(), list):
            found[group] = choice_name(override.value())
    return found


def choice_name(choice: Any) -> str:
    """`aug=[cutout,mixup]` is recorded as `cutout+mixup`."""
    if isinstance(choice, (list, tuple)) or type(choice).__name__ == "ListConfig":
        return "+".join(str(c) for c in choice)
    return str(choice)
