"""run.py as users type it: a multirun sweep, one-line config errors, SIGKILL/SIGTERM/Ctrl-C + resume."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import run_cli
from cifarzoo import checkpoint
from cifarzoo.paths import DEFAULT_EXPERIMENT, REPO_DIR

pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "CIFARZOO_OUTPUTS": str(tmp_path / "outputs")}


def test_acceptance_sweep_leaves_four_finished_runs(env, tmp_path):
    args = ["-m", "model=resnet_preact", "model.depth=20", "optim.lr=0.1,0.2", "seed=1,2", "data=fake",
            "train.epochs=2", "data.train_size=256", "data.test_size=128", "train.device=cpu"]
    result = run_cli(args, env)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name(DEFAULT_EXPERIMENT).experiment_id])
    assert len(runs) == 4
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {(r.data.params["optim.lr"], r.data.params["seed"]) for r in runs} == {
        ("0.1", "1"), ("0.1", "2"), ("0.2", "1"), ("0.2", "2")}
    sweeps = {r.data.tags["sweep"] for r in runs}
    assert len(sweeps) == 1 and sweeps.pop().startswith(str(tmp_path / "outputs" / "multirun"))
    assert len({r.data.tags["config_hash"] for r in runs}) == 2  # seeds share a configuration
    for r in runs:
        assert r.data.params["model"] == "resnet_preact" and r.data.params["model.depth"] == "20"
        assert [m.step for m in client.get_metric_history(r.info.run_id, "test_error")] == [1, 2]
        assert Path(r.data.tags["output_dir"], "checkpoint.pt").exists()
        assert [a.path for a in client.list_artifacts(r.info.run_id)] == ["config.yaml", "run.log"]  # Hydra's job log


def test_bad_config_fails_with_one_line_before_training(env, tmp_path):
    result = run_cli(["data=fake", "data.train_size=256", "data.test_size=64", "model.depth=21"], env, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1] == "cifarzoo: error: model.depth: ResNet-preact with basic blocks needs depth = 6n+2, n >= 1 (got 21)"
    assert "Traceback" not in result.stderr
    assert "epoch 1/" not in result.stdout + result.stderr
    assert list((tmp_path / "outputs").rglob("*")) == [tmp_path / "outputs" / "runs"]  # no run dir left behind


def test_a_refused_resume_writes_nothing_into_the_dir_it_refuses(env, tmp_path):
    """`hydra.run.dir=X` with other overrides than the run X holds: refused (exit 2, one line),
    and X's record of that run (.hydra/overrides.yaml, outcome.json, run.log) stays as it was."""
    run_dir = tmp_path / "X"
    args = ["data=fake", "data.train_size=128", "data.test_size=64", "model.depth=8", "train.epochs=1",
            "train.device=cpu", f"hydra.run.dir={run_dir}"]
    assert run_cli(args, env, timeout=300).returncode == 0
    before = {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert b"optim.lr" not in before[".hydra/overrides.yaml"] and b"finished" in before["outcome.json"]
    result = run_cli([*args, "optim.lr=0.3"], env, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"cifarzoo: error: hydra.run.dir: holds a checkpoint of a different configuration; use a fresh output dir "
        f"(got '{run_dir}')")
    assert {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_missing_dataset_files_fail_with_one_line(env, tmp_path):
    result = run_cli(["data=cifar10", f"data.root={tmp_path / 'nothing'}"], env, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("cifarzoo: error: data.root: no CIFAR-10 files")


# -- interruption and resume -----------------------------------------------------------------

RESUME_ARGS = ["data=fake", "data.train_size=1024", "data.test_size=256", "model.depth=8",
               "train.batch_size=64", "train.epochs=3", "train.device=cpu", "seed=5"]


def final_metrics(env: dict[str, str], run_dir: Path) -> tuple[str, dict[str, list[tuple[int, float]]]]:
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
    run = client.search_runs([exp.experiment_id], filter_string=f"tags.output_dir = '{run_dir}'")[0]
    keys = ("train_loss", "train_error", "test_loss", "test_error", "lr")
    history = {k: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, k)] for k in keys}
    return run.info.status, history


def start(args: list[str], env: dict[str, str], stdout: int = subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO_DIR / "run.py"), *args], cwd=REPO_DIR,
                            env={**os.environ, **env}, stdout=stdout, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300, pattern: str = "") -> None:
    """Until `path` exists (with `pattern`: until a file under it matches the glob)."""
    deadline = time.time() + timeout
    while not (any(path.glob(pattern)) if pattern else path.exists()):
        assert proc.poll() is None, f"run ended before {path.name} appeared: {proc.stderr.read()[-2000:]}"
        assert time.time() < deadline
        time.sleep(0.05)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[dict[str, str], dict]:
    tmp = tmp_path_factory.mktemp("straight")
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}", "CIFARZOO_OUTPUTS": str(tmp / "outputs")}
    result = run_cli([*RESUME_ARGS, f"hydra.run.dir={tmp / 'run'}"], env)
    assert result.returncode == 0, result.stderr[-3000:]
    status, history = final_metrics(env, tmp / "run")
    assert status == "FINISHED"
    return history


# SIGKILL: resume from the last epoch's checkpoint. The handled stop signals (SIGTERM, SIGUSR1/2,
# SIGINT) share one path: the Ctrl-C test below runs it through run.py; SIGTERM has in-process tests.
@pytest.mark.parametrize("sig", [signal.SIGKILL])
def test_interrupted_run_resumes_to_identical_metrics(uninterrupted, env, tmp_path, sig):
    run_dir = tmp_path / "run"
    args = [*RESUME_ARGS, f"hydra.run.dir={run_dir}"]
    proc = start(args, env)
    wait_for(run_dir / "checkpoint.pt", proc)  # written after epoch 1
    if sig == signal.SIGTERM:
        time.sleep(0.3)  # land inside epoch 2: the handler writes a mid-epoch checkpoint
    proc.send_signal(sig)
    rc = proc.wait(timeout=120)
    if sig == signal.SIGKILL:
        assert rc == -signal.SIGKILL
    else:
        assert rc == 128 + signal.SIGTERM, proc.stderr.read()[-2000:]
        assert final_metrics(env, run_dir)[0] == "KILLED"

    result = run_cli(args, env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from" in result.stdout
    status, history = final_metrics(env, run_dir)
    assert status == "FINISHED"
    assert history == uninterrupted  # same values, each epoch logged exactly once


def test_ctrl_c_checkpoints_marks_killed_and_prints_the_command_that_resumes(uninterrupted, env, tmp_path):
    """Today's failure: exit 130 with no checkpoint of the epoch under way, the MLflow run left RUNNING."""
    run_dir = tmp_path / "run"
    proc = start([*RESUME_ARGS, f"hydra.run.dir={run_dir}"], env, stdout=subprocess.PIPE)
    wait_for(run_dir / "checkpoint.pt", proc)  # written after epoch 1
    time.sleep(0.3)  # inside epoch 2
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "cifarzoo: Ctrl-C: stopping after a checkpoint at the next step" in err and "Traceback" not in err
    state = checkpoint.read(run_dir / "checkpoint.pt")
    assert (state["epoch"], state["step"] > 0) == (1, True)  # the mid-epoch checkpoint
    assert final_metrics(env, run_dir)[0] == "KILLED"
    (line,) = [line for line in out.splitlines() if "to resume: " in line]
    assert "stopped by SIGINT after writing a checkpoint" in line
    command = shlex.split(line.split("to resume: ", 1)[1])
    assert command[1] == str(REPO_DIR / "run.py") and command[-1] == f"hydra.run.dir={run_dir}"

    rerun = subprocess.run(command, cwd=REPO_DIR, env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming from" in rerun.stdout
    status, history = final_metrics(env, run_dir)
    assert status == "FINISHED" and history == uninterrupted


def test_ctrl_c_stops_a_multirun_with_its_summary_and_exit_130(env, tmp_path):
    """Today's failure: a 45-line traceback, no summary."""
    args = ["-m", "data=fake", "data.train_size=1024", "data.test_size=64", "model.depth=8", "train.epochs=2",
            "train.batch_size=64", "train.device=cpu", "seed=1,2"]
    proc = start(args, env, stdout=subprocess.PIPE)
    wait_for(tmp_path / "outputs", proc, pattern="multirun/*/*/0/checkpoint.pt")  # job 0 after its epoch 1
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert ("cifarzoo sweep: 0 finished (0 resumed), 0 failed, 0 skipped, 1 interrupted; "
            "stopped by SIGINT: 1 of 2 jobs did not end") in out
    (resume,) = [line for line in out.splitlines() if line.startswith("cifarzoo: to resume the sweep")]
    assert resume.endswith(shlex.join([str(REPO_DIR / "run.py"), *args]))
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name(DEFAULT_EXPERIMENT).experiment_id])
    assert run.info.status == "KILLED"
