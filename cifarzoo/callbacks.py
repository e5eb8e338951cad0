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
    """Before the jobs: the tracking server answers and the experiment exists (so jobs never race
    to create it). After them: one line counting finished, failed, skipped and resumed runs; a
    sweep with failed runs (or jobs without a readable outcome) exits 1."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("plan", False):
            return
        uri = config.tracking.uri or default_tracking_uri()
        try:
            check_reachable(uri)
            connect(uri, config.tracking.experiment)
        except ConfigError as error:
            print(f"cifarzoo: error: {error}", file=sys.stderr)
            raise SystemExit(2) from None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        line, counts = summarize(Path(config.hydra.sweep.dir))
        print(line, flush=True)
        if failed_jobs(counts):
            raise SystemExit(1)
