"""What a run dir records of its MLflow run (`mlflow_run.json`), read without importing MLflow
(`analysis` checks it for every run of a table)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RUN_FILE = "mlflow_run.json"


def recorded_run(directory: Path) -> dict[str, Any]:
    """What `directory/mlflow_run.json` records (run_id, tracking_uri, experiment_id); {} when the
    file is missing or unreadable."""
    try:
        record = json.loads((directory / RUN_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def vouches_for(directory: Path, run_id: str) -> bool:
    """Whether `directory` is the output dir of MLflow run `run_id`, by its own record (an
    `output_dir` tag alone is anyone's to set on a tracking server)."""
    return recorded_run(directory).get("run_id") == run_id
