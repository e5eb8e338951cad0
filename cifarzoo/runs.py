"""`python -m cifarzoo.runs [--experiment NAME] [--tracking-uri URI]`: an experiment's runs and where
they are: run id, status, test error, run dir, and the command that evaluates a finished run or
resumes an unfinished one. Store and experiment as every cifarzoo CLI takes them (`cifarzoo.cli`);
exit 0 with runs, 1 when the experiment has none, 2 for a store or experiment that is not there."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cifarzoo.cli import NOTHING_FOUND, OK, CliError, add_store_args, experiment_id, open_store, take_store_words, tracking_uri
from cifarzoo.paths import DEFAULT_EXPERIMENT


def format_runs(uri: str, experiment: str) -> str:
    """The listing; a CliError for a store or experiment that is not there (status 2) or an empty one (1)."""
    client = open_store(uri)
    runs = client.search_runs([experiment_id(client, experiment)], order_by=["attributes.start_time ASC"])
    runs = [r for r in runs if r.data.tags.get("kind") != "lr_find"]
    if not runs:
        raise CliError(f"no runs in experiment {experiment!r} at {uri}", NOTHING_FOUND)
    overrides = [run.data.tags.get("overrides", "").split() for run in runs]
    common = [o for o in overrides[0] if all(o in other for other in overrides)]
    lines = [f"{len(runs)} runs in experiment {experiment!r} at {uri}"]
    if len(runs) > 1 and common:
        lines.append(f"overrides of every run: {' '.join(common)}")
    lines += ["", f"{'run id':<32}  {'status':<9} {'test error %':>12} {'best %':>7} {'train s':>8}  overrides"]
    for run, own in zip(runs, overrides):
        m = run.data.metrics
        varying = " ".join(o for o in own if o not in common or len(runs) == 1) or "(defaults)"
        lines.append(f"{run.info.run_id:<32}  {run.info.status:<9} {_num(m, 'test_error', 2):>12} "
                     f"{_num(m, 'best_test_error', 2):>7} {_num(m, 'train_time_s', 0):>8}  {varying}")
        lines += [f"    {line}" for line in _where(run, own)]
    lines += ["", f"browse them: {ui_command(uri)}"]
    return "\n".join(lines)


def ui_command(uri: str) -> str:
    """The command that opens the MLflow UI on `uri` (the venv's mlflow when run from it)."""
    mlflow = Path(sys.executable).parent / "mlflow"
    exe = _short(mlflow) if mlflow.is_file() else "mlflow"
    return f"{exe} ui --backend-store-uri {shlex.quote(uri)}"


def _where(run: Any, overrides: list[str]) -> list[str]:
    """The run dir, and the command that evaluates it (FINISHED) or resumes it (any other status)."""
    run_dir = run.data.tags.get("output_dir")
    if not run_dir:
        return []
    here = _short(Path(run_dir))
    if run.info.status == "FINISHED":
        return [f"dir: {here}", f"evaluate: python -m cifarzoo.evaluate {shlex.quote(here)}"]
    resume = shlex.join(["python", "run.py", *overrides, f"hydra.run.dir={here}"])
    return [f"dir: {here}", f"resume: {resume}"]


def _short(path: Path) -> str:
    """`path` relative to the working dir when it is below it."""
    try:
        return str(path.resolve().relative_to(Path(os.getcwd()).resolve()))
    except ValueError:
        return str(path)


def _num(metrics: dict[str, float], key: str, digits: int) -> str:
    return f"{metrics[key]:.{digits}f}" if key in metrics else "-"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifarzoo.runs", description=__doc__)
    add_store_args(parser, DEFAULT_EXPERIMENT)
    parser.add_argument("words", nargs="*", metavar="tracking.uri=URI|tracking.experiment=NAME")
    args = parser.parse_args(argv)
    try:
        unknown = take_store_words(args, args.words)
        if unknown:
            raise CliError(f"unknown argument {unknown[0]!r} (takes --tracking-uri/tracking.uri=, --experiment/"
                           "tracking.experiment=)")
        print(format_runs(tracking_uri(args.tracking_uri), args.experiment or DEFAULT_EXPERIMENT))
    except CliError as error:
        print(f"cifarzoo: error: {error}", file=sys.stderr)
        return error.status
    return OK


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
