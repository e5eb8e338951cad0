"""`python -m cifarzoo.runs --experiment NAME`: list an experiment's runs and where they are."""

from __future__ import annotations

import argparse
import sys

from mlflow.tracking import MlflowClient

from cifarzoo.paths import DEFAULT_EXPERIMENT, default_tracking_uri


def format_runs(uri: str, experiment: str) -> str:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return f"no experiment {experiment!r} in {uri}"
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    overrides = [run.data.tags.get("overrides", "").split() for run in runs]
    common = [o for o in overrides[0] if all(o in other for other in overrides)] if runs else []
    lines = [f"{len(runs)} runs in experiment {experiment!r} at {uri}"]
    if len(runs) > 1 and common:
        lines.append(f"overrides of every run: {' '.join(common)}")
    lines += ["", f"{'status':<9} {'test error %':>12} {'train time s':>12}  overrides"]
    for run, own in zip(runs, overrides):
        m = run.data.metrics
        error = f"{m['test_error']:.2f}" if "test_error" in m else "-"
        seconds = f"{m['train_time_s']:.0f}" if "train_time_s" in m else "-"
        varying = " ".join(o for o in own if o not in common or len(runs) == 1)
        lines.append(f"{run.info.status:<9} {error:>12} {seconds:>12}  {varying}")
    lines += ["", f"browse them: mlflow ui --backend-store-uri {uri}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cifarzoo.runs", description=__doc__)
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT)
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or outputs/mlflow.db")
    args = parser.parse_args(argv)
    print(format_runs(args.tracking_uri or default_tracking_uri(), args.experiment))


if __name__ == "__main__":
    main(sys.argv[1:])
