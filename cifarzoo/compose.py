"""Compose the run's config outside `run.py` (describe, bench), as run.py would compose it."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, open_dict
from omegaconf.errors import OmegaConfBaseException

import cifarzoo  # noqa: F401  (registers the config resolvers)
from cifarzoo.config import choice_name
from cifarzoo.errors import ConfigError
from cifarzoo.paths import REPO_DIR

CONF_DIR = REPO_DIR / "conf"


def compose_with_choices(overrides: Sequence[str]) -> tuple[DictConfig, dict[str, str]]:
    """The config for these overrides (without the `hydra` node) and the chosen option per group;
    a `+key` it does not know is a ConfigError (`cifarzoo.config.check_override_keys`)."""
    from cifarzoo.config import check_override_keys

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
        check_override_keys(cfg, overrides, schema_without_adds(overrides))
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


def schema_without_adds(overrides: Sequence[str], config_name: str = "config") -> DictConfig | None:
    """The config composed without its `++key` overrides (what `check_override_keys` checks those
    against), or None when there are none. Needs an initialized Hydra (a running app)."""
    from hydra import compose as hydra_compose

    kept = [o for o in overrides if not o.startswith("++")]
    return None if len(kept) == len(overrides) else hydra_compose(config_name=config_name, overrides=kept)


def check_job_keys(cfg: DictConfig) -> None:
    """In run.py's task, before torch and mlflow are imported: a `+key` the config does not know is
    one line on stderr, exit 2 (a single run's fresh output dir is removed, as for any refusal)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from cifarzoo.config import check_override_keys

    hc = HydraConfig.get()
    overrides = list(hc.overrides.task)
    try:
        check_override_keys(cfg, overrides, schema_without_adds(overrides, hc.job.config_name or "config"))
    except ConfigError as error:
        from pathlib import Path

        from cifarzoo.jobdir import FoundDir

        FoundDir.look(Path(hc.runtime.output_dir)).leave(single_run=hc.mode != RunMode.MULTIRUN)
        print(f"cifarzoo: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def unknown_override_line(message: str, args: Sequence[str]) -> str | None:
    """Hydra's `Could not override 'train.epoch'. To append to your config use +train.epoch=3` (whose
    hint adds a key that nothing reads) as one line naming the closest known key; None for other errors."""
    import re

    from cifarzoo.config import unknown_override_hint

    found = re.match(r"Could not override '([^']+)'", message)
    if found is None:
        return None
    key = found.group(1)
    others = [a for a in args if "=" in a and not a.startswith("-") and a.split("=")[0].lstrip("+~") != key]
    for overrides in (others, []):
        try:
            GlobalHydra.instance().clear()
            schema, _ = compose_with_choices([o for o in overrides if "," not in o])
            return unknown_override_hint(key, schema)
        except Exception:  # noqa: BLE001  (a sweep's other override that does not compose alone)
            continue
    return None
