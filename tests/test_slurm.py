"""SLURM: sweeps through `hydra/launcher=slurm`, and timeout/preemption -> checkpoint -> requeue -> resume.

The cluster tests submit real jobs: they need `sinfo` and a node that takes jobs (`bash
scripts/slurm-local.sh up` starts a one-node cluster on this machine, as .ci/run does) and a
filesystem the node shares with this process (pytest's tmp dir; pass --basetemp on a real
cluster). Without one they are skipped. The hand-over test needs no cluster."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import QUICK, compose_config, run_cli
from cifarzoo import checkpoint
from cifarzoo.build import build_run
from cifarzoo.loop import Interrupted, Requeued, Trainer
from cifarzoo.paths import DEFAULT_EXPERIMENT, REPO_DIR


def _no_cluster() -> str | None:
    """Why the cluster tests cannot run here, or None."""
    if shutil.which("sinfo") is None:
        return "no SLURM here (no sinfo on PATH); `bash scripts/slurm-local.sh up` starts a local cluster"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"sinfo does not answer ({type(error).__name__})"
    if out.returncode != 0:
        return f"sinfo fails: {(out.stderr or out.stdout).strip()[:200]}"
    states = set(out.stdout.split())
    if not states & {"idle", "mix"}:
        return f"no idle SLURM node (sinfo: {', '.join(sorted(states)) or 'no nodes'})"
    return None


NO_CLUSTER = _no_cluster()
needs_cluster = pytest.mark.skipif(NO_CLUSTER is not None, reason=f"SLURM cluster tests: {NO_CLUSTER}")

# CPU jobs small enough for a 2-core node: `gpus_per_node=0` switches the GPU default off.
LAUNCHER = ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=30"]
# (b): epochs of a few seconds on one CPU, so that the signal lands mid-training
REQUEUE_ARGS = ["data=fake", "data.train_size=2048", "data.test_size=256", "model.depth=8", "train.batch_size=64",
                "train.epochs=4", "train.device=cpu", "seed=7"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "CIFARZOO_OUTPUTS": str(tmp_path / "outputs")}


@pytest.fixture
def job_name():
    """A job name of this test's own, to find its jobs in squeue and cancel what is left."""
    name = f"cifarzoo-test-{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["scancel", "--name", name], capture_output=True, timeout=30)


def runs_of(env: dict[str, str]) -> tuple[MlflowClient, list]:
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
    assert experiment is not None
    return client, client.search_runs([experiment.experiment_id])


def steps(client: MlflowClient, run, key: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run.info.run_id, key)]


def job_logs(tmp_path: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(tmp_path.glob("outputs/multirun/*/*/.submitit/*/*_log.out")))


# -- no cluster: the loop hands the signal to the handler installed before it ---------------------

@pytest.mark.parametrize("previous_exits", [True, False])
def test_stop_signal_goes_to_the_previous_handler_after_the_checkpoint(tmp_path, one_thread, previous_exits):
    """submitit's SIGUSR2 handler requeues the job and exits (SystemExit): the loop raises Requeued
    after its checkpoint; a handler that returns (submitit's SIGTERM bypass) leaves a plain stop."""
    ckpt = tmp_path / "checkpoint.pt"
    seen: list[tuple[int, int]] = []

    def submitit_like(signum, frame):
        state = checkpoint.load(ckpt)  # the loop's checkpoint is already there
        seen.append((state["epoch"], state["step"]))
        if previous_exits:
            sys.exit(-1)

    def send_after_epoch_1(epoch, metrics):
        logged.append(epoch)
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGUSR2)

    cfg = compose_config([*QUICK, "model.depth=8", "train.epochs=3"])
    logged: list[int] = []
    old = signal.signal(signal.SIGUSR2, submitit_like)
    try:
        trainer = Trainer(build_run(cfg).parts, ckpt, {}, send_after_epoch_1)
        with pytest.raises(Interrupted) as stopped:
            trainer.fit()
        assert signal.getsignal(signal.SIGUSR2) is submitit_like  # restored after the loop
    finally:
        signal.signal(signal.SIGUSR2, old)
    assert isinstance(stopped.value, Requeued) == previous_exits
    assert stopped.value.signum == signal.SIGUSR2
    assert seen == [(1, 1)]  # called once, after the mid-epoch-2 checkpoint
    # the requeued job: resumes from the checkpoint and logs the remaining epochs once
    resumed = Trainer(build_run(cfg).parts, ckpt, {}, send_after_epoch_1)
    resumed.load_state_dict(checkpoint.load(ckpt))
    resumed.fit()
    assert logged == [1, 2, 3]


# -- a real cluster --------------------------------------------------------------------------------

@pytest.mark.slow
@needs_cluster
def test_slurm_sweep_leaves_finished_runs(env, tmp_path, job_name):
    args = ["-m", *LAUNCHER, f"hydra.launcher.name={job_name}", *QUICK, "model.depth=8", "seed=1,2"]
    result = run_cli(args, env, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:] + job_logs(tmp_path)[-3000:]
    client, runs = runs_of(env)
    assert len(runs) == 2
    assert {r.info.status for r in runs} == {"FINISHED"}, job_logs(tmp_path)[-3000:]
    assert {r.data.params["seed"] for r in runs} == {"1", "2"}
    for r in runs:
        assert steps(client, r, "train_loss") == [1, 2] and steps(client, r, "test_error") == [1, 2]
        assert Path(r.data.tags["output_dir"], "checkpoint.pt").exists()
        assert r.data.tags["output_dir"].startswith(str(tmp_path / "outputs" / "multirun"))
    assert len(list(tmp_path.glob("outputs/multirun/*/*/.submitit/*_*/*_log.out"))) == 2  # one per array task


@pytest.mark.slow
@needs_cluster
# One task only in CI (tasks=2 adds 80 s): both ranks stopping at one step is tests/test_distributed.py's
# signal test, DDP under SLURM is test_slurm_tasks_per_node_...; add 2 here to run the two together.
@pytest.mark.parametrize("tasks", [1])
def test_slurm_job_signalled_mid_training_is_requeued_and_resumes_into_one_run(env, tmp_path, job_name, tasks):
    """USR2 is what SLURM sends signal_delay_s before the time limit (and what preemption tools
    send): the run checkpoints, submitit requeues the job, the new job resumes the same run.
    With 2 tasks the run is data-parallel (train.distributed=true): both ranks stop at one step."""
    ddp = [f"hydra.launcher.tasks_per_node={tasks}", "train.distributed=true"] if tasks > 1 else []
    proc = subprocess.Popen(
        [sys.executable, str(REPO_DIR / "run.py"), "-m", *LAUNCHER, f"hydra.launcher.name={job_name}", *REQUEUE_ARGS,
         *ddp],
        cwd=REPO_DIR, env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.time() + 240  # queue + job start + epoch 1
        while not list(tmp_path.glob("outputs/multirun/*/*/0/checkpoint.pt")):  # written after epoch 1
            assert proc.poll() is None, f"sweep ended before epoch 1: {proc.stdout.read()[-3000:]}{job_logs(tmp_path)[-3000:]}"
            assert time.time() < deadline, f"no checkpoint after 240 s:\n{job_logs(tmp_path)[-3000:]}"
            time.sleep(0.2)
        job = subprocess.run(["squeue", "-h", "--name", job_name, "-o", "%i"], capture_output=True, text=True,
                             timeout=30).stdout.split()
        assert len(job) == 1, job
        subprocess.run(["scancel", "--signal=USR2", job[0]], check=True, timeout=30)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    logs = job_logs(tmp_path)
    assert proc.returncode == 0, out[-3000:] + logs[-3000:]
    assert f"Requeued job {job[0]}" in logs, logs[-3000:]
    assert logs.count("resuming from") == 1, logs[-3000:]
    client, runs = runs_of(env)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    for key in ("train_loss", "train_error", "test_error", "lr"):
        assert steps(client, run, key) == [1, 2, 3, 4], key  # every epoch logged exactly once
    assert steps(client, run, "train_time_s") == [4]
    assert "requeued" in run.data.tags and "interrupted" not in run.data.tags  # never marked KILLED
    assert run.data.params["train.world_size"] == str(tasks)


@pytest.mark.slow
@needs_cluster
@pytest.mark.parametrize(("fields", "line"), [
    (["hydra.launcher.gpus_per_node=0", "hydra.launcher.partition=nope"],
     # caught by pre-flight (sinfo's partitions) before sbatch is asked
     "hydra.launcher.partition: not a partition of this cluster; sinfo lists debug (got 'nope')"),
    ([],  # the default, one GPU per job, on the local cluster's partition without GPUs
     "hydra.launcher.gpus_per_node: sbatch refused the job array (Invalid generic resource (gres) specification); "
     "a partition without GPUs takes hydra.launcher.gpus_per_node=0 (got 1)"),
], ids=["unknown-partition", "gpus-on-a-cpu-partition"])
def test_a_job_array_sbatch_refuses_is_one_line_naming_the_launcher_field(env, tmp_path, job_name, fields, line):
    args = ["-m", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", *fields,
            f"hydra.launcher.name={job_name}", *QUICK, "model.depth=8", "seed=1,2"]
    result = run_cli(args, env, timeout=120)
    assert result.returncode == 2, (result.stdout + result.stderr)[-3000:]
    assert result.stderr.strip().splitlines()[-1] == f"cifarzoo: error: {line}"
    assert "Traceback" not in result.stderr
    left = [p for p in (tmp_path / "outputs").rglob("*") if p != tmp_path / "outputs" / "multirun"]
    assert left == []  # no sweep dir left


@pytest.mark.slow
@needs_cluster
def test_slurm_tasks_per_node_trains_one_data_parallel_run(env, tmp_path, job_name):
    """`hydra.launcher.tasks_per_node=2 train.distributed=true`: one job of two tasks, which join
    one process group through submitit's environment; rank 0 logs the one MLflow run."""
    args = ["-m", *LAUNCHER, "hydra.launcher.tasks_per_node=2", f"hydra.launcher.name={job_name}", *QUICK,
            "model.depth=8", "train.distributed=true"]
    result = run_cli(args, env, timeout=300)
    logs = job_logs(tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:] + logs[-3000:]
    assert "rank 1 of 2 joined the process group (gloo)" in logs, logs[-3000:]
    client, runs = runs_of(env)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["train.world_size"] == "2"
    assert steps(client, runs[0], "test_error") == [1, 2]
