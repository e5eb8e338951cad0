"""Hydra callbacks of a multirun, run in the submitting process (locally or before SLURM jobs)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cifarzoo.errors import ConfigError
from cifarzoo.paths import default_tracking_uri
from cifarzoo.sweep import failed_jobs, summarize
from cifarzoo.tracking import check_reachable, connect


class SweepCallbacks(Callback):
    """Before the jobs: every job composes and builds (on the meta device, no data; one line per
    bad job, exit 2, before anything trains or is submitted), the tracking server answers and the
    experiment exists (so jobs never race to create it). Under `+plan=true` each job reports
    itself, an invalid one as `plan: invalid` (the plan then exits 2). After them: one line
    counting finished, failed, skipped and resumed runs; a sweep with failed runs (or jobs without
    a readable outcome) exits 1."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("plan", False):
            return
        uri = config.tracking.uri or default_tracking_uri()
        try:
            check_reachable(uri)
            _check_jobs(config)
            connect(uri, config.tracking.experiment)
        except ConfigError as error:
            print(f"cifarzoo: error: {error}", file=sys.stderr)
            raise SystemExit(2) from None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        line, counts = summarize(Path(config.hydra.sweep.dir))
        print(line, flush=True)
        if counts["plan-invalid"]:
            raise SystemExit(2)
        if failed_jobs(counts):
            raise SystemExit(1)


def _check_jobs(config: DictConfig) -> None:
    """Raise SystemExit(2) after one line per job of the sweep that would not start."""
    from cifarzoo.preflight import invalid_jobs, sweep_jobs

    params = config.hydra.sweeper.get("params") or {}
    jobs = sweep_jobs(list(config.hydra.overrides.task), {str(k): str(v) for k, v in params.items()})
    invalid = invalid_jobs(jobs, config_name=config.hydra.job.config_name or "config")
    for job, error in invalid:
        print(f"cifarzoo: error: job {' '.join(job) or '(defaults)'}: {error}", file=sys.stderr)
    if invalid:
        print(f"cifarzoo: error: {len(invalid)} invalid job(s) of {len(jobs)}; nothing was run", file=sys.stderr)
        raise SystemExit(2)
