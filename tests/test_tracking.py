"""The MLflow store under concurrency (first runs racing on one fresh sqlite file), the best test
error so far, and what a run records besides its metrics: system metrics and its log file."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import compose_config
from cifarzoo.errors import ConfigError
from cifarzoo.paths import DEFAULT_EXPERIMENT, REPO_DIR
from cifarzoo.task import train
from cifarzoo.tracking import Tracker, system_metrics_interval

OPEN_RUN = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from cifarzoo.tracking import Tracker, system_metrics_interval
    uri, out = sys.argv[1], Path(sys.argv[2])
    tracker = Tracker.open(uri, "race", out, out.name, {"seed": out.name}, {"config_hash": "h"}, "seed: 0")
    tracker.log_epoch(1, {"train_loss": 1.0})
    tracker.finish()
    """
)


def test_concurrent_first_runs_on_a_fresh_sqlite_store_all_land_in_their_experiment(tmp_path):
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    procs = [
        subprocess.Popen([sys.executable, "-c", OPEN_RUN, uri, str(tmp_path / f"run{i}")], cwd=REPO_DIR,
                         stderr=subprocess.PIPE, text=True)
        for i in range(4)
    ]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()[-2000:]
    client = MlflowClient(uri)
    experiments = {e.name: e.experiment_id for e in client.search_experiments()}
    assert sorted(experiments) == ["Default", "race"]
    runs = client.search_runs([experiments["race"]])
    assert sorted(r.data.params["seed"] for r in runs) == ["run0", "run1", "run2", "run3"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert client.search_runs([experiments["Default"]]) == []


def test_best_test_error_is_the_lowest_so_far_and_survives_a_resume(tmp_path):
    """Epochs 1-3 logged, the process dies; the reopened run goes on from epoch 3 and its best
    (epoch 2) is read back from the logged history, not restarted from the resumed epochs."""
    from cifarzoo.tracking import Tracker, system_metrics_interval

    uri, out = f"sqlite:///{tmp_path / 'best.db'}", tmp_path / "run"

    def open_run() -> Tracker:
        return Tracker.open(uri, "best", out, "run", {"seed": "1"}, {"config_hash": "h"}, "seed: 1")

    tracker = open_run()
    for epoch, error in enumerate([9.0, 7.0, 8.0], start=1):
        tracker.log_epoch(epoch, {"train_loss": 1.0, "test_error": error})
    assert tracker.drain(30)  # the uploader thread sent them before the process died
    resumed = open_run()
    assert resumed.run_id == tracker.run_id and resumed.best == (7.0, 2)
    resumed.log_epoch(3, {"train_loss": 1.0, "test_error": 1.0})  # replayed after the checkpoint: not logged again
    resumed.log_epoch(4, {"train_loss": 1.0})  # not evaluated: no best either
    resumed.log_epoch(5, {"train_loss": 1.0, "test_error": 7.5})
    resumed.log_epoch(6, {"train_loss": 1.0, "test_error": 6.5})
    assert resumed.drain(30)
    client = MlflowClient(uri)
    history = {key: [(m.step, m.value) for m in client.get_metric_history(tracker.run_id, key)]
               for key in ("best_test_error", "best_test_error_epoch")}
    assert history["best_test_error"] == [(1, 9.0), (2, 7.0), (3, 7.0), (5, 7.0), (6, 6.5)]
    assert history["best_test_error_epoch"] == [(1, 1), (2, 2), (3, 2), (5, 2), (6, 6)]


# -- provenance: the default experiment, system metrics, the job's log ---------------------------

def test_runs_land_in_an_experiment_not_confused_with_mlflows_own_default():
    """MLflow's UI always shows its own `Default` experiment; cifarzoo's was `default` beside it."""
    cfg = compose_config([])
    assert cfg.tracking.experiment == DEFAULT_EXPERIMENT
    assert DEFAULT_EXPERIMENT.lower() != "default"


@pytest.fixture
def job_log(tmp_path, caplog):
    """The file Hydra's job logging writes in the job's dir (`<dir>/run.log`), here for `tmp_path/run`."""
    path = tmp_path / "run" / "run.log"
    path.parent.mkdir()
    handler = logging.FileHandler(path)
    logging.getLogger().addHandler(handler)
    caplog.set_level(logging.INFO, logger="cifarzoo")
    yield path
    logging.getLogger().removeHandler(handler)
    handler.close()


def artifact_text(client: MlflowClient, run_id: str, path: str, tmp_path: Path) -> str:
    return Path(client.download_artifacts(run_id, path, str(tmp_path))).read_text()


def test_a_run_logs_system_metrics_and_its_log_file(make_run, client, job_log, tmp_path, one_thread):
    cfg, ctx = make_run("model.depth=8", "tracking.system_metrics=true", "tracking.system_metrics_interval_s=0.05")
    train(cfg, ctx)
    (run,) = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert run.info.status == "FINISHED"
    cpu = client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
    assert len(cpu) >= 1 and all(0 <= m.value <= 100 * os.cpu_count() for m in cpu)
    assert "system/system_memory_usage_megabytes" in run.data.metrics
    log = artifact_text(client, run.info.run_id, "run.log", tmp_path / "got")
    assert "epoch 2/2" in log and run.info.run_id in log


def test_an_interrupted_run_uploads_its_log_and_a_run_without_sampler_logs_no_system_metrics(
        make_run, client, job_log, monkeypatch, tmp_path, one_thread):
    log_epoch = Tracker.log_epoch

    def stop_after_first_epoch(self, epoch, metrics):
        log_epoch(self, epoch, metrics)
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # the loop checkpoints and stops

    monkeypatch.setattr(Tracker, "log_epoch", stop_after_first_epoch)
    cfg, ctx = make_run("model.depth=8", "train.epochs=3")  # the fixtures' default: tracking.system_metrics=false
    with pytest.raises(SystemExit):
        train(cfg, ctx)
    (run,) = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert run.info.status == "KILLED"
    assert "epoch 1/3" in artifact_text(client, run.info.run_id, "run.log", tmp_path / "got")
    assert not [key for key in run.data.metrics if key.startswith("system/")]


@pytest.mark.parametrize(("override", "message"), [
    ("tracking.system_metrics=yes", "tracking.system_metrics: must be true or false (got 'yes')"),
    ("tracking.system_metrics_interval_s=0", "tracking.system_metrics_interval_s: must be a number of seconds > 0 (got 0)"),
])
def test_bad_system_metrics_keys_are_one_line_errors(override, message):
    cfg = compose_config(["tracking.system_metrics=true", override])
    with pytest.raises(ConfigError) as error:
        system_metrics_interval(cfg.tracking)
    assert str(error.value) == message


# -- opening a run: telemetry off, no orphan RUNNING run ---------------------------------------

# MLflow's own switch (its CI detection would also see pytest's variables: not what is tested)
TELEMETRY = "import cifarzoo; from mlflow.environment_variables import MLFLOW_DISABLE_TELEMETRY as off; print(off.get())"


def test_every_cifarzoo_process_runs_without_mlflow_telemetry_unless_turned_back_on():
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_DISABLE_TELEMETRY"}
    default = subprocess.run([sys.executable, "-c", TELEMETRY], cwd=REPO_DIR, env=env, capture_output=True, text=True)
    assert default.stdout.strip() == "True", default.stderr[-500:]
    turned_on = subprocess.run([sys.executable, "-c", "import os; print(os.environ['MLFLOW_DISABLE_TELEMETRY'])"
                                "; import cifarzoo; print(os.environ['MLFLOW_DISABLE_TELEMETRY'])"],
                               cwd=REPO_DIR, env={**env, "MLFLOW_DISABLE_TELEMETRY": "false"}, capture_output=True, text=True)
    assert turned_on.stdout.split() == ["false", "false"]  # the user's choice wins


def opened(uri: str, out: Path, **kw) -> Tracker:
    return Tracker.open(uri, "open", out, out.name, {"seed": "0", "optim.lr": "0.1"}, {"config_hash": "h"}, "seed: 0", **kw)


def test_an_mlflow_error_while_opening_is_one_line_and_leaves_no_running_run(tmp_path, monkeypatch):
    from mlflow.exceptions import MlflowException

    from cifarzoo.tracking import TrackingLost

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def environ_race(self, run_id, metrics=(), params=(), tags=()):  # what the telemetry thread's race raised
        raise MlflowException("dictionary changed size during iteration\nTraceback ...")

    monkeypatch.setattr(MlflowClient, "log_batch", environ_race)
    with pytest.raises(TrackingLost) as error:
        opened(uri, tmp_path / "run")
    assert "\n" not in str(error.value) and "could not open MLflow run" in str(error.value)
    monkeypatch.undo()
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("open").experiment_id])
    assert run.info.status == "FAILED" and "dictionary changed size" in run.data.tags["failure_reason"]


def test_a_process_killed_between_create_run_and_its_record_leaves_no_orphan(tmp_path, monkeypatch):
    uri, out = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "run"
    create_run = MlflowClient.create_run

    def create_then_die(self, *args, **kwargs):
        create_run(self, *args, **kwargs)
        raise SystemExit("SIGKILL right after create_run")

    monkeypatch.setattr(MlflowClient, "create_run", create_then_die)
    with pytest.raises(SystemExit):
        opened(uri, out)
    monkeypatch.undo()
    assert not (out / "mlflow_run.json").exists()

    tracker = opened(uri, out)  # the rerun finds the run it created and resumes it
    tracker.log_epoch(1, {"train_loss": 1.0})
    tracker.finish()
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("open").experiment_id])
    assert [r.info.status for r in runs] == ["FINISHED"] and runs[0].info.run_id == tracker.run_id


def test_a_resumed_run_drops_the_failure_reason_of_the_attempt_before(tmp_path):
    uri, out = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "run"
    tracker = opened(uri, out)
    tracker.fail("CheckpointError: cannot write checkpoint: [Errno 28] No space left on device")
    assert "failure_reason" in MlflowClient(uri).get_run(tracker.run_id).data.tags
    again = opened(uri, out)  # the same command after freeing space resumes the run
    assert again.run_id == tracker.run_id
    run = MlflowClient(uri).get_run(again.run_id)
    assert run.info.status == "RUNNING" and "failure_reason" not in run.data.tags
    again.finish()
