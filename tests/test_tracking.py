"""The MLflow store under concurrency: first runs racing on one fresh sqlite file."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from mlflow.tracking import MlflowClient

from cifarzoo.paths import REPO_DIR

OPEN_RUN = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from cifarzoo.tracking import Tracker
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
    from cifarzoo.tracking import Tracker

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
