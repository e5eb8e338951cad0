"""Every job of a study composed by Hydra and built as a run would build it, without data: bad keys,
unknown options and values a run would refuse show up before anything is submitted."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from sweeps.study import Study


def check_study(study: Study) -> list[str]:
    """One line per job that would not start: its overrides and the error (cifarzoo.preflight).
    Each job's config must also log its overrides as the params `sweeps table` finds its runs by."""
    from hydra import initialize_config_dir

    from cifarzoo.paths import REPO_DIR
    from cifarzoo.preflight import compose_job, distinct_jobs, invalid_jobs

    problems = []
    with initialize_config_dir(config_dir=str(REPO_DIR / "conf"), version_base="1.3"):
        jobs, cache = distinct_jobs(study.jobs()), {}
        invalid = invalid_jobs(jobs, cache=cache)
        problems += [f"{' '.join(job)}: {error}" for job, error in invalid]
        bad = {tuple(job) for job, _ in invalid}
        for job in jobs:
            if tuple(job) in bad:
                continue
            unlogged = _unlogged(job, compose_job(job, cache))
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
