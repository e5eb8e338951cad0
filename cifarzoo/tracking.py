"""MLflow records of runs: one run per output dir, reopened on resume. Each evaluated epoch also
logs `best_test_error` (the lowest test error so far) and `best_test_error_epoch`, for tables of
sources that report the best epoch rather than the last.

The experiment is created under a file lock for sqlite stores, so concurrent first runs on a
fresh database never race on its schema or create the experiment twice."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from cifarzoo.errors import ConfigError

log = logging.getLogger("cifarzoo")

RUN_FILE = "mlflow_run.json"
_BATCH = 100  # MLflow's limit on params per log_batch call


def sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :].split("?")[0])


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, with one line naming the URI, when an http(s) tracking server does not answer
    (MLflow's own client would retry for minutes)."""
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout_s).raise_for_status()
    except requests.RequestException as error:
        raise ConfigError("tracking.uri", f"no MLflow tracking server answers there ({type(error).__name__})", uri) from None


def connect(uri: str, experiment: str) -> tuple[MlflowClient, str]:
    """A client and the experiment's id, creating the store's schema and the experiment once,
    whatever the concurrency (the client builds a fresh sqlite schema when constructed)."""
    db = sqlite_path(uri)
    artifacts = None if db is None else str(db.parent / "mlartifacts" / re.sub(r"[^\w.-]", "_", experiment))
    with _store_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        return client, _get_or_create_experiment(client, experiment, artifacts)


def _get_or_create_experiment(client: MlflowClient, name: str, artifacts: str | None) -> str:
    for attempt in range(5):
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                raise ConfigError("tracking.experiment", "is deleted in the tracking store; restore it or pick another name", name)
            return experiment.experiment_id
        try:
            return client.create_experiment(name, artifact_location=artifacts)
        except MlflowException:  # created meanwhile by a process that does not share our lock
            time.sleep(0.2 * (attempt + 1))
    raise RuntimeError(f"could not get or create MLflow experiment {name!r} at {client.tracking_uri}")


class Tracker:
    """The MLflow run of one output dir. `open` creates it, or reopens the one recorded in
    `<output_dir>/mlflow_run.json` so that a resumed run logs nothing twice."""

    def __init__(self, client: MlflowClient, run_id: str, logged_until: int, finished_before: bool,
                 best: tuple[float, int] | None = None) -> None:
        self.client, self.run_id, self.logged_until = client, run_id, logged_until
        self.finished_before = finished_before  # a rerun of a run that had already FINISHED
        self.best = best  # (lowest test error so far, its epoch)

    @classmethod
    def open(
        cls,
        uri: str,
        experiment: str,
        output_dir: Path,
        run_name: str,
        params: dict[str, str],
        tags: dict[str, str],
        config_yaml: str,
    ) -> Tracker:
        client, experiment_id = connect(uri, experiment)
        run_file = output_dir / RUN_FILE
        run = _previous_run(client, run_file, uri, experiment_id)
        if run is None:
            run = client.create_run(experiment_id, run_name=run_name, tags=tags)
            output_dir.mkdir(parents=True, exist_ok=True)
            tmp = run_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"run_id": run.info.run_id, "tracking_uri": uri, "experiment_id": experiment_id}))
            tmp.replace(run_file)
            logged_until, existing, finished_before, best = 0, {}, False, None
        else:
            if run.data.tags.get("config_hash") != tags["config_hash"]:
                raise ConfigError(
                    "hydra.run.dir",
                    "holds a run of a different configuration; use a fresh output dir",
                    str(output_dir),
                )
            finished_before = run.info.status == "FINISHED"
            if not finished_before:
                client.update_run(run.info.run_id, status="RUNNING")
            history = client.get_metric_history(run.info.run_id, "train_loss")
            logged_until = max((m.step for m in history), default=0)
            existing = run.data.params
            best = best_so_far(client.get_metric_history(run.info.run_id, "test_error"))
            log.info("resuming MLflow run %s (epochs logged: %d)", run.info.run_id, logged_until)
        missing = [Param(k, v) for k, v in params.items() if k not in existing]
        for i in range(0, len(missing), _BATCH):
            client.log_batch(run.info.run_id, params=missing[i : i + _BATCH])
        client.log_text(run.info.run_id, config_yaml, "config.yaml")
        return cls(client, run.info.run_id, logged_until, finished_before, best)

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        if epoch <= self.logged_until:  # already logged before an interruption
            return
        error = metrics.get("test_error", math.nan)
        if math.isfinite(error) and (self.best is None or error < self.best[0]):
            self.best = (error, epoch)
        if "test_error" in metrics and self.best is not None:
            metrics = {**metrics, "best_test_error": self.best[0], "best_test_error_epoch": self.best[1]}
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, epoch) for k, v in metrics.items()])
        self.logged_until = epoch

    def log_metric(self, key: str, value: float, step: int) -> None:
        self.client.log_metric(self.run_id, key, value, step=step)

    def finish(self) -> None:
        self.client.set_terminated(self.run_id, "FINISHED")

    def fail(self, reason: str, **tags: str) -> None:
        self.client.set_tag(self.run_id, "failure_reason", reason[:5000])
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)
        self.client.set_terminated(self.run_id, "FAILED")

    def requeued(self, reason: str) -> None:
        """The job was requeued and will resume this run: it stays RUNNING."""
        self.client.set_tag(self.run_id, "requeued", reason)

    def interrupted(self, reason: str) -> None:
        self.client.set_tag(self.run_id, "interrupted", reason)
        self.client.set_terminated(self.run_id, "KILLED")


def best_so_far(history: list[Metric]) -> tuple[float, int] | None:
    """The lowest finite test error of a run's logged history and its epoch (the earliest on ties):
    a resumed run goes on from the best its interrupted part logged."""
    finite = [(m.value, m.step) for m in history if math.isfinite(m.value)]
    return min(finite) if finite else None


def _previous_run(client: MlflowClient, run_file: Path, uri: str, experiment_id: str) -> Any:
    if not run_file.exists():
        return None
    record = json.loads(run_file.read_text())
    if record.get("tracking_uri") != uri or record.get("experiment_id") != experiment_id:
        return None
    try:
        run = client.get_run(record["run_id"])
    except MlflowException:
        return None
    if run.info.lifecycle_stage == "deleted":
        return None
    return run




def serve_command(host: str, port: int, backend_store_uri: str, artifacts: Path, workers: int) -> list[str]:
    """`mlflow server` for a cluster: jobs log over http, one process owns the sqlite file."""
    return [
        sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port),
        "--backend-store-uri", backend_store_uri, "--artifacts-destination", str(artifacts),
        "--workers", str(workers),
    ]


def main(argv: list[str] | None = None) -> None:
    from cifarzoo.paths import outputs_dir

    parser = argparse.ArgumentParser(
        prog="python -m cifarzoo.tracking",
        description="serve: start an MLflow tracking server; runs reach it with tracking.uri=http://HOST:PORT",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start `mlflow server` (bound to 127.0.0.1 unless --host says otherwise)")
    serve.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to accept jobs from other nodes (default %(default)s)")
    serve.add_argument("--port", type=int, default=5000)
    serve.add_argument("--backend-store-uri", default=f"sqlite:///{outputs_dir() / 'mlflow.db'}",
                       help="sqlite:///... or a database URI such as postgresql://... (default %(default)s)")
    serve.add_argument("--artifacts", type=Path, default=outputs_dir() / "mlartifacts")
    serve.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    db = sqlite_path(args.backend_store_uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    command = serve_command(args.host, args.port, args.backend_store_uri, args.artifacts, args.workers)
    print(f"cifarzoo: MLflow server for runs with tracking.uri=http://{args.host}:{args.port}", flush=True)
    os.execv(command[0], command)  # the server replaces this process: signals reach it directly


if __name__ == "__main__":
    main()
