"""Every job of a study composed by Hydra and built as a run would build it, without data: bad keys,
unknown options and values a run would refuse show up before anything is submitted."""

from __future__ import annotations

from omegaconf import OmegaConf

from cifarzoo.errors import ConfigError
from sweeps.study import Study


def check_study(study: Study) -> list[str]:
    """One line per job that would not start: its overrides and the error."""
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    from cifarzoo.build import build_components
    from cifarzoo.paths import REPO_DIR

    problems, seen = [], set()
    with initialize_config_dir(config_dir=str(REPO_DIR / "conf"), version_base="1.3"):
        for job in study.jobs():
            try:
                cfg = compose(config_name="config", overrides=job)
                key = OmegaConf.to_yaml(OmegaConf.masked_copy(cfg, ["model", "aug", "optim", "sched", "data",
                                                                    "precision", "train"]))
                if key in seen:  # seeds differ only
                    continue
                seen.add(key)
                with torch.device("meta"):  # shapes only: big models build in milliseconds
                    c = build_components(cfg)
                    optimizer = c.optimizer_factory.build(c.model, c.settings.batch_size)
                    c.schedule.build(optimizer, 1, c.settings.epochs)
            except (ConfigError, HydraException) as error:
                problems.append(f"{' '.join(job)}: {error}".replace("\n", " "))
    return problems
