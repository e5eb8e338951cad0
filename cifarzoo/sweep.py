"""Resumable sweeps: what a job does given the runs its experiment already holds, and the
per-job outcome files the end-of-sweep summary counts.

A configuration is identified by its `config_hash` tag and its seed. Re-invoking a sweep skips
the configurations that FINISHED, resumes unfinished ones from their checkpoints (in their old
output dir, into their old MLflow run), and reruns FAILED ones only with `+rerun_failed=true`.
`+plan=true` prints what each job would do and does nothing."""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient

from cifarzoo import checkpoint, runlock
from cifarzoo.jobdir import OUTCOME_FILE
from cifarzoo.runrecord import RUN_FILE, vouches_for

log = logging.getLogger("cifarzoo")

UNFINISHED = ("RUNNING", "SCHEDULED", "KILLED")


@dataclass
class Decision:
    action: str  # "run" | "resume" | "skip" | "invalid" (a plan's refused resume)
    reason: str
    output_dir: Path | None = None  # where to resume
    test_error: float = math.nan  # of the FINISHED run a skip refers to
    failed_before: bool = False  # a skip of a configuration that FAILED
    running_elsewhere: bool = False  # a skip of a run another live process holds (its run.lock)


def decide(client: MlflowClient, experiment: str, config_hash: str, seed: int, rerun_failed: bool) -> Decision:
    """What to do with (config_hash, seed), given the experiment's runs (a missing experiment: run)."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return Decision("run", "new")
    runs = client.search_runs(
        [found.experiment_id], filter_string=f"tags.config_hash = '{config_hash}' and params.seed = '{seed}'",
        order_by=["attributes.start_time DESC"], max_results=1000,
    )
    for run in runs:
        if run.info.status != "FINISHED":
            continue
        trusted = _finished_where(run)
        if trusted is None:
            continue
        return Decision("skip", f"FINISHED before as MLflow run {run.info.run_id} {trusted}",
                        test_error=run.data.metrics.get("test_error", math.nan))
    refused = ""
    for run in runs:
        if run.info.status not in UNFINISHED:
            continue
        directory = Path(run.data.tags.get("output_dir", ""))
        holder = runlock.holder(directory) if directory.is_dir() else None
        if holder is not None:
            return Decision("skip", f"MLflow run {run.info.run_id} is {runlock.describe(holder)}",
                            output_dir=directory, running_elsewhere=True)
        if not checkpoint.exists(directory):
            continue
        if not vouches_for(directory, run.info.run_id):
            log.warning("MLflow run %s names %s as its output dir, but that dir's %s does not name the run: "
                        "not resumed from there", run.info.run_id, directory, RUN_FILE)
            refused = f" (not resumed from {directory}: its {RUN_FILE} does not name MLflow run {run.info.run_id})"
            continue
        return Decision("resume", f"resumes MLflow run {run.info.run_id} from {directory}", output_dir=directory)
    failed = [run for run in runs if run.info.status == "FAILED"]
    if failed and not rerun_failed:
        reason = failed[0].data.tags.get("failure_reason", "no reason recorded").splitlines()[0][:200]
        return Decision("skip", f"FAILED before ({reason}); +rerun_failed=true reruns it", failed_before=True)
    return Decision("run", ("reruns a FAILED configuration" if failed else "new") + refused)


def _finished_where(run: object) -> str | None:
    """Where a FINISHED run that a skip relies on trained, for the skip's reason: its run dir when
    that dir records the run; None (not trusted, one warning) when its `output_dir` tag names a dir
    here that records another run or none (a forged or copied record). A run whose dir is not on
    this machine (another node, or a run created outside cifarzoo with no dir at all) is trusted
    as the store's writers are (README, "Who can change what a sweep does"), and said so."""
    run_id, tagged = run.info.run_id, run.data.tags.get("output_dir", "")
    if tagged and Path(tagged).is_dir():
        if vouches_for(Path(tagged), run_id):
            return f"in {tagged}"
        log.warning("MLflow run %s is FINISHED and names %s as its run dir, but that dir's %s does not name it: "
                    "not trusted, the configuration is not skipped for it", run_id, tagged, RUN_FILE)
        return None
    if not tagged:
        return "(no run dir recorded: created outside cifarzoo?)"
    return f"in {tagged} (not on this machine: trusted as recorded in the store)"


def write_outcome(job_dir: Path, outcome: str, detail: str = "") -> None:
    """`outcome`: finished, resumed (finished after resuming), failed, diverged, skipped, skipped-failed
    (FAILED before, not rerun), skipped-running (held by another live process), interrupted, or
    plan-run / plan-resume / plan-skip / plan-invalid. Written atomically; a failed write (a full disk) is one
    line in the log, and the summary then counts the job as having no outcome."""
    path = job_dir / OUTCOME_FILE
    tmp = path.with_name(f".{OUTCOME_FILE}.tmp{os.getpid()}")
    try:
        job_dir.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"outcome": outcome, "detail": detail}))
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        log.error("cannot write %s: [Errno %s] %s", path, error.errno, error.strerror)


def read_outcome(path: Path) -> str:
    """A job's outcome, or "unreadable" (empty, cut short, or not ours)."""
    try:
        return str(json.loads(path.read_text())["outcome"])
    except (OSError, ValueError, KeyError, TypeError):
        return "unreadable"


def summarize(sweep_dir: Path) -> tuple[str, Counter[str]]:
    """One line counting the outcomes of the jobs under `sweep_dir` (each job dir holds Hydra's
    `.hydra/`); a job without a readable outcome counts as "no outcome"."""
    counts: Counter[str] = Counter()
    for job in sorted(p.parent for p in sweep_dir.glob("*/.hydra")):
        path = job / OUTCOME_FILE
        counts[read_outcome(path) if path.exists() else "no-outcome"] += 1
    for path in sorted(sweep_dir.glob(f"*/{OUTCOME_FILE}")):
        if not (path.parent / ".hydra").is_dir():  # written without Hydra's files (tests, old sweeps)
            counts[read_outcome(path)] += 1
    if any(k.startswith("plan-") for k in counts):
        parts = [f"{counts[f'plan-{a}']} would {a}" for a in ("run", "resume", "skip")]
        if counts["plan-invalid"]:
            parts.append(f"{counts['plan-invalid']} invalid")
        return f"cifarzoo plan: {', '.join(parts)}", counts
    finished = counts["finished"] + counts["resumed"]
    skipped = counts["skipped"] + counts["skipped-failed"] + counts["skipped-running"]
    text = f"cifarzoo sweep: {finished} finished ({counts['resumed']} resumed), {counts['failed']} failed"
    if counts["diverged"]:
        text += f", {counts['diverged']} diverged"
    text += f", {skipped} skipped"
    if counts["skipped-failed"]:
        text += f" ({counts['skipped-failed']} FAILED before; +rerun_failed=true reruns them)"
    if counts["skipped-running"]:
        text += f", {counts['skipped-running']} running elsewhere"
    if counts["interrupted"]:
        text += f", {counts['interrupted']} interrupted"
    unknown = counts["unreadable"] + counts["no-outcome"]
    if unknown:
        text += f", {unknown} without a readable outcome (killed, or the disk was full)"
    return text, counts


def failed_jobs(counts: Counter[str]) -> int:
    """Jobs that make a sweep exit non-zero: failed, or with no readable outcome."""
    return counts["failed"] + counts["unreadable"] + counts["no-outcome"]
