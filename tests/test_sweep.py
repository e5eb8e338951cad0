"""Resumable sweeps: skip FINISHED configurations, resume unfinished ones from their checkpoints,
rerun FAILED ones only when asked, plan without running, and count outcomes after a sweep."""

from __future__ import annotations

import math
import os
import signal

import pytest

from conftest import run_cli
from cifarzoo.errors import ConfigError
from cifarzoo.loop import Trainer
from cifarzoo.sweep import OUTCOME_FILE, summarize, write_outcome
from cifarzoo.paths import DEFAULT_EXPERIMENT
from cifarzoo.task import train
from cifarzoo.tracking import Tracker

SMALL = ("model.depth=8", "data.train_size=128", "data.test_size=64")


def runs_of(client, experiment="test"):
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


def outcome(ctx) -> str:
    import json

    return json.loads((ctx.output_dir / OUTCOME_FILE).read_text())["outcome"]


def test_a_finished_configuration_is_skipped_with_its_result(make_run, client, one_thread):
    cfg, first = make_run(*SMALL, "seed=3", out="first")
    error = train(cfg, first)
    assert outcome(first) == "finished"
    cfg, again = make_run(*SMALL, "seed=3", out="again")
    assert train(cfg, again) == error
    assert outcome(again) == "skipped" and len(runs_of(client)) == 1
    assert not (again.output_dir / "checkpoint.pt").exists()
    cfg, other_seed = make_run(*SMALL, "seed=4", out="other")
    train(cfg, other_seed)
    assert outcome(other_seed) == "finished" and len(runs_of(client)) == 2


def test_an_interrupted_run_is_resumed_from_its_old_dir_into_its_old_mlflow_run(make_run, client, monkeypatch, one_thread):
    log_epoch = Tracker.log_epoch

    def stop_after_first_epoch(self, epoch, metrics):
        log_epoch(self, epoch, metrics)
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler would; the loop checkpoints and stops

    monkeypatch.setattr(Tracker, "log_epoch", stop_after_first_epoch)
    cfg, first = make_run(*SMALL, "train.epochs=3", out="first")
    with pytest.raises(SystemExit):
        train(cfg, first)
    (killed,) = runs_of(client)
    assert killed.info.status == "KILLED" and outcome(first) == "interrupted"
    monkeypatch.setattr(Tracker, "log_epoch", log_epoch)

    cfg, again = make_run(*SMALL, "train.epochs=3", out="again")  # a re-invoked sweep: a new job dir
    assert math.isfinite(train(cfg, again))
    (run,) = runs_of(client)
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2, 3]
    assert outcome(again) == "resumed"
    assert not (again.output_dir / "checkpoint.pt").exists()  # it trained in the old dir


def test_a_failed_configuration_is_rerun_only_when_asked(make_run, client, monkeypatch, one_thread):
    def broken(self):
        raise RuntimeError("evaluation exploded")

    monkeypatch.setattr(Trainer, "evaluate", broken)
    cfg, first = make_run(*SMALL, out="first")
    with pytest.raises(RuntimeError):
        train(cfg, first)
    assert outcome(first) == "failed"
    monkeypatch.undo()

    cfg, again = make_run(*SMALL, out="again")
    assert math.isnan(train(cfg, again))
    assert outcome(again) == "skipped-failed" and len(runs_of(client)) == 1
    cfg, rerun = make_run(*SMALL, "+rerun_failed=true", out="rerun")
    assert math.isfinite(train(cfg, rerun))
    assert sorted(r.info.status for r in runs_of(client)) == ["FAILED", "FINISHED"]
    assert outcome(rerun) == "finished"


def test_plan_reports_and_runs_nothing(make_run, client, capsys, one_thread):
    cfg, done = make_run(*SMALL, "seed=1", out="done")
    train(cfg, done)
    cfg, planned = make_run(*SMALL, "seed=1", "+plan=true", out="p1")
    assert math.isnan(train(cfg, planned))
    cfg, new = make_run(*SMALL, "seed=2", "+plan=true", out="p2")
    train(cfg, new)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("plan:")]
    assert lines[0].startswith("plan: skip") and "FINISHED before" in lines[0]
    assert lines[1].startswith("plan: run") and lines[1].endswith(": new")
    assert len(runs_of(client)) == 1 and not (new.output_dir / "checkpoint.pt").exists()
    line, _ = summarize(planned.output_dir.parent)
    assert line == "cifarzoo plan: 1 would run, 0 would resume, 1 would skip"


def test_summary_counts_every_outcome(tmp_path):
    for i, kind in enumerate(["finished", "finished", "resumed", "failed", "skipped", "skipped-failed", "interrupted"]):
        write_outcome(tmp_path / str(i), kind)
    line, counts = summarize(tmp_path)
    assert line == ("cifarzoo sweep: 3 finished (1 resumed), 1 failed, 2 skipped "
                    "(1 FAILED before; +rerun_failed=true reruns them), 1 interrupted")
    assert counts["failed"] == 1


def test_an_unreachable_tracking_server_fails_fast_naming_the_uri(make_run):
    cfg, ctx = make_run(*SMALL, "tracking.uri=http://127.0.0.1:9")
    with pytest.raises(ConfigError) as e:
        train(cfg, ctx)
    assert str(e.value).startswith("tracking.uri: no MLflow tracking server answers there")
    assert "http://127.0.0.1:9" in str(e.value)


@pytest.mark.slow
def test_a_reinvoked_sweep_skips_what_finished_and_prints_a_summary(tmp_path):
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "CIFARZOO_OUTPUTS": str(tmp_path / "outputs")}
    args = ["-m", "data=fake", "data.train_size=128", "data.test_size=64", "train.epochs=1", "train.batch_size=64",
            "train.device=cpu", "model.depth=8", "optim.lr=0.1,1e30"]  # the second diverges
    first = run_cli(args, env)
    assert first.returncode == 3, first.stderr[-3000:]  # a sweep whose only problem is a diverged run
    assert "cifarzoo sweep: 1 finished (0 resumed), 0 failed, 1 diverged, 0 skipped" in first.stdout
    assert "cifarzoo sweep: 1/2 done, ETA " in first.stdout
    second = run_cli(args, env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "cifarzoo sweep: 0 finished (0 resumed), 0 failed, 2 skipped (1 FAILED before" in second.stdout
    down = run_cli([*args, "tracking.uri=http://127.0.0.1:9"], env, timeout=120)
    assert down.returncode == 2
    assert down.stderr.strip().splitlines()[-1].startswith("cifarzoo: error: tracking.uri: no MLflow tracking server")
    assert "Launching" not in down.stdout + down.stderr  # before any job started


@pytest.mark.slow
def test_local_parallel_launcher_runs_jobs_at_the_same_time(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {"MLFLOW_TRACKING_URI": uri, "CIFARZOO_OUTPUTS": str(tmp_path / "outputs")}
    # Runs of a few seconds each: long enough that the two workers' start-up skew cannot hide the overlap.
    result = run_cli(["-m", "hydra/launcher=local_parallel", "hydra.launcher.n_jobs=2", "data=fake",
                      "data.train_size=1024", "data.test_size=64", "train.epochs=2", "train.batch_size=64",
                      "train.device=cpu", "model.depth=8", "seed=1,2"], env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cifarzoo sweep: 2 finished (0 resumed), 0 failed, 0 skipped" in result.stdout
    client = MlflowClient(uri)
    a, b = client.search_runs([client.get_experiment_by_name(DEFAULT_EXPERIMENT).experiment_id])
    assert {a.info.status, b.info.status} == {"FINISHED"}
    assert a.info.start_time < b.info.end_time and b.info.start_time < a.info.end_time  # they overlapped
