"""Resumable sweeps: what a job does given the runs its experiment already holds, and the
per-job outcome files the end-of-sweep summary counts.

A configuration is identified by its `config_hash` tag and its seed. Re-invoking a sweep skips
the configurations that FINISHED, resumes unfinished ones from their checkpoints (in their old
output dir, into their old MLflow run), and reruns FAILED ones only with `+rerun_failed=true`.
`+plan=true` prints what each job would do and does nothing."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient

from cifarzoo.checkpoint import CHECKPOINT_FILE

OUTCOME_FILE = "outcome.json"
UNFINISHED = ("RUNNING", "SCHEDULED", "KILLED")


@dataclass
class Decision:
    action: str  # "run" | "resume" | "skip"
    reason: str
    output_dir: Path | None = None  # where to resume
    test_error: float = math.nan  # of the FINISHED run a skip refers to
    failed_before: bool = False  # a skip of a configuration that FAILED


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
        if run.info.status == "FINISHED":
            return Decision("skip", f"FINISHED before as MLflow run {run.info.run_id}",
                            test_error=run.data.metrics.get("test_error", math.nan))
    for run in runs:
        directory = Path(run.data.tags.get("output_dir", ""))
        if run.info.status in UNFINISHED and (directory / CHECKPOINT_FILE).exists():
            return Decision("resume", f"resumes MLflow run {run.info.run_id} from {directory}", output_dir=directory)
    failed = [run for run in runs if run.info.status == "FAILED"]
    if failed and not rerun_failed:
        reason = failed[0].data.tags.get("failure_reason", "no reason recorded").splitlines()[0][:200]
        return Decision("skip", f"FAILED before ({reason}); +rerun_failed=true reruns it", failed_before=True)
    return Decision("run", "reruns a FAILED configuration" if failed else "new")


def write_outcome(job_dir: Path, outcome: str, detail: str = "") -> None:
    """`outcome`: finished, resumed (finished after resuming), failed, skipped, skipped-failed
    (FAILED before, not rerun), interrupted, or plan-run / plan-resume / plan-skip."""
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / OUTCOME_FILE).write_text(json.dumps({"outcome": outcome, "detail": detail}))


def summarize(sweep_dir: Path) -> tuple[str, Counter[str]]:
    """One line counting the outcomes of the jobs under `sweep_dir`."""
    counts: Counter[str] = Counter()
    for path in sorted(sweep_dir.glob(f"*/{OUTCOME_FILE}")):
        counts[json.loads(path.read_text())["outcome"]] += 1
    if any(k.startswith("plan-") for k in counts):
        parts = [f"{counts[f'plan-{a}']} would {a}" for a in ("run", "resume", "skip")]
        return f"cifarzoo plan: {', '.join(parts)}", counts
    finished = counts["finished"] + counts["resumed"]
    skipped = counts["skipped"] + counts["skipped-failed"]
    text = f"cifarzoo sweep: {finished} finished ({counts['resumed']} resumed), {counts['failed']} failed, {skipped} skipped"
    if counts["skipped-failed"]:
        text += f" ({counts['skipped-failed']} FAILED before; +rerun_failed=true reruns them)"
    if counts["interrupted"]:
        text += f", {counts['interrupted']} interrupted"
    return text, counts
