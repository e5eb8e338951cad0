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
    resumed = open_run()
    assert resumed.run_id == tracker.run_id and resumed.best == (7.0, 2)
    resumed.log_epoch(3, {"train_loss": 1.0, "test_error": 1.0})  # replayed after the checkpoint: not logged again
    resumed.log_epoch(4, {"train_loss": 1.0})  # not evaluated: no best either
    resumed.log_epoch(5, {"train_loss": 1.0, "test_error": 7.5})
    resumed.log_epoch(6, {"train_loss": 1.0, "test_error": 6.5})
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
