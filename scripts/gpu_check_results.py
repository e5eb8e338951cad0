"""The result files of `scripts/gpu-check.sh run`, written as each part finishes.

    python scripts/gpu_check_results.py bench-row NAME ROW_JSON OUT/bench.json
        adds one `python -m cifarzoo.bench --out` row to bench.json (replaced atomically)
    python scripts/gpu_check_results.py train TRACKING_URI EXPERIMENT OUT/train.json
        the training run of the check, from its MLflow store: status, step kind and why, metrics"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def bench_row(name: str, row: Path, out: Path) -> None:
    table = json.loads(out.read_text()) if out.exists() else {"rows": {}}
    result = json.loads(row.read_text())
    table["device_name"] = result.get("device_name", table.get("device_name"))
    table["rows"][name] = result
    write_json(out, table)


def train(uri: str, experiment: str, out: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id]) if found else []
    if not runs:
        write_json(out, {"error": f"no run in experiment {experiment} of {uri}"})
        return
    run = runs[0]
    history = {key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
               for key in ("test_error", "train_loss", "epoch_time_s")}
    write_json(out, {
        "status": run.info.status,
        "tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
        "metrics": run.data.metrics,
        "history": history,
        "params": {k: run.data.params[k] for k in sorted(run.data.params)
                   if k.split(".")[0] in ("model", "train", "precision", "optim", "sched", "aug", "data")},
    })


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    if command == "bench-row":
        bench_row(rest[0], Path(rest[1]), Path(rest[2]))
    elif command == "train":
        train(rest[0], rest[1], Path(rest[2]))
    else:
        sys.exit(f"usage: {__doc__}")
