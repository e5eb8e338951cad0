"""MLflow records of runs: one run per output dir, reopened on resume. Each evaluated epoch also
logs `best_test_error` (the lowest test error so far) and `best_test_error_epoch`, for tables of
sources that report the best epoch rather than the last.

The experiment is created under a file lock for sqlite stores, so concurrent first runs on a
fresh database never race on its schema or create the experiment twice."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import itertools
import json
import logging
import math
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from cifarzoo.errors import ConfigError, is_number, require
from cifarzoo.runrecord import RUN_FILE, recorded_run

log = logging.getLogger("cifarzoo")

_BATCH = 100  # MLflow's limit on params per log_batch call


def system_metrics_interval(tracking: Any) -> float | None:
    """Seconds between system-metrics samples from the `tracking` config node, None when off."""
    on = tracking.get("system_metrics", False)
    require(isinstance(on, bool), "tracking.system_metrics", "must be true or false", on)
    every = tracking.get("system_metrics_interval_s", 10)
    require(is_number(every) and every > 0, "tracking.system_metrics_interval_s", "must be a number of seconds > 0", every)
    return float(every) if on else None


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


class TrackingUnavailable(ConfigError):
    """No MLflow tracking server answers at the configured URI (before a run starts)."""


class TrackingLost(Exception):
    """The tracking server went away during a run and was still gone at its end; the metrics it
    did not get are safe in the run dir's outbox. The message is one line."""


# The URI schemes of MLflow's tracking stores ("" = a local path); `postgresql+psycopg2` counts as `postgresql`.
SCHEMES = ("", "file", "sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks", "databricks-uc", "uc")


def check_uri(uri: str) -> None:
    """A one-line ConfigError for a URI MLflow would fail on with a long traceback (an unknown
    scheme), or quietly turn into a new store somewhere unintended (sqlite in a missing folder:
    a typo; only cifarzoo's own outputs/ folder is created)."""
    from cifarzoo.paths import outputs_dir

    scheme = urlsplit(uri).scheme.split("+")[0].lower()
    if scheme not in SCHEMES:
        raise ConfigError("tracking.uri", f"unknown scheme {scheme!r}; use sqlite:///<path>, http(s)://<host>:<port>, "
                          "file:<path> or a database URI (postgresql://...)", uri)
    db = sqlite_path(uri)
    if db is not None and not db.parent.is_dir() and db.parent.resolve() != outputs_dir():
        raise ConfigError("tracking.uri", f"the folder {db.parent} does not exist (a typo? create it first)", uri)


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """`check_uri`, then fail fast, with one line naming the URI, when an http(s) tracking server
    does not answer (MLflow's own client would retry for minutes). The check is a real API call:
    `/health` skips the server's Host-header check, so a host name the server does not allow would
    pass it and then fail every call with 403."""
    check_uri(uri)
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        answer = requests.get(uri.rstrip("/") + "/api/2.0/mlflow/experiments/search",
                              params={"max_results": 1}, timeout=timeout_s)
    except requests.RequestException as error:
        raise TrackingUnavailable("tracking.uri", f"no MLflow tracking server answers there ({type(error).__name__})", uri) from None
    if answer.status_code == 403 and "host" in answer.text.lower():
        host = urlsplit(uri).netloc
        raise ConfigError("tracking.uri", f"the server refuses the host name {host!r} ({answer.text.strip()[:60]}); "
                          f"start it with that name allowed: python -m cifarzoo.tracking serve --allowed-hosts {host},...", uri)
    if answer.status_code >= 500:
        raise TrackingUnavailable("tracking.uri", f"the tracking server answers HTTP {answer.status_code}", uri)
    if not answer.ok:
        raise ConfigError("tracking.uri", f"an MLflow API call there answers HTTP {answer.status_code}; "
                          "is it an MLflow tracking server?", uri)


def wait_reachable(uri: str, wait_s: float) -> None:
    """`check_reachable`, retried for up to `wait_s` seconds while the server does not answer
    (a short outage when a sweep job starts must not fail it)."""
    deadline = time.monotonic() + wait_s
    for attempt in itertools.count():
        try:
            check_reachable(uri)
            return
        except TrackingUnavailable as error:
            if time.monotonic() >= deadline:
                raise
            if attempt == 0:
                log.warning("%s; retrying for up to %.0f s (tracking.wait_s)", error, wait_s)
        time.sleep(min(5.0, max(0.1, deadline - time.monotonic())))


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


# MLflow's client retries a failing http call for minutes by default; a run buffers its metrics
# instead (below), so each call gives up sooner: a hung server (connected, never answering) costs
# at most ~2 x 10 s + 1 s per call, in the uploader thread. Environment variables the user set win.
_HTTP_RETRY_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                        "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
_RETRY_S = 5.0  # the uploader retries an outbox the server did not take this often
_ENDING_WAIT_S = 30.0  # a failed or stopped run waits at most this long for its last tracking calls
_OUTAGE = (MlflowException, OSError)  # requests' errors are OSErrors; a failing store raises MlflowException
OUTBOX_FILE = "pending_metrics.jsonl"
FINAL_METRIC = "train_time_s"


class Tracker:
    """The MLflow run of one output dir. `open` creates it, or reopens the one recorded in
    `<output_dir>/mlflow_run.json` so that a resumed run logs nothing twice.

    Metrics go through an outbox file in the run dir (`pending_metrics.jsonl`, appended and
    fsynced, emptied once the server has them): the training loop only appends; a background
    uploader thread sends them, so a slow, refusing or hung server never stalls an epoch. While
    the server is unreachable the run trains on and its metrics wait there, in order, with their
    original timestamps; they are uploaded when the server answers again, at the latest when the
    run is resumed. The run's end waits at most `wait_s` (`tracking.wait_s`) for the uploads.
    MLflow drops exact duplicates, so an upload repeated after a crash logs nothing twice.

    At whatever end (finished, failed, interrupted, requeued) the run's log file goes up as an
    artifact, and MLflow's system-metrics sampler (`system/...`, started by `open`) stops. System
    metrics do not go through the outbox: the sampler stops for good when the server does not
    answer, and a resumed run starts it again."""

    def __init__(self, client: MlflowClient, run_id: str, logged_until: int, finished_before: bool,
                 outbox: Path | None = None) -> None:
        self.client, self.run_id, self.logged_until = client, run_id, logged_until
        self.finished_before = finished_before  # a rerun of a run that had already FINISHED
        self.outbox = outbox
        self.final_logged = False  # `train_time_s` is in the run (a resumed run that had ended)
        self.best: tuple[float, int] | None = None  # (lowest test error so far, its epoch)
        self.model_logging = True  # log the final weights as an MLflow model (`tracking.log_model`)
        self._outage_reported = False
        self.log_file: Path | None = None  # the job's log, uploaded at the run's end
        self.log_artifact_dir: str | None = None  # where in the run's artifacts it goes (None: top level)
        self._sampler: Any = None  # MLflow's SystemMetricsMonitor while it samples
        self._file_lock = threading.Lock()  # the outbox file: appends vs. the uploader's rewrites
        self._upload_lock = threading.Lock()  # one upload of the outbox at a time
        self._wake = threading.Event()  # new records, or the run's end: upload now
        self._drained = threading.Event()  # the outbox is empty (set and cleared under _file_lock)
        self._drained.set()
        self._uploader: threading.Thread | None = None
        self._closed = False  # the run has ended: the uploader stops

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
        log_file: Path | None = None,
        system_metrics_s: float | None = None,
    ) -> Tracker:
        """`log_file`: uploaded at the run's end (into `logs/<job dir>/` when it lies outside
        `output_dir`, i.e. a sweep job resuming an older dir). `system_metrics_s`: sample MLflow's
        system metrics every that many seconds (None: off)."""
        if uri.startswith(("http://", "https://")):
            for key, value in _HTTP_RETRY_DEFAULTS.items():
                os.environ.setdefault(key, value)
            logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # a line per retry; ours says it once
        client, experiment_id = connect(uri, experiment)
        run_file = output_dir / RUN_FILE
        run = _previous_run(client, run_file, uri, experiment_id) or _adopted_run(client, output_dir, uri, experiment_id)
        resumed = run is not None
        if run is None:
            run = _created_run(client, output_dir, uri, experiment_id, run_name, tags)
        try:
            tracker = cls._opened(client, run, resumed, uri, output_dir, params, tags, config_yaml, log_file,
                                  system_metrics_s)
        except BaseException as error:  # no run left RUNNING behind: a new one FAILED, a resumed one as it was
            _close_unopened(client, run.info.run_id, resumed, run.info.status, error)
            if isinstance(error, (ConfigError, TrackingLost)) or not isinstance(error, Exception):
                raise
            raise TrackingLost(f"could not open MLflow run {run.info.run_id} ({type(error).__name__}: "
                               f"{first_line(error, 200)}); it is closed, rerun the same command") from None
        return tracker

    @classmethod
    def _opened(cls, client: MlflowClient, run: Any, resumed: bool, uri: str, output_dir: Path,
                params: dict[str, str], tags: dict[str, str], config_yaml: str, log_file: Path | None,
                system_metrics_s: float | None) -> Tracker:
        if not resumed:
            tracker = cls(client, run.info.run_id, 0, False, output_dir / OUTBOX_FILE)
            existing: dict[str, str] = {}
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
                if "failure_reason" in run.data.tags:  # of the attempt before: this one has not failed
                    client.delete_tag(run.info.run_id, "failure_reason")
            tracker = cls(client, run.info.run_id, 0, finished_before, output_dir / OUTBOX_FILE)
            uploaded = tracker.pending()
            if uploaded and not tracker.flush():
                raise TrackingLost(f"the tracking server took no metrics; {len(uploaded)} records stay in {tracker.outbox}")
            if uploaded:
                log.info("uploaded %d metric records kept in %s while the tracking server was away",
                         len(uploaded), tracker.outbox)
            history = client.get_metric_history(run.info.run_id, "train_loss")
            tracker.logged_until = max((m.step for m in history), default=0)
            tracker.final_logged = bool(client.get_metric_history(run.info.run_id, FINAL_METRIC))
            tracker.best = best_so_far(client.get_metric_history(run.info.run_id, "test_error"))
            existing = run.data.params
            log.info("resuming MLflow run %s (epochs logged: %d)", run.info.run_id, tracker.logged_until)
        model_logging = params.get("tracking.log_model", "True")  # the run's own config, flattened
        if model_logging not in ("True", "False"):
            raise ConfigError("tracking.log_model", "must be true or false", model_logging)
        tracker.model_logging = model_logging == "True"
        log_params(client, run.info.run_id, {k: v for k, v in params.items() if k not in existing})
        client.log_text(run.info.run_id, config_yaml, "config.yaml")
        if log_file is not None:
            tracker.log_file = log_file
            if log_file.parent != output_dir:
                tracker.log_artifact_dir = f"logs/{log_file.parent.parent.name}_{log_file.parent.name}"
        if system_metrics_s is not None and not tracker.finished_before:
            tracker._start_sampler(uri, system_metrics_s, resume=resumed)
        tracker.start_uploader()
        return tracker

    # -- metrics, through the outbox ---------------------------------------------------------
    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        if epoch <= self.logged_until:  # already logged before an interruption
            return
        error = metrics.get("test_error", math.nan)
        if math.isfinite(error) and (self.best is None or error < self.best[0]):
            self.best = (error, epoch)
        if "test_error" in metrics and self.best is not None:
            metrics = {**metrics, "best_test_error": self.best[0], "best_test_error_epoch": self.best[1]}
        self._post(epoch, metrics)
        self.logged_until = epoch

    def log_final(self, train_time_s: float, step: int) -> None:
        """The run's total training time, once."""
        if not self.final_logged:
            self._post(step, {FINAL_METRIC: train_time_s})
            self.final_logged = True

    def _post(self, step: int, metrics: dict[str, float]) -> None:
        record = {"step": step, "timestamp": int(time.time() * 1000), "metrics": {k: float(v) for k, v in metrics.items()}}
        if self.outbox is None:
            self._upload([record])
            return
        try:
            with self._file_lock:
                with open(self.outbox, "a") as f:
                    f.write(json.dumps(record) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                self._drained.clear()
        except OSError as error:  # e.g. a full disk: straight to the server, which may still take it
            log.warning("cannot write %s (%s); uploading directly", self.outbox, first_line(error))
            self.flush()
            self._upload([record])
            return
        if self._uploader is None:
            self.flush()
        else:
            self._wake.set()

    def start_uploader(self) -> None:
        """Upload the outbox from a daemon thread from now on (`_post` then only appends)."""
        if self.outbox is None or self._uploader is not None:
            return
        self._uploader = threading.Thread(target=self._upload_loop, daemon=True, name="cifarzoo-uploader")
        self._uploader.start()

    def _upload_loop(self) -> None:
        while not self._closed:
            self._wake.wait(timeout=None if self._drained.is_set() else _RETRY_S)
            self._wake.clear()
            if not self._closed:
                self.flush()

    def _stop_uploader(self) -> None:
        """The run has ended: the thread exits (what it has not sent stays in the outbox)."""
        self._closed = True
        self._wake.set()

    def drain(self, wait_s: float) -> bool:
        """Wait up to `wait_s` seconds for the uploader to empty the outbox; whether it did."""
        if self._uploader is None:
            return self.flush()
        deadline = time.monotonic() + wait_s
        while True:
            self._wake.set()
            if self._drained.wait(timeout=max(0.0, min(_RETRY_S, deadline - time.monotonic()))):
                return True
            if time.monotonic() >= deadline:
                break
        # Out of time: one last round here unless the uploader is mid-upload or the server just failed it.
        if self._outage_reported or not self._upload_lock.acquire(blocking=False):
            return False
        self._upload_lock.release()
        return self.flush()

    def pending(self) -> list[dict[str, Any]]:
        """The metric records the server has not confirmed yet, oldest first."""
        if self.outbox is None or not self.outbox.exists():
            return []
        lines = self.outbox.read_text().splitlines()
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except ValueError:  # a line cut short by a crash mid-append: its epoch is logged again on replay
                log.warning("%s: skipping a truncated record", self.outbox)
        return records

    def flush(self) -> bool:
        """Upload the outbox in order; False (the rest kept) if the server does not take it. Records
        appended meanwhile stay for the next round (only the uploaded ones leave the file)."""
        with self._upload_lock:
            uploaded_any = False
            while True:
                with self._file_lock:
                    records = self.pending()
                    if not records:
                        if self.outbox is not None:
                            self.outbox.unlink(missing_ok=True)
                        self._drained.set()
                        break
                for i, record in enumerate(records):
                    try:
                        self._upload([record])
                    except _OUTAGE as error:
                        self._drop(i)
                        if not self._outage_reported:
                            log.warning("tracking server unreachable (%s); training goes on, metrics wait in %s",
                                        first_line(error), self.outbox)
                            self._outage_reported = True
                        return False
                self._drop(len(records))
                uploaded_any = True
            if self._outage_reported and uploaded_any:
                log.info("tracking server back: the pending metric records are uploaded")
                self._outage_reported = False
            return True

    def _drop(self, count: int) -> None:
        """Remove the first `count` records of the outbox (uploaded); those appended since stay."""
        if count == 0:
            return
        with self._file_lock:
            self._keep(self.pending()[count:])

    def _upload(self, records: list[dict[str, Any]]) -> None:
        metrics = [Metric(k, v, r["timestamp"], r["step"]) for r in records for k, v in r["metrics"].items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def _keep(self, records: list[dict[str, Any]]) -> None:
        if not records:
            self.outbox.unlink(missing_ok=True)
            return
        tmp = self.outbox.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
        tmp.replace(self.outbox)

    # -- system metrics and the log -------------------------------------------------------------
    def _start_sampler(self, uri: str, every_s: float, resume: bool) -> None:
        """MLflow's own sampler (CPU, memory, disk, network; GPUs through nvidia-ml-py), in a thread
        of its own that logs `system/<name>` every `every_s` seconds with steps 0, 1, 2, ... (a
        resumed run continues its steps)."""
        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # no lines per start/stop
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self._sampler = SystemMetricsMonitor(self.run_id, sampling_interval=every_s, resume_logging=resume,
                                                 tracking_uri=uri)
        except (ImportError, *_OUTAGE) as error:  # psutil missing, or the store went away just now
            log.warning("no system metrics for MLflow run %s: %s", self.run_id, first_line(error))
            return
        self._sampler.start()

    def _stop_sampler(self, wait_s: float = 10.0) -> None:
        """Stop sampling; the samples it holds go up (MLflow's `finish`). At most `wait_s` seconds:
        with the server away, its last call would wait out MLflow's http retries."""
        if self._sampler is None:
            return
        stopping = threading.Thread(target=self._sampler.finish, daemon=True, name="stop-system-metrics")
        stopping.start()
        stopping.join(wait_s)
        self._sampler = None

    def _wrap_up(self) -> None:
        """At any end: stop the sampler and upload the job's log."""
        self._stop_sampler()
        if self.log_file is None or not self.log_file.is_file():
            return
        for handler in logging.getLogger().handlers:  # the lines logged so far, into the file
            handler.flush()
        try:
            self.client.log_artifact(self.run_id, str(self.log_file), self.log_artifact_dir)
        except _OUTAGE as error:
            log.error("could not upload %s to MLflow run %s: %s", self.log_file, self.run_id, first_line(error))

    # -- the run's end -------------------------------------------------------------------------
    def log_model(self, network: Any, data: Any, step: int) -> None:
        """The finished run's final weights as its MLflow model `runs:/<run id>/model`
        (`cifarzoo.mlflow_model`), unless the run's `tracking.log_model` param is False. `network`
        as it trained, `data` its DeviceData (normalisation, image shape, classes). A failure is
        one warning and the tag `model_log_error`: the run still finishes, its checkpoint holds
        the weights (`python -m cifarzoo.evaluate RUN --export ...` exports them)."""
        if not self.model_logging:
            return
        from cifarzoo.export import deployable
        from cifarzoo.mlflow_model import log_model

        start = time.perf_counter()
        try:
            log_model(self.client, self.run_id, deployable(network, data.mean, data.std),
                      tuple(data.test_x.shape[1:]), data.num_classes, step)
        except Exception as error:  # an artifact after training: never the reason a finished run fails
            log.warning("could not log the MLflow model of run %s (%s); its checkpoint holds the weights",
                        self.run_id, first_line(error))
            self._best_effort("tag the model failure",
                              lambda: self.client.set_tag(self.run_id, "model_log_error", first_line(error)))
            return
        log.info("logged the final weights as MLflow model runs:/%s/model (%.1f s)", self.run_id,
                 time.perf_counter() - start)

    def finish(self, wait_s: float = 0.0) -> None:
        """Upload what is pending (retrying up to `wait_s` seconds) and mark the run FINISHED, or
        raise TrackingLost when the server is still away."""
        deadline = time.monotonic() + wait_s
        self._stop_sampler(min(10.0, wait_s))
        if not self.drain(max(0.0, deadline - time.monotonic())):
            self._stop_uploader()  # the outbox waits for the rerun
            raise TrackingLost(
                f"the tracking server is unreachable at the end of the run; {len(self.pending())} metric records "
                f"are kept in {self.outbox}: rerun the same command when it is back to upload them and finish the run")
        self._stop_uploader()
        self._wrap_up()
        try:
            self.client.set_terminated(self.run_id, "FINISHED")
        except _OUTAGE as error:
            raise TrackingLost(f"could not mark MLflow run {self.run_id} FINISHED ({first_line(error)}); "
                               "rerun the same command to finish it") from None

    def fail(self, reason: str, **tags: str) -> None:
        self._best_effort("record the failure", lambda: (
            self.client.set_tag(self.run_id, "failure_reason", reason[:5000]),
            [self.client.set_tag(self.run_id, k, v) for k, v in tags.items()],
            self.client.set_terminated(self.run_id, "FAILED")))

    def requeued(self, reason: str) -> None:
        """The job was requeued and will resume this run: it stays RUNNING."""
        self._best_effort("tag the requeue", lambda: self.client.set_tag(self.run_id, "requeued", reason))

    def interrupted(self, reason: str) -> None:
        self._best_effort("mark the run KILLED", lambda: (
            self.client.set_tag(self.run_id, "interrupted", reason),
            self.client.set_terminated(self.run_id, "KILLED")))

    def _best_effort(self, what: str, call: Any) -> None:
        """A run that is ending anyway reports a tracking failure in one line, not a second
        traceback, and waits at most ~30 s for a server that does not answer."""
        def calls() -> None:
            self.drain(_ENDING_WAIT_S / 2)
            self._stop_uploader()
            self._wrap_up()
            try:
                call()
            except _OUTAGE as error:
                log.error("could not %s of MLflow run %s: %s", what, self.run_id, first_line(error))

        ending = threading.Thread(target=calls, daemon=True, name="cifarzoo-tracking-end")
        ending.start()
        ending.join(_ENDING_WAIT_S)
        if ending.is_alive():
            log.error("could not %s of MLflow run %s: the tracking server did not answer within %.0f s",
                      what, self.run_id, _ENDING_WAIT_S)


def log_params(client: MlflowClient, run_id: str, params: dict[str, str]) -> None:
    """`params` in batches of MLflow's limit per `log_batch` call."""
    listed = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(listed), _BATCH):
        client.log_batch(run_id, params=listed[i : i + _BATCH])


def first_line(error: BaseException, limit: int = 300) -> str:
    """An exception's message as one line for an error or log line (its type when it has none)."""
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:limit]


def best_so_far(history: list[Metric]) -> tuple[float, int] | None:
    """The lowest finite test error of a run's logged history and its epoch (the earliest on ties):
    a resumed run goes on from the best its interrupted part logged."""
    finite = [(m.value, m.step) for m in history if math.isfinite(m.value)]
    return min(finite) if finite else None


def _previous_run(client: MlflowClient, run_file: Path, uri: str, experiment_id: str) -> Any:
    """The MLflow run `run_file` records, to resume; None when there is none. A record that cannot
    be resumed (another store or experiment, a deleted or missing run) is a one-line ConfigError:
    a new MLflow run would hold only the remaining epochs."""
    if not run_file.exists():
        return None
    record, where = recorded_run(run_file.parent), str(run_file.parent)
    if record.get("tracking_uri") != uri:
        raise ConfigError("tracking.uri", f"{where} records MLflow run {record.get('run_id')} in "
                          f"{record.get('tracking_uri')}; resume with that tracking.uri, or +restart=true", uri)
    if record.get("experiment_id") != experiment_id:
        raise ConfigError("tracking.experiment", f"{where} records MLflow run {record.get('run_id')} in experiment id "
                          f"{record.get('experiment_id')}; resume with that experiment, or +restart=true", experiment_id)
    try:
        run = client.get_run(str(record.get("run_id")))
    except MlflowException:
        run = None
    if run is None or run.info.lifecycle_stage == "deleted":
        raise ConfigError("hydra.run.dir", f"its MLflow run {record.get('run_id')} is gone from {uri}; "
                          "+restart=true starts the run over", where)
    return run




PENDING_FILE = "mlflow_run.pending.json"  # a run being created: the token its MLflow run is tagged with
_TOKEN_TAG = "cifarzoo.create_token"


def _created_run(client: MlflowClient, output_dir: Path, uri: str, experiment_id: str, run_name: str,
                 tags: dict[str, str]) -> Any:
    """A new MLflow run, recorded in `output_dir/mlflow_run.json`. A token written to the dir
    before `create_run` and tagged on the run lets a process killed in between be found again
    (`_adopted_run`): no orphan RUNNING run."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / OUTBOX_FILE).unlink(missing_ok=True)  # a discarded run's, never uploaded to this one
    token = uuid.uuid4().hex
    _write_json(output_dir / PENDING_FILE, {"token": token, "tracking_uri": uri, "experiment_id": experiment_id})
    run = client.create_run(experiment_id, run_name=run_name, tags={**tags, _TOKEN_TAG: token})
    _write_json(output_dir / RUN_FILE, {"run_id": run.info.run_id, "tracking_uri": uri, "experiment_id": experiment_id})
    (output_dir / PENDING_FILE).unlink(missing_ok=True)
    return run


def _adopted_run(client: MlflowClient, output_dir: Path, uri: str, experiment_id: str) -> Any:
    """The run a process killed between `create_run` and writing `mlflow_run.json` created in
    this dir (found by its token), now recorded and resumed; None when there is none."""
    try:
        pending = json.loads((output_dir / PENDING_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(pending, dict) or pending.get("tracking_uri") != uri or pending.get("experiment_id") != experiment_id:
        return None
    token = str(pending.get("token", ""))
    if not re.fullmatch(r"[0-9a-f]{32}", token):
        return None
    found = client.search_runs([experiment_id], filter_string=f"tags.`{_TOKEN_TAG}` = '{token}'", max_results=1)
    if not found:
        (output_dir / PENDING_FILE).unlink(missing_ok=True)
        return None
    run = found[0]
    _write_json(output_dir / RUN_FILE, {"run_id": run.info.run_id, "tracking_uri": uri, "experiment_id": experiment_id})
    (output_dir / PENDING_FILE).unlink(missing_ok=True)
    log.info("MLflow run %s was created here by a process that died before recording it: resuming it", run.info.run_id)
    return run


def _close_unopened(client: MlflowClient, run_id: str, resumed: bool, status: str, error: BaseException) -> None:
    """A run `Tracker.open` could not finish opening: a new one FAILED with the reason; a resumed
    one back to its `status` before (KILLED if it was RUNNING; a FINISHED one is left alone). One
    log line if even that fails."""
    try:
        if not resumed:
            client.set_tag(run_id, "failure_reason", f"could not open the run: {type(error).__name__}: {first_line(error)}")
            client.set_terminated(run_id, "FAILED")
        elif status != "FINISHED":
            client.set_terminated(run_id, status if status in ("FAILED", "KILLED") else "KILLED")
    except Exception as closing:  # the store that just failed may fail again
        log.error("could not close MLflow run %s after a failed start: %s", run_id, first_line(closing))


def _write_json(path: Path, record: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)


def serve_command(host: str, port: int, backend_store_uri: str, artifacts: Path, workers: int,
                  allowed_hosts: list[str]) -> list[str]:
    """`mlflow server` for a cluster: jobs log over http, one process owns the sqlite file."""
    return [
        sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port),
        "--backend-store-uri", backend_store_uri, "--artifacts-destination", str(artifacts),
        "--workers", str(workers), "--allowed-hosts", ",".join(allowed_hosts),
    ]


def default_allowed_hosts(host: str) -> list[str]:
    """The Host headers the server accepts: MLflow's default (localhost and private IPs) plus this
    machine's names and `host`, with any port. Jobs on other nodes reach the server by one of
    these names; MLflow answers any other with 403 "Invalid Host header" (DNS-rebinding guard)."""
    import socket

    from mlflow.server.security_utils import get_default_allowed_hosts

    names = {socket.gethostname(), socket.getfqdn()}
    if host not in ("0.0.0.0", "::", ""):
        names.add(host)
    return [*get_default_allowed_hosts(), *(f"{n}{port}" for n in sorted(names) for port in ("", ":*"))]


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
    serve.add_argument("--allowed-hosts", default=None,
                       help="comma-separated Host names jobs may use in tracking.uri (MLflow's DNS-rebinding guard; "
                            "default: localhost, private IPs, this machine's host names and --host); '*' allows all")
    args = parser.parse_args(argv)
    db = sqlite_path(args.backend_store_uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    allowed = args.allowed_hosts.split(",") if args.allowed_hosts else default_allowed_hosts(args.host)
    command = serve_command(args.host, args.port, args.backend_store_uri, args.artifacts, args.workers, allowed)
    print(f"cifarzoo: MLflow server for runs with tracking.uri=http://{args.host}:{args.port}", flush=True)
    os.execv(command[0], command)  # the server replaces this process: signals reach it directly


if __name__ == "__main__":
    main()
