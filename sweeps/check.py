"""Every job of a study composed by Hydra and built as a run would build it, without data: bad keys,
unknown options and values a run would refuse show up before anything is submitted."""

from __future__ import annotations

import copy

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cifarzoo.errors import ConfigError
from sweeps.study import Study


def check_study(study: Study) -> list[str]:
    """One line per job that would not start: its overrides and the error. Jobs that differ only in
    their seed build the same parts: one of them is checked. Each job's config must also log its
    overrides as the params `sweeps table` finds its runs by."""
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    from cifarzoo.paths import REPO_DIR

    distinct = {tuple(o for o in job if not o.startswith("seed=")): job for job in study.jobs()}
    cache: dict[tuple[str, ...], DictConfig] = {}
    problems = []
    with initialize_config_dir(config_dir=str(REPO_DIR / "conf"), version_base="1.3"):
        for job in distinct.values():
            try:
                cfg = _compose(job, cache)
                _build(cfg)
            except (ConfigError, HydraException) as error:
                problems.append(f"{' '.join(job)}: {error}".replace("\n", " "))
                continue
            unlogged = _unlogged(job, cfg)
            if unlogged:
                problems.append(f"{' '.join(job)}: its runs would not be found by `sweeps table`: {', '.join(unlogged)}")
    return problems


def _unlogged(job: list[str], cfg: DictConfig) -> list[str]:
    """The job's overrides its run would not log as such (params: the flattened config; a group's
    choice is the override itself, as Hydra records it)."""
    from cifarzoo.config import GROUPS, flatten
    from sweeps.published import NOT_ROW_KEYS, mismatches, parse

    settings = dict(parse(o) for o in job if o.split("=", 1)[0].lstrip("+~") not in NOT_ROW_KEYS)
    params = flatten(OmegaConf.to_container(cfg, resolve=True))
    return mismatches({k: v for k, v in settings.items() if k not in GROUPS}, params)


def _compose(job: list[str], cache: dict[tuple[str, ...], DictConfig]) -> DictConfig:
    """The job's config. Hydra composes each distinct choice of config-group options once (a compose
    reads every yaml again, ~0.2 s); a job that differs from it only in `a.b=value` overrides gets
    those values set on a copy, as the override would set them."""
    from hydra import compose
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(job)
    dotted = [p for p in parsed if "." in p.key_or_group and not (p.is_add() or p.is_delete() or p.is_force_add())]
    groups = tuple(o for o, p in zip(job, parsed) if p not in dotted)
    if groups in cache:
        cfg = copy.deepcopy(cache[groups])
        try:
            for p in dotted:
                OmegaConf.update(cfg, p.key_or_group, p.value(), merge=False)
            return cfg
        except OmegaConfBaseException:
            pass  # Hydra's compose says why, in its words
    cfg = compose(config_name="config", overrides=job)
    cache[groups] = cfg
    return cfg


def _build(cfg: DictConfig) -> None:
    import torch

    from cifarzoo.build import build_components

    with torch.device("meta"):  # shapes only: big models build in milliseconds
        c = build_components(cfg)
        optimizer = c.optimizer_factory.build(c.model, c.settings.batch_size)
        c.schedule.build(optimizer, 1, c.settings.epochs)
