"""Hydra callbacks of a multirun, run in the submitting process (locally or before SLURM jobs)."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cifarzoo.errors import ConfigError
from cifarzoo.exits import BAD_CONFIG, DIVERGED, FAILED, rerun_command
from cifarzoo.jobdir import OUTCOME_FILE
from cifarzoo.paths import default_tracking_uri

# torch and mlflow are imported where a sweep needs them: Hydra builds these callbacks for every
# run.py call, single runs and config errors included, which must answer in about a second.


class SweepCallbacks(Callback):
    """Before the jobs, and before the sweep dir exists: every job composes, knows each of its keys
    and builds (on the meta device, no data), each distinct dataset's files are there or to be
    downloaded, the launcher's settings hold (n_jobs, sbatch/srun, the partition): one line per bad
    job or setting, exit 2, before anything trains or is submitted; the tracking server answers and
    the experiment exists (so jobs never race to create it). Under `+plan=true` each job reports
    itself, an invalid one as `plan: invalid` (the plan then exits 2). As each job ends: `k/N
    done, ETA ...`. After them: one line counting finished, failed, diverged, skipped and resumed
    runs, and the exit code (`cifarzoo.exits`): 1 with failed or interrupted runs (or jobs without
    a readable outcome), else 3 with diverged runs. A sweep stopped early (Ctrl-C) prints the
    same line, what did not run, and the command that resumes it (`sweep_stopped`)."""

    sweep_dir: Path | None = None
    total = 0  # jobs in the sweep
    started_at = 0.0
    plan = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from cifarzoo.preflight import check_launcher

        from cifarzoo.tracking import check_reachable, connect

        self.plan = bool(config.get("plan", False))
        uri = config.tracking.uri or default_tracking_uri()
        if self.plan:
            _one_line_exit(check_launcher, config.hydra.launcher)
            _one_line_exit(check_reachable, uri)
            _plan(config)  # exits: a plan launches nothing and writes nothing
        try:
            _check_jobs(config)
            check_launcher(config.hydra.launcher)
            check_reachable(uri)
        except ConfigError as error:
            print(f"cifarzoo: error: {error}", file=sys.stderr)
            raise SystemExit(BAD_CONFIG) from None
        _skip_when_all_done(config)
        try:
            connect(uri, config.tracking.experiment)
        except ConfigError as error:
            print(f"cifarzoo: error: {error}", file=sys.stderr)
            raise SystemExit(BAD_CONFIG) from None
        self.sweep_dir, self.total, self.started_at = Path(config.hydra.sweep.dir), len(_sweep_jobs(config)), time.time()
        _RUNNING.append(self)

    def on_job_end(self, config: DictConfig, **kwargs: Any) -> None:
        """`cifarzoo sweep: k/N done, ETA 1h02m`, counted from the sweep dir's outcome files (so
        also right in parallel workers and SLURM jobs, where this runs in the job's process)."""
        if self.sweep_dir is None:
            return
        from cifarzoo.progress import format_eta

        done = _jobs_done(self.sweep_dir)
        if done:
            left = max(self.total - done, 0)
            eta = (time.time() - self.started_at) / done * left
            print(f"cifarzoo sweep: {done}/{self.total} done, ETA {format_eta(eta)}", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from cifarzoo.sweep import failed_jobs, summarize

        if self in _RUNNING:
            _RUNNING.remove(self)
        line, counts = summarize(Path(config.hydra.sweep.dir))
        print(line, flush=True)
        if counts["plan-invalid"]:
            raise SystemExit(BAD_CONFIG)
        if failed_jobs(counts) or counts["interrupted"]:
            raise SystemExit(FAILED)
        if counts["diverged"]:
            raise SystemExit(DIVERGED)


def _one_line_exit(check: Any, *args: Any) -> None:
    try:
        check(*args)
    except ConfigError as error:
        print(f"cifarzoo: error: {error}", file=sys.stderr)
        raise SystemExit(BAD_CONFIG) from None


_RUNNING: list[SweepCallbacks] = []  # the multirun under way in this process (its submitting process)


def sweep_stopped(code: int) -> None:
    """After a multirun of this process stopped before its end (run.py's exit path): its summary,
    the jobs that did not end, and the command that resumes it."""
    while _RUNNING:
        from cifarzoo.sweep import summarize

        sweep = _RUNNING.pop()
        line, _ = summarize(sweep.sweep_dir)
        left = sweep.total - _jobs_done(sweep.sweep_dir)
        print(f"{line}; stopped {_why(code)}: {left} of {sweep.total} jobs did not end", flush=True)
        print(f"cifarzoo: to resume the sweep (finished runs are skipped, interrupted ones resume from their "
              f"checkpoints): {rerun_command(sys.argv[1:])}", flush=True)


def _why(code: int) -> str:
    if code > 128:
        try:
            return f"by {signal.Signals(code - 128).name}"
        except ValueError:
            pass
    return f"with exit code {code}"


def _sweep_jobs(config: DictConfig) -> list[list[str]]:
    from cifarzoo.preflight import sweep_jobs

    params = config.hydra.sweeper.get("params") or {}
    return sweep_jobs(list(config.hydra.overrides.task), {str(k): str(v) for k, v in params.items()})


def _jobs_done(sweep_dir: Path) -> int:
    return sum(1 for _ in sweep_dir.glob(f"*/{OUTCOME_FILE}"))


def _check_jobs(config: DictConfig) -> None:
    """Raise SystemExit(2) after one line per job of the sweep that would not start."""
    from cifarzoo.preflight import invalid_jobs, missing_data

    jobs = _sweep_jobs(config)
    cache: dict = {}
    invalid = invalid_jobs(jobs, config_name=config.hydra.job.config_name or "config", cache=cache)
    if not invalid:  # every job builds: then the data of each distinct dataset must be there
        invalid = missing_data(jobs, cache, config.hydra.job.config_name or "config")
    for job, error in invalid:
        print(f"cifarzoo: error: job {' '.join(job) or '(defaults)'}: {error}", file=sys.stderr)
    if invalid:
        print(f"cifarzoo: error: {len(invalid)} invalid job(s) of {len(jobs)}; nothing was run", file=sys.stderr)
        raise SystemExit(BAD_CONFIG)


def _decisions(config: DictConfig) -> list[tuple[list[str], Any]]:
    """(overrides, `cifarzoo.task.plan_job`'s Decision) of every job, decided before any is launched."""
    from omegaconf import OmegaConf

    from cifarzoo.preflight import compose_job, job_error
    from cifarzoo.sweep import Decision
    from cifarzoo.task import plan_job

    sweep_dir = Path(config.hydra.sweep.dir)
    numbered = OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir") == "${hydra.job.num}"
    launcher = config.hydra.launcher
    cache: dict = {}
    decided = []
    for num, job in enumerate(_sweep_jobs(config)):
        error = job_error(job, cache, config.hydra.job.config_name or "config")
        if error is not None:
            decided.append((job, Decision("invalid", error)))
            continue
        cfg = compose_job(job, cache, config.hydra.job.config_name or "config")
        world = int(launcher.get("nodes", 1)) * int(launcher.get("tasks_per_node", 1)) if cfg.train.distributed else 1
        job_dir = sweep_dir / (str(num) if numbered else f".not-a-job-dir-{num}")
        decided.append((job, plan_job(cfg, job, job_dir, world)))
    return decided


def _plan(config: DictConfig) -> None:
    """`+plan=true`: one line per job (run, resume, skip, invalid), one count, exit 2 with an invalid
    job, else 0; before the launcher, so that nothing is launched, submitted or written."""
    from collections import Counter

    counts: Counter[str] = Counter()
    for job, decision in _decisions(config):
        counts[decision.action] += 1
        print(f"plan: {decision.action:6s} {' '.join(job) or '(defaults)'}: {decision.reason}", flush=True)
    parts = [f"{counts[a]} would {a}" for a in ("run", "resume", "skip")]
    if counts["invalid"]:
        parts.append(f"{counts['invalid']} invalid")
    print(f"cifarzoo plan: {', '.join(parts)} (nothing was written)", flush=True)
    raise SystemExit(BAD_CONFIG if counts["invalid"] else 0)


def _skip_when_all_done(config: DictConfig) -> None:
    """A rerun whose every job would be skipped (FINISHED before, FAILED before without
    +rerun_failed, running elsewhere) launches nothing, so it adds no sweep dir of skipped stubs:
    one line per job and the sweep's count line, exit 0."""
    decided = _decisions(config)
    if not decided or any(d.action != "skip" for _, d in decided):
        return
    for job, decision in decided:
        print(f"skipped: {' '.join(job) or '(defaults)'}: {decision.reason}", flush=True)
    failed = sum(d.failed_before for _, d in decided)
    note = f" ({failed} FAILED before; +rerun_failed=true reruns them)" if failed else ""
    print(f"cifarzoo sweep: 0 finished (0 resumed), 0 failed, {len(decided)} skipped{note}; every job was done "
          "before: nothing was launched and no sweep dir was made", flush=True)
    raise SystemExit(0)
