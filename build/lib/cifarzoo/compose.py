"""Compose the run's config outside `run.py` (describe, bench), as run.py would compose it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, open_dict
from omegaconf.errors import OmegaConfBaseException

import cifarzoo  # noqa: F401  (registers the config resolvers)
from cifarzoo.config import choice_name
from cifarzoo.errors import ConfigError
from cifarzoo.paths import REPO_DIR

CONF_DIR = REPO_DIR / "conf"


def compose_with_choices(overrides: Sequence[str]) -> tuple[DictConfig, dict[str, str]]:
    """The config for these overrides (without the `hydra` node) and the chosen option per group."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    choices = {k: choice_name(v) for k, v in cfg.hydra.runtime.choices.items() if not k.startswith("hydra/")}
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Hydra/OmegaConf composition errors re-raised as a one-line ConfigError on `overrides`."""
    try:
        yield
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError("overrides", one_line(str(error))) from None


def one_line(message: str) -> str:
    """Hydra's multi-line composition errors as one line (without the config search path)."""
    parts: list[str] = []
    for line in message.splitlines():
        if line.startswith("Config search path"):
            break
        if not line.strip() or line.startswith("See https://hydra.cc"):
            continue
        raw_tab = line.startswith("\t")
        line = line.strip()
        if raw_tab and parts:  # an option list under "Available options in ...:"
            parts[-1] += (" " if parts[-1].endswith(":") else ", ") + line
        elif parts and parts[-1].endswith((".", ":")):
            parts[-1] += " " + line
        else:
            parts.append(line)
    return "; ".join(parts)
