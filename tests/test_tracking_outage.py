"""A real `mlflow server` on 127.0.0.1 that goes away and comes back: sweep jobs wait for it,
runs buffer their metrics and upload them later, and the reachability check is a real API
call that sees the server's Host-header refusal."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from mlflow.tracking import MlflowClient

from conftest import QUICK, compose_run, free_port
from served import Server
from cifarzoo.errors import ConfigError
from cifarzoo.sweep import OUTCOME_FILE
from cifarzoo.task import RunContext, train
from cifarzoo.tracking import OUTBOX_FILE, Tracker, TrackingLost, check_reachable, default_allowed_hosts

pytestmark = pytest.mark.slow

SMALL = [*QUICK, "model.depth=8", "data.train_size=128", "data.test_size=64", "train.batch_size=32"]


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path).start()
    yield s
    s.stop()


def run_in_sweep(args: list[str], out: Path) -> tuple:
    cfg, ctx = compose_run(args, out)
    return cfg, RunContext(ctx.output_dir, ctx.choices, ctx.overrides, sweep=str(out.parent))


def the_run(uri: str, experiment: str):
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return client, run


def test_a_long_outage_mid_run_loses_no_metric_and_the_next_invocation_uploads_them(server, tmp_path, monkeypatch, one_thread):
    log_epoch = Tracker.log_epoch

    def outage_after_epoch_1(self, epoch, metrics):
        if epoch == 2:
            server.stop()
        log_epoch(self, epoch, metrics)

    monkeypatch.setattr(Tracker, "log_epoch", outage_after_epoch_1)
    args = [*SMALL, "train.epochs=3", f"tracking.uri={server.uri}", "tracking.experiment=outage", "tracking.wait_s=1"]
    cfg, ctx = compose_run(args, tmp_path / "run")
    with pytest.raises(TrackingLost) as lost:
        train(cfg, ctx)
    assert "rerun the same command" in str(lost.value) and "\n" not in str(lost.value)
    pending = (ctx.output_dir / OUTBOX_FILE).read_text().splitlines()
    assert len(pending) == 3  # epochs 2 and 3 and train_time_s, safe on disk
    assert (ctx.output_dir / "checkpoint.pt").exists()  # training and checkpointing went on
    monkeypatch.undo()

    server.start()  # the server is back: the same command uploads and finishes the run
    assert math.isfinite(train(cfg, ctx))
    client, run = the_run(server.uri, "outage")
    assert run.info.status == "FINISHED"
    for key in ("train_loss", "test_error"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2, 3], key
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_time_s")] == [3]
    assert not (ctx.output_dir / OUTBOX_FILE).exists()


def test_a_short_outage_mid_run_is_bridged_and_flushed_in_order(server, tmp_path, monkeypatch, one_thread):
    log_epoch = Tracker.log_epoch

    def outage_during_epoch_2(self, epoch, metrics):
        if epoch == 2:
            server.stop()
        if epoch == 3:
            server.start()
        log_epoch(self, epoch, metrics)

    monkeypatch.setattr(Tracker, "log_epoch", outage_during_epoch_2)
    cfg, ctx = compose_run([*SMALL, "train.epochs=4", f"tracking.uri={server.uri}", "tracking.experiment=blip"],
                           tmp_path / "run")
    assert math.isfinite(train(cfg, ctx))
    client, run = the_run(server.uri, "blip")
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == [1, 2, 3, 4]
    assert [m.timestamp for m in history] == sorted(m.timestamp for m in history)  # original times kept


def test_a_sweep_job_waits_for_the_server_then_fails_alone(tmp_path, one_thread):
    down = Server(tmp_path)  # not started: nothing listens on its port
    cfg, ctx = run_in_sweep([*SMALL, f"tracking.uri={down.uri}", "tracking.wait_s=2"], tmp_path / "sweep" / "0")
    started = time.monotonic()
    assert math.isnan(train(cfg, ctx))  # no exception: the sweep goes on with its next job
    assert time.monotonic() - started >= 2
    assert '"outcome": "failed"' in (ctx.output_dir / OUTCOME_FILE).read_text()

    # A server that comes back within tracking.wait_s: the job waits for it and runs.
    cfg, ctx = run_in_sweep([*SMALL, "train.epochs=1", f"tracking.uri={down.uri}", "tracking.wait_s=120"],
                            tmp_path / "sweep" / "1")
    comes_back = threading.Timer(3.0, down.start)
    comes_back.start()
    try:
        assert math.isfinite(train(cfg, ctx))
    finally:
        comes_back.join()
        down.stop()


def test_the_reachability_check_sees_the_host_header_refusal(tmp_path):
    strict = Server(tmp_path, "--allowed-hosts", "tracking.example.org").start()
    try:
        assert requests.get(f"{strict.uri}/health", timeout=5).ok  # what the old check looked at
        with pytest.raises(ConfigError) as error:
            check_reachable(strict.uri)
        message = str(error.value)
        assert message.startswith("tracking.uri: the server refuses the host name '127.0.0.1:")
        assert "--allowed-hosts" in message and "\n" not in message
    finally:
        strict.stop()


def test_serve_allows_this_machines_names_by_default(server):
    import socket

    assert f"{socket.gethostname()}:*" in default_allowed_hosts("0.0.0.0")
    check_reachable(server.uri)
    answer = requests.get(f"{server.uri}/api/2.0/mlflow/experiments/search", params={"max_results": 1},
                          headers={"Host": f"{socket.gethostname()}:{server.port}"}, timeout=10)
    assert answer.status_code == 200  # a job on another node that names this host gets in


def test_a_hung_server_stalls_no_epoch_and_the_end_waits_at_most_wait_s(server, tmp_path, monkeypatch, one_thread):
    """A server that takes connections and never answers (a TCP proxy stopped with SIGSTOP): the
    loop only appends to the outbox; the run's end gives up after tracking.wait_s."""
    port = free_port()
    proxy = subprocess.Popen([sys.executable, str(Path(__file__).with_name("tcp_proxy.py")), str(port), str(server.port)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert proxy.stdout.readline().strip() == "ready"
        log_epoch, took, last_epoch_end = Tracker.log_epoch, {}, [0.0]

        def hang_from_epoch_2(self, epoch, metrics):
            if epoch == 2:
                os.kill(proxy.pid, signal.SIGSTOP)
            start = time.monotonic()
            log_epoch(self, epoch, metrics)
            took[epoch] = time.monotonic() - start
            last_epoch_end[0] = time.monotonic()

        monkeypatch.setattr(Tracker, "log_epoch", hang_from_epoch_2)
        args = [*SMALL, "train.epochs=4", f"tracking.uri=http://127.0.0.1:{port}", "tracking.experiment=hung",
                "tracking.wait_s=3"]
        cfg, ctx = compose_run(args, tmp_path / "run")
        with pytest.raises(TrackingLost) as lost:
            train(cfg, ctx)
        ending = time.monotonic() - last_epoch_end[0]
        assert "\n" not in str(lost.value)
        assert sorted(took) == [1, 2, 3, 4] and max(took.values()) < 1.0, took  # the loop never waits on the server
        epochs = (ctx.output_dir / OUTBOX_FILE).read_text().splitlines()
        assert len(epochs) >= 3  # epochs 2..4 and train_time_s wait on disk (epoch 1 went up before the hang)
        assert ending < 3 + 2, ending  # tracking.wait_s, and the last checkpoint
    finally:
        os.kill(proxy.pid, signal.SIGCONT)
        proxy.kill()
        proxy.wait(timeout=30)
