"""Pre-flight validation of a multirun: every job composed by Hydra and built on the meta device
(shapes only, no data), so that a bad job stops the sweep before anything trains or is submitted.
`run.py -m` runs it from its multirun-start callback; `python -m sweeps check` on a whole study."""

from __future__ import annotations

import copy
import difflib
import shutil
import subprocess
from collections.abc import Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cifarzoo.errors import ConfigError, is_int


def sweep_jobs(task_overrides: Sequence[str], sweeper_params: dict[str, str] | None = None) -> list[list[str]]:
    """The overrides of each job of `run.py -m <task_overrides>`, expanded by Hydra's basic sweeper
    (its `hydra.sweeper.params` first, as it does)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    given = [f"{key}={value}" for key, value in (sweeper_params or {}).items()] + list(task_overrides)
    parsed = OverridesParser.create().parse_overrides(given)
    return [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def invalid_jobs(jobs: Sequence[Sequence[str]], config_name: str = "config",
                 cache: dict[tuple[str, ...], DictConfig] | None = None) -> list[tuple[list[str], str]]:
    """(overrides, one-line error) of each job that would not start. Needs an initialized Hydra (a
    running app, or `initialize_config_dir`). Jobs that differ only in their seed build the same
    parts: the first of them is checked and reported."""
    cache = {} if cache is None else cache
    problems = []
    for job in distinct_jobs(jobs):
        error = job_error(job, cache, config_name)
        if error is not None:
            problems.append((job, error))
    return problems


def distinct_jobs(jobs: Sequence[Sequence[str]]) -> list[list[str]]:
    """The first job of each configuration (jobs that differ only in their seed build the same parts)."""
    distinct: dict[tuple[str, ...], list[str]] = {}
    for job in jobs:
        distinct.setdefault(tuple(o for o in job if not o.lstrip("+~").startswith("seed=")), list(job))
    return list(distinct.values())


def job_error(job: list[str], cache: dict[tuple[str, ...], DictConfig], config_name: str = "config") -> str | None:
    """Why the job would not start (one line), or None."""
    from hydra.errors import HydraException

    from cifarzoo.compose import one_line

    from cifarzoo.config import check_override_keys

    try:
        cfg = compose_job(job, cache, config_name)
        check_override_keys(cfg, job, _schema(job, config_name))
        build_on_meta(cfg)
    except (ConfigError, HydraException, OmegaConfBaseException) as error:
        return one_line(str(error)).replace("\n", " ")
    return None


def compose_job(job: list[str], cache: dict[tuple[str, ...], DictConfig], config_name: str = "config") -> DictConfig:
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
    cfg = compose(config_name=config_name, overrides=list(job))
    cache[groups] = cfg
    return cfg


def build_on_meta(cfg: DictConfig) -> None:
    """Every part a run builds before its data, its optimizer and LR schedule included (and its progress display)."""
    import torch

    from cifarzoo.build import build_components
    from cifarzoo.progress import progress_from_config

    progress_from_config(cfg.train)
    with torch.device("meta"):  # shapes only: big models build in milliseconds
        c = build_components(cfg)
        optimizer = c.optimizer_factory.build(c.model, c.settings.batch_size)
        c.schedule.build(optimizer, 1, c.settings.epochs)


def _schema(job: list[str], config_name: str) -> DictConfig | None:
    from cifarzoo.compose import schema_without_adds

    return schema_without_adds(job, config_name)


def check_launcher(launcher: DictConfig) -> None:
    """The launcher's settings, before the sweep dir exists: joblib's `n_jobs` a positive int;
    SLURM's `sbatch` and `srun` on PATH and, where `sinfo` answers, its partition one of the cluster's."""
    target = str(launcher.get("_target_", ""))
    if "joblib" in target.lower():
        n_jobs = launcher.get("n_jobs")
        if not (is_int(n_jobs) and n_jobs >= 1):
            raise ConfigError("hydra.launcher.n_jobs", "must be a positive int (runs at once)", n_jobs)
    if "slurm" in target.lower():
        for tool in ("sbatch", "srun"):
            if shutil.which(tool) is None:
                raise ConfigError("hydra/launcher", f"slurm needs SLURM's {tool} on PATH and it is not there; run on a "
                                  "cluster's login node, or drop hydra/launcher=slurm to run here", "slurm")
        partition = launcher.get("partition")
        known = _partitions()
        if partition is not None and known and str(partition) not in known:
            close = difflib.get_close_matches(str(partition), known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError("hydra.launcher.partition", f"not a partition of this cluster{hint}; sinfo lists "
                              f"{', '.join(known)}", partition)


def _partitions() -> list[str]:
    """The cluster's partitions as `sinfo` names them ([] when sinfo is not there or fails)."""
    if shutil.which("sinfo") is None:
        return []
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted({line.strip().rstrip("*") for line in out.splitlines() if line.strip()})


def missing_data(jobs: Sequence[Sequence[str]], cache: dict[tuple[str, ...], DictConfig],
                 config_name: str = "config") -> list[tuple[list[str], str]]:
    """(first job, one-line error) of each distinct dataset of the sweep (its class, root and download
    setting) whose files are neither there nor to be downloaded: checked once each, before job 0."""
    from cifarzoo.config import build

    seen: set[tuple[str, str, bool]] = set()
    problems = []
    for job in distinct_jobs(jobs):
        data = compose_job(list(job), cache, config_name).data
        key = (str(data.get("_target_")), str(data.get("root")), bool(data.get("download")))
        if key in seen:
            continue
        seen.add(key)
        try:
            build(data).check_files()
        except ConfigError as error:
            problems.append((list(job), str(error)))
    return problems
