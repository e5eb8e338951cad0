"""Helpers over the composed config: instantiation with one-line errors, flattening, hashing."""

from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import json
from collections.abc import Sequence
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cifarzoo.errors import ConfigError

GROUPS = ("model", "aug", "optim", "sched", "data", "precision")
# Every `+key=value` a run takes: the only keys beyond conf/'s yaml (docs/cli.md lists them). Any other
# `+key` is refused (`check_override_keys`): Hydra would add it and the run would ignore it.
PLUS_SWITCHES = {
    "plan": "print what each job would do (run, resume, skip, invalid); train and write nothing",
    "restart": "start the run in the run dir over (its checkpoints kept as *.discarded)",
    "rerun_failed": "rerun a configuration whose earlier run FAILED (a sweep skips it otherwise)",
    "model.init": "any model's weight init: default | kaiming_fan_in | kaiming_fan_out | xavier_uniform | "
                  "xavier_normal | pytorch_default (cifarzoo/models/init.py)",
    "model.bn_weight_init": "any model's BatchNorm weight init: one | uniform (cifarzoo/models/init.py)",
}
SWITCHES = tuple(k for k in PLUS_SWITCHES if "." not in k)  # the top-level ones
# Keys that say where things are, how a sweep is driven or how progress is shown, not what is
# trained: left out of `config_hash`.
_LOCATION_KEYS = (("tracking",), ("data", "root"), ("data", "download"), ("seed",), ("plan",), ("rerun_failed",), ("restart",),
                  ("train", "progress"), ("train", "progress_every_s"))


# Keys added to an option after runs of it existed, at the value that builds what those runs
# built: left out of `config_hash` at that value, so the earlier runs keep their hash (a sweep
# still finds them finished). (group, the option's _target_ or "*" for any, key) -> value.
HASH_NEUTRAL = {
    ("model", "cifarzoo.models.shake_shake.ShakeShake", "variant"): "official",
    ("model", "cifarzoo.models.shake_shake.ShakeShake", "shortcut_shift"): None,
    ("model", "cifarzoo.models.shake_shake.ShakeShake", "stem_bias"): False,
    ("model", "cifarzoo.models.pyramidnet.PyramidNet", "stem_times_expansion"): False,
    ("model", "cifarzoo.models.resnet_preact.ResNetPreAct", "stage1_expansion"): True,
    ("model", "cifarzoo.models.se_resnet_preact.SEResNetPreAct", "stage1_expansion"): True,
    ("model", "cifarzoo.models.densenet.DenseNet", "stem_channels"): None,
    ("sched", "*", "step_at"): "epoch_end",
}


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
        raise ConfigError(unknown[0], f"unknown top-level key{_did_you_mean(unknown[0], top_level_keys())}"
                          f" (a typo? experiments are +experiment=NAME from conf/experiment/; {switches_line()})",
                          cfg[unknown[0]])


def switches_line() -> str:
    return "the + switches are " + ", ".join(f"+{k}" for k in PLUS_SWITCHES)


def check_override_keys(cfg: DictConfig, overrides: Sequence[str], schema: DictConfig | None = None) -> None:
    """Refuse a `+key=value` (or `++key=value`) override whose key the config's schema does not know,
    at any depth (`+train.epoch=3` would add a key nothing reads and train the default 200 epochs):
    one line with the closest known key. The schema is `cfg` without the added keys; for `++`
    overrides (which may also set a key that exists) pass `schema`, the config composed without them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from cifarzoo.paths import REPO_DIR

    added = [o for o in OverridesParser.create().parse_overrides(list(overrides)) if o.is_add() or o.is_force_add()]
    keys = [o.key_or_group for o in added if o.package is None and not o.key_or_group.startswith("hydra.")
            and not (REPO_DIR / "conf" / o.key_or_group.replace(".", "/")).is_dir()]  # `+experiment=NAME`: a group
    known = _dotted_keys(OmegaConf.to_container(cfg if schema is None else schema, resolve=False))
    for key in keys:
        if key in PLUS_SWITCHES or (schema is not None and key in known):
            continue
        candidates = [k for k in known if k != key and not k.startswith(key + ".")] + list(PLUS_SWITCHES)
        raise ConfigError(key, f"{_unknown(key)}{_did_you_mean(key, candidates)}; {switches_line()}",
                          OmegaConf.select(cfg, key, default=None, throw_on_missing=False))


def unknown_override_hint(key: str, schema: DictConfig) -> str:
    """Hydra's `Could not override 'train.epoch'` as one line with the closest known key."""
    known = _dotted_keys(OmegaConf.to_container(schema, resolve=False))
    return f"{key}: {_unknown(key)}{_did_you_mean(key, known)}; {switches_line()}"


def _unknown(key: str) -> str:
    return "unknown key" if "." in key else "unknown top-level key"


def _did_you_mean(key: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _dotted_keys(tree: Any, prefix: str = "") -> list[str]:
    """Every key of a nested dict as a dotted path, inner nodes included."""
    keys: list[str] = []
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key in ("_target_", "defaults"):
                continue
            keys.append(f"{prefix}{key}")
            keys += _dotted_keys(value, f"{prefix}{key}.")
    return keys


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
    for (group, target, key), value in HASH_NEUTRAL.items():
        node = tree.get(group)
        if isinstance(node, dict) and target in ("*", node.get("_target_")) and key in node and node[key] == value:
            del node[key]
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
