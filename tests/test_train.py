"""In-process runs through the task, as run.py calls it: results, MLflow record, failures, resume."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import CONF_DIR, train_until_killed
from cifarzoo.loop import Diverged, Trainer
from cifarzoo.task import train

EXPECTED_METRICS = {"train_loss", "train_error", "test_loss", "test_error", "lr", "epoch_time_s", "images_per_s",
                    "best_test_error", "best_test_error_epoch"}


def only_run(client, experiment="test"):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    return runs[0]


def test_run_records_params_metrics_tags_and_config(make_run, client):
    cfg, ctx = make_run("optim.lr=0.05", "seed=3", "model.depth=8")
    error = train(cfg, ctx)
    run = only_run(client)
    assert run.info.status == "FINISHED"
    p = run.data.params
    assert p["model.depth"] == "8" and p["optim.lr"] == "0.05" and p["seed"] == "3"
    assert p["train.batch_size"] == "64" and p["model.preact_stage"] == "[true, true, true]"
    assert {p[g] for g in ("model", "aug", "optim", "sched", "data", "precision")} == {
        "resnet_preact", "standard", "sgd", "cosine", "fake", "fp32"}
    assert int(p["model.num_params"]) > 10_000
    assert not any(k.endswith("_target_") for k in p)
    for key in EXPECTED_METRICS:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert steps == [1, 2], key
    assert client.get_metric_history(run.info.run_id, "test_error")[-1].value == pytest.approx(error)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_time_s")] == [2]
    tags = run.data.tags
    assert "optim.lr=0.05" in tags["overrides"] and "seed=3" in tags["overrides"]
    assert len(tags["config_hash"]) == 16 and tags["output_dir"] == str(ctx.output_dir)
    assert "sweep" in tags and len(tags.get("git_commit", "x" * 40)) == 40
    assert tags["train_step"] == "eager"  # train.step=auto on CPU
    assert tags["train_step_reason"] == "train.step=auto: eager because train.device: a CUDA graph needs a CUDA device (the run is on cpu)"
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert "config.yaml" in artifacts
    assert (ctx.output_dir / "checkpoint.pt").exists()


def test_lr_logged_is_last_step_of_epoch(make_run, client):
    cfg, ctx = make_run("model.depth=8", "sched=multistep", "sched.milestones=[1]", "sched.gamma=0.5",
                        "optim.lr=0.1")
    train(cfg, ctx)
    run = only_run(client)
    lrs = [m.value for m in client.get_metric_history(run.info.run_id, "lr")]
    assert lrs == pytest.approx([0.1, 0.05])


def test_config_hash_ignores_seed_and_locations_but_not_hyperparameters(make_run, client):
    hashes = {}
    for name, extra in {"a": ["seed=1"], "b": ["seed=2", "data.root=/elsewhere"], "c": ["seed=1", "optim.lr=0.3"]}.items():
        cfg, ctx = make_run("model.depth=8", "train.epochs=1", *extra, out=name)
        train(cfg, ctx)
        run = client.search_runs([client.get_experiment_by_name("test").experiment_id],
                                 filter_string=f"tags.output_dir = '{ctx.output_dir}'")[0]
        hashes[name] = run.data.tags["config_hash"]
    assert hashes["a"] == hashes["b"] != hashes["c"]


def test_fake_data_is_learned(make_run):
    cfg, ctx = make_run("model.depth=8", "data.train_size=1024", "data.test_size=512", "train.epochs=4",
                        "optim.lr=0.05")
    assert train(cfg, ctx) < 40.0  # chance is 90 %


def test_eval_every_skips_test_metrics_but_always_evaluates_last_epoch(make_run, client):
    cfg, ctx = make_run("model.depth=8", "train.epochs=3", "train.eval_every=2")
    train(cfg, ctx)
    run = only_run(client)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "test_error")] == [2, 3]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_error")] == [1, 2, 3]


def test_divergence_marks_run_failed_and_raises_diverged(make_run, client):
    cfg, ctx = make_run("model.depth=8", "optim.lr=1e30", "train.epochs=3")
    with pytest.raises(Diverged):  # run.py: exit 3 (a sweep records it and goes on)
        train(cfg, ctx)
    run = only_run(client)
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"] == "diverged"
    assert run.data.tags["diverged_epoch"] == "1"


def test_other_exceptions_mark_run_failed_with_the_error_and_propagate(make_run, client, monkeypatch):
    def broken_evaluate(self):
        raise RuntimeError("evaluation exploded")

    monkeypatch.setattr(Trainer, "evaluate", broken_evaluate)
    cfg, ctx = make_run("model.depth=8", "train.epochs=1")
    with pytest.raises(RuntimeError, match="evaluation exploded"):
        train(cfg, ctx)
    run = only_run(client)
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"] == "RuntimeError: evaluation exploded"


def test_rerun_of_finished_run_reuses_it_without_logging_twice(make_run, client):
    cfg, ctx = make_run("model.depth=8")
    first = train(cfg, ctx)
    second = train(cfg, ctx)
    assert second == first
    run = only_run(client)
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "test_error")] == [1, 2]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_time_s")] == [2]


def test_resume_from_mid_run_checkpoint_gives_identical_results(make_run, client, tmp_path):
    """Run 3 epochs straight; separately run 3 epochs but stop after epoch 1 by raising
    from the epoch callback (the process 'dies'), then rerun in the same dir."""
    # Its own experiment: in the same one, the second run would be skipped as FINISHED before.
    cfg, ctx = make_run("model.depth=8", "train.epochs=3", "tracking.experiment=straight", out="straight")
    straight = train(cfg, ctx)

    cfg, ctx = make_run("model.depth=8", "train.epochs=3", out="resumed")
    train_until_killed(cfg, ctx)
    resumed = train(cfg, ctx)
    assert resumed == straight
    runs = {r.data.tags["output_dir"]: r for r in client.search_runs(
        [client.get_experiment_by_name(name).experiment_id for name in ("test", "straight")])}
    assert len(runs) == 2
    for key in EXPECTED_METRICS - {"epoch_time_s", "images_per_s"}:
        a = client.get_metric_history(runs[str(tmp_path / "straight")].info.run_id, key)
        b = client.get_metric_history(runs[str(tmp_path / "resumed")].info.run_id, key)
        assert [(m.step, m.value) for m in a] == [(m.step, m.value) for m in b], key


@pytest.mark.parametrize("precision", ["amp_bf16", "amp_fp16"])
def test_mixed_precision_modes_train_on_cpu(make_run, client, precision):
    cfg, ctx = make_run("model.depth=8", f"precision={precision}", "train.epochs=1")
    error = train(cfg, ctx)
    assert 0.0 <= error <= 100.0
    state = torch.load(ctx.output_dir / "checkpoint.pt", weights_only=False)
    if precision == "amp_fp16":
        assert state["precision"]["scale"] > 0  # the GradScaler's state is checkpointed
    assert only_run(client).data.params["precision"] == precision


def test_real_fashion_mnist_is_learned_on_cpu(make_run, tmp_path):
    from conftest import SHARED_DATA

    raw = SHARED_DATA / "FashionMNIST" / "raw"
    if not raw.is_dir():
        pytest.skip(f"no Fashion-MNIST files under {SHARED_DATA}")
    root = tmp_path / "datasets"
    (root / "FashionMNIST" / "raw").mkdir(parents=True)
    for f in raw.glob("*.gz"):  # the shared folder is read-only: unpack beside links
        (root / "FashionMNIST" / "raw" / f.name).symlink_to(f)
    cfg, ctx = make_run("data=fashion_mnist", f"data.root={root}", "data.download=true", "data.train_size=2000",
                        "data.test_size=1000", "model.depth=8", "train.epochs=3", "train.batch_size=32",
                        "optim.lr=0.05")
    assert train(cfg, ctx) < 45.0  # chance is 90 %


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF_DIR / "sched").glob("*.yaml")))
def test_every_schedule_option_trains_and_logs(make_run, client, option):
    extra = {"sgdr": ["sched.t0=1"], "multistep": ["sched.milestones=[1]"]}.get(option, [])
    cfg, ctx = make_run("model.depth=8", "train.epochs=2", f"sched={option}", *extra)
    assert math.isfinite(train(cfg, ctx))
    run = only_run(client)
    assert run.info.status == "FINISHED" and run.data.params["sched"] == option
    assert len(client.get_metric_history(run.info.run_id, "lr")) == 2


def test_grad_clip_run_trains_and_records_the_key(make_run, client):
    cfg, ctx = make_run("model.depth=8", "train.epochs=1", "optim.grad_clip=1.0", "precision=amp_fp16")
    assert math.isfinite(train(cfg, ctx))
    assert only_run(client).data.params["optim.grad_clip"] == "1.0"


def test_provenance_tags_say_where_and_with_what_the_run_trained(make_run, client, monkeypatch, one_thread):
    import socket

    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    monkeypatch.setenv("SLURMD_NODENAME", "node-a")
    cfg, ctx = make_run("model.depth=8", "train.epochs=1", "train.device=auto")
    train(cfg, ctx)
    tags = only_run(client).data.tags
    assert tags["device"].split(":")[0] in ("cpu", "cuda") and tags["device_name"]  # resolved, not "auto"
    assert tags["torch"] == torch.__version__ and tags["cuda"] == (torch.version.cuda or "none")
    assert tags["hostname"] == socket.gethostname() and tags["python"].count(".") == 2
    assert (tags["slurm_job_id"], tags["slurm_array_task_id"], tags["slurm_node"]) == ("4242", "7", "node-a")
    assert "slurm_array_job_id" not in tags
    assert tags.get("git_dirty", "false") in ("true", "false")  # absent only outside a git checkout
