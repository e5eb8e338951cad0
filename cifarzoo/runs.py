"""`python -m cifarzoo.runs --experiment NAME`: list an experiment's runs and where they are."""

from __future__ import annotations

import argparse
import sys

from mlflow.tracking import MlflowClient

from cifarzoo.paths import default_tracking_uri


def format_runs(uri: str, experiment: str) -> str:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return f"no experiment {experiment!r} in {uri}"
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    lines = [f"{len(runs)} runs in experiment {experiment!r} at {uri}", ""]
    lines.append(f"{'status':<9} {'test error %':>12} {'train time s':>12}  overrides")
    for run in runs:
        m = run.data.metrics
        error = f"{m['test_error']:.2f}" if "test_error" in m else "-"
        seconds = f"{m['train_time_s']:.0f}" if "train_time_s" in m else "-"
        lines.append(f"{run.info.status:<9} {error:>12} {seconds:>12}  {run.data.tags.get('overrides', '')}")
    lines += ["", f"browse them: mlflow ui --backend-store-uri {uri}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cifarzoo.runs", description=__doc__)
    parser.add_argument("--experiment", default="default")
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or outputs/mlflow.db")
    args = parser.parse_args(argv)
    print(format_runs(args.tracking_uri or default_tracking_uri(), args.experiment))


if __name__ == "__main__":
    main(sys.argv[1:])
