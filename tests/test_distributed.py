"""Data-parallel runs (`train.distributed=true`) on CPU: two real processes in a gloo group."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from conftest import QUICK, REPO_DIR, compose_config, compose_run
from ddp_worker import spawn, step_rank, train_rank

from cifarzoo import checkpoint
from cifarzoo.build import build_run
from cifarzoo.checkpoint import CHECKPOINT_FILE
from cifarzoo.distributed import Ranks, connect
from cifarzoo.errors import ConfigError
from cifarzoo.loop import STOP_CHECK_EVERY, Trainer
from cifarzoo.task import train

SMALL = ["model.depth=8", "model.base_channels=4"]


def test_one_ddp_step_is_the_averaged_step_over_both_shards(tmp_path, one_thread):
    """Rank r holds every 2nd training image from r and trains on batch_size/2 of them. One DDP
    step must equal one single-process step on the two local batches together, with BN statistics
    per local batch (ghost BN of batch_size/2), and leave both ranks with the same weights."""
    overrides = [*QUICK, *SMALL, "aug=none", "train.batch_size=32", "optim.weight_decay=5e-4"]
    spawn(step_rank, 2, overrides, str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert [r["shard_size"] for r in ranks] == [128, 128]
    assert [r["local_batch"] for r in ranks] == [16, 16]
    for name, value in ranks[0]["params"].items():
        assert torch.equal(value, ranks[1]["params"][name]), name

    reference = build_run(compose_config([*overrides, "train.ghost_batch_size=16"])).parts
    trainer = Trainer(reference, tmp_path / "unused.pt", {}, on_epoch=lambda epoch, metrics: None)
    first_of_each_shard = torch.cat([torch.arange(16) * 2, torch.arange(16) * 2 + 1])  # shard r = images r, r+2, ...
    trainer.train_step(first_of_each_shard)
    initial = build_run(compose_config(overrides)).parts.model
    moved = 0
    for name, value in reference.model.named_parameters():
        assert torch.allclose(value, ranks[0]["params"][name], atol=1e-6, rtol=1e-5), name
        moved += not torch.allclose(value, initial.get_parameter(name))
    assert moved > 0  # the step changed the weights: the comparison is not between two initial models


def _results(path, world_size=2) -> list[dict]:
    return [json.loads((path / f"rank{r}.json").read_text()) for r in range(world_size)]


def test_ddp_run_logs_once_checkpoints_every_rank_and_resumes_identically(tmp_path, client, tracking_uri):
    """A straight 2-process run, and one stopped mid-epoch by a signal that only rank 1 receives and
    then rerun: one MLflow run each, the same metrics, rank 1's own (Hydra) output dir removed."""
    overrides = [*QUICK, *SMALL, "data.train_size=512", "train.batch_size=32", f"tracking.uri={tracking_uri}",
                 "train.distributed=true"]
    results = tmp_path / "results"
    results.mkdir()
    straight = [str(tmp_path / "straight"), str(tmp_path / "straight-rank1")]
    for d in straight:  # what Hydra leaves in each rank's dir before the task starts
        os.makedirs(f"{d}/.hydra")
        open(f"{d}/run.log", "w").close()
    spawn(train_rank, 2, [*overrides, "tracking.experiment=straight"], straight, str(results))
    first = _results(results)
    assert first[0]["test_error"] == first[1]["test_error"]
    assert not os.path.exists(straight[1]) and os.path.isdir(straight[0])
    (run,) = client.search_runs([client.get_experiment_by_name("straight").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.world_size"] == "2" and run.data.params["train.distributed"] == "True"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "test_error")] == [1, 2]

    # 512 images / 2 ranks / 16 per rank = 16 steps per epoch; the signal lands in epoch 2 after its
    # 3rd step and both ranks stop at the next agreed check, with a checkpoint holding both ranks' state.
    resumed = [str(tmp_path / "resumed"), str(tmp_path / "resumed")]  # SLURM tasks share one dir
    spawn(train_rank, 2, [*overrides, "tracking.experiment=test"], resumed, str(results), 16 + 3)
    assert [r.get("exit") for r in _results(results)] == [143, 143]
    state = checkpoint.load(tmp_path / "resumed" / CHECKPOINT_FILE)
    assert (state["epoch"], state["step"], checkpoint.world_size(state)) == (1, STOP_CHECK_EVERY, 2)
    assert not torch.equal(state["ranks"][0]["perm"], state["ranks"][1]["perm"])
    (stopped,) = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert stopped.info.status == "KILLED"

    # Re-invoked as a sweep job would be: a new dir (shared, as SLURM tasks share it) whose job finds
    # the unfinished run in the experiment and resumes it in its old dir; the new dir gets the outcome.
    rerun = tmp_path / "rerun"
    os.makedirs(rerun / ".hydra")
    spawn(train_rank, 2, [*overrides, "tracking.experiment=test"], [str(rerun)] * 2, str(results))
    assert [r["test_error"] for r in _results(results)] == [first[0]["test_error"]] * 2
    assert json.loads((rerun / "outcome.json").read_text())["outcome"] == "resumed"
    assert (rerun / ".hydra").is_dir()  # rank 1 shares rank 0's dir: it removes nothing
    (again,) = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert again.info.run_id == stopped.info.run_id and again.info.status == "FINISHED"
    for key in ("train_loss", "train_error", "test_loss", "test_error", "lr"):
        a = client.get_metric_history(run.info.run_id, key)
        b = client.get_metric_history(again.info.run_id, key)
        assert [(m.step, m.value) for m in a] == [(m.step, m.value) for m in b], key

    # The same dir with one process: the checkpoint says how many processes must resume it.
    cfg, ctx = compose_run([*overrides, "tracking.experiment=test", "train.distributed=false"], tmp_path / "resumed")
    with pytest.raises(ConfigError, match=r"^train.distributed: the checkpoint in .* was written by 2 processes"):
        train(cfg, ctx)


def test_distributed_without_a_launcher_is_a_config_error(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_JOB_ID", "SUBMITIT_LOCAL_JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match=r"^train.distributed: needs processes from a launcher: torchrun"):
        connect(True, "gloo")


def test_launcher_processes_without_distributed_is_a_config_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun
    with pytest.raises(ConfigError, match=r"^train.distributed: is false but this process is one of 2"):
        connect(False, "gloo")


def test_submitit_tasks_without_distributed_is_a_config_error(monkeypatch):
    """A task of a `hydra.launcher.tasks_per_node=3` job, as submitit's job environment reads it."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    for name, value in {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "7", "SLURM_NTASKS": "3", "SLURM_PROCID": "1",
                        "SLURM_LOCALID": "1", "SLURM_NODEID": "0", "SLURM_JOB_NUM_NODES": "1",
                        "SLURM_JOB_NODELIST": "node1"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=r"^train.distributed: is false but this process is one of 3"):
        connect(False, "gloo")
    monkeypatch.delenv("SUBMITIT_EXECUTOR")  # a hand-written sbatch script's tasks: not counted
    assert connect(False, "gloo") == Ranks()


def test_nccl_with_fewer_gpus_than_processes_is_a_config_error(monkeypatch):
    """Two ranks on one GPU would fail inside NCCL; the error comes first, naming the key."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match=r"^train.distributed: 2 processes on this node but 1 visible GPUs"):
        connect(True, "nccl")


def test_batch_size_must_split_evenly_over_the_processes():
    with pytest.raises(ConfigError, match=r"^train.batch_size: must be divisible by the number of processes 3"):
        build_run(compose_config([*QUICK, "train.batch_size=64"]), Ranks(0, 3, 0))
    with pytest.raises(ConfigError, match=r"^train.ghost_batch_size: must divide the per-process batch"):
        build_run(compose_config([*QUICK, "train.batch_size=64", "train.ghost_batch_size=64"]), Ranks(0, 2, 0))


def test_shards_are_disjoint_equal_and_cover_the_training_set():
    from cifarzoo.data import Splits

    x = torch.arange(11).view(11, 1, 1, 1).to(torch.uint8)
    splits = Splits(x, torch.arange(11), x[:5], torch.arange(5))
    shards = [splits.shard(r, 3) for r in range(3)]
    assert [s.train_y.tolist() for s in shards] == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]  # 9, 10 left out
    assert sorted(sum((s.test_y.tolist() for s in shards), [])) == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_torchrun_cli_trains_one_run_in_one_output_dir(tmp_path):
    """`torchrun --nproc_per_node 2 run.py ... train.distributed=true`, as a user types it."""
    import subprocess

    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "CIFARZOO_OUTPUTS": str(tmp_path / "outputs"),
           "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "run.py",
         *QUICK, *SMALL, "train.distributed=true", "tracking.experiment=cli"],
        cwd=REPO_DIR, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert output.count("epoch 2/2") == 1, output[-3000:]  # rank 0's progress only
    run_dirs = [p for p in (tmp_path / "outputs" / "runs").glob("*/*") if p.is_dir()]
    assert len(run_dirs) == 1 and (run_dirs[0] / CHECKPOINT_FILE).exists()
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("cli").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["train.world_size"] == "2"
    assert run.data.tags["output_dir"] == str(run_dirs[0])
