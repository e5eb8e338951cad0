"""`python -m cifarzoo.tracking serve`: a real MLflow server that runs log to over http."""

from __future__ import annotations

import math
import subprocess
import sys
import time

import pytest
import requests
from mlflow.tracking import MlflowClient

from conftest import QUICK, compose_run, free_port
from cifarzoo.paths import REPO_DIR
from cifarzoo.task import train

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cifarzoo.tracking", "serve", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--artifacts", str(tmp_path / "artifacts")],
        cwd=REPO_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{uri}/health", timeout=2).ok:
                break
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            pytest.fail(f"server exited: {proc.stdout.read()[-2000:]}")
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("server did not answer within 120 s")
    yield uri, tmp_path
    proc.terminate()
    proc.wait(timeout=30)


def test_runs_log_to_the_served_store_over_http(server, one_thread):
    uri, tmp_path = server
    cfg, ctx = compose_run([*QUICK, "model.depth=8", "train.epochs=1", f"tracking.uri={uri}",
                            "tracking.experiment=served"], tmp_path / "run")
    assert math.isfinite(train(cfg, ctx))
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("served").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["model.depth"] == "8"
    assert (tmp_path / "server.db").exists()  # the server, not this process, owns the sqlite file
    # the config artifact went through the server to its artifact store
    assert any(p.name == "config.yaml" for p in (tmp_path / "artifacts").rglob("*"))
