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
