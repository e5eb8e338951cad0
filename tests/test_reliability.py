"""Nothing lost, nobody in: checkpoints that run no code and survive corruption, one writer per
run dir, a full disk, outcome files the summary can always count, and a non-finite test loss."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cifarzoo import checkpoint
from cifarzoo.checkpoint import CheckpointError
from cifarzoo.errors import ConfigError
from cifarzoo.loop import Diverged, Trainer
from cifarzoo.runlock import LOCK_FILE, RunLock
from cifarzoo.sweep import OUTCOME_FILE, failed_jobs, summarize, write_outcome
from cifarzoo.paths import DEFAULT_EXPERIMENT
from cifarzoo.task import train
from cifarzoo.tracking import Tracker

SMALL = ("model.depth=8", "data.train_size=128", "data.test_size=64", "train.batch_size=32")


def runs_of(client, experiment="test"):
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


def outcome(directory: Path) -> str:
    return json.loads((directory / OUTCOME_FILE).read_text())["outcome"]


def steps(client, run_id: str, key: str = "train_loss") -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, key)]


def interrupt_after_epoch(epoch: int):
    """A Tracker.log_epoch that sends this process SIGTERM once `epoch` is logged, as a scheduler
    would: the loop checkpoints at its next step, the run is KILLED (SystemExit)."""
    original = Tracker.log_epoch

    def log_then_signal(self, e, metrics):
        original(self, e, metrics)
        if e == epoch:
            os.kill(os.getpid(), signal.SIGTERM)

    return log_then_signal


def stop_after_epoch(epoch: int):
    """A Trainer.save that 'kills' the process (SystemExit) right after the checkpoint of `epoch`."""
    original = Trainer.save

    def save_then_die(self):
        original(self)
        if self.epoch == epoch and self.step == 0:
            raise SystemExit(f"killed after the epoch-{epoch} checkpoint")

    return save_then_die


# -- 1. code execution from a checkpoint ------------------------------------------------------

class Payload:
    """Unpickling this runs `open(marker, 'w')`: what a crafted checkpoint.pt would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def malicious_checkpoint(path: Path, marker: Path) -> None:
    torch.save({"model": {}, "epoch": 0, "payload": Payload(marker)}, path)


def test_the_malicious_payload_is_live_but_a_checkpoint_load_does_not_run_it(tmp_path):
    control, marker = tmp_path / "control", tmp_path / "marker"
    malicious_checkpoint(tmp_path / "c.pt", control)
    torch.load(tmp_path / "c.pt", weights_only=False)  # the unsafe load the project used to do
    assert control.exists(), "the test payload must really run code when unpickled unsafely"

    malicious_checkpoint(tmp_path / "checkpoint.pt", marker)
    with pytest.raises(CheckpointError) as error:
        checkpoint.load(tmp_path / "checkpoint.pt")
    assert not marker.exists()
    assert str(tmp_path / "checkpoint.pt") in str(error.value) and "\n" not in str(error.value)


def test_a_sweep_is_not_pointed_at_a_dir_by_an_output_dir_tag(make_run, client, monkeypatch, tmp_path, one_thread, caplog):
    monkeypatch.setattr(Tracker, "log_epoch", interrupt_after_epoch(1))
    cfg, first = make_run(*SMALL, out="first")
    with pytest.raises(SystemExit):
        train(cfg, first)
    monkeypatch.undo()
    (killed,) = runs_of(client)
    assert killed.info.status == "KILLED"
    # An attacker with access to the tracking server retargets the unfinished run at their dir.
    evil, marker = tmp_path / "evil", tmp_path / "marker"
    evil.mkdir()
    malicious_checkpoint(evil / "checkpoint.pt", marker)
    client.set_tag(killed.info.run_id, "output_dir", str(evil))

    cfg, again = make_run(*SMALL, out="again")
    with caplog.at_level(logging.WARNING, logger="cifarzoo"):
        assert math.isfinite(train(cfg, again))
    assert not marker.exists()
    assert "does not name the run: not resumed from there" in caplog.text
    assert outcome(again.output_dir) == "finished"  # trained anew in its own dir, not in the attacker's
    assert (again.output_dir / "checkpoint.pt").exists()


# -- 2. one writer per run ---------------------------------------------------------------------

def test_a_run_dir_held_by_a_live_process_is_skipped_as_running_elsewhere(make_run, client, tmp_path, capsys, one_thread):
    cfg, ctx = make_run(*SMALL, out="held")
    with RunLock(ctx.output_dir):  # this (live) process holds it, as another job would
        assert math.isnan(train(cfg, ctx))
        assert runs_of(client) == []  # no MLflow run created, nothing trained
        assert not (ctx.output_dir / OUTCOME_FILE).exists()  # nothing written into a dir another process holds
    assert not (ctx.output_dir / LOCK_FILE).exists()
    assert math.isfinite(train(cfg, ctx))  # released: now it trains


def test_a_reinvoked_sweep_skips_a_run_still_training_elsewhere(make_run, client, monkeypatch, capsys, one_thread):
    monkeypatch.setattr(Tracker, "log_epoch", interrupt_after_epoch(1))
    cfg, first = make_run(*SMALL, out="first")
    with pytest.raises(SystemExit):
        train(cfg, first)
    monkeypatch.undo()
    with RunLock(first.output_dir):  # the first job is (still) training there
        cfg, planned = make_run(*SMALL, "+plan=true", out="plan/0")
        train(cfg, planned)
        assert "running elsewhere" in capsys.readouterr().out
        cfg, again = make_run(*SMALL, out="sweep/0")
        assert math.isnan(train(cfg, again))
        assert outcome(again.output_dir) == "skipped-running"
    (run,) = runs_of(client)
    assert run.info.status == "KILLED" and steps(client, run.info.run_id) == [1]
    line, counts = summarize(again.output_dir.parent)
    assert "1 running elsewhere" in line and failed_jobs(counts) == 0


def test_a_stale_lock_of_a_dead_process_is_taken_over(make_run, client, one_thread):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    cfg, ctx = make_run(*SMALL, out="stale")
    ctx.output_dir.mkdir(parents=True)
    (ctx.output_dir / LOCK_FILE).write_text(json.dumps({"host": os.uname().nodename, "pid": dead.pid}))
    (ctx.output_dir / ".checkpoint.pt.tmp4242").write_bytes(b"half a checkpoint")  # a killed save's leftover
    assert math.isfinite(train(cfg, ctx))
    assert not (ctx.output_dir / LOCK_FILE).exists()  # released at the end
    assert not list(ctx.output_dir.glob(".checkpoint*.tmp*"))


@pytest.mark.parametrize("record", [
    {}, {"pid": "abc", "host": "HERE"}, {"host": "HERE"}, [1, 2], "own-pid", "pid-1-reused", "foreign-start-time"])
def test_a_lock_without_a_live_holder_is_stale_in_one_line(tmp_path, record):
    """Malformed files, this very process (not holding it), and a live pid whose start time is not
    the recorded one (a reused pid, or pid 1 named by hand) hold nothing."""
    from cifarzoo.runlock import holder, start_time

    here = os.uname().nodename
    records = {"own-pid": {"host": here, "pid": os.getpid(), "start_time": start_time(os.getpid())},
               "pid-1-reused": {"host": here, "pid": 1},
               "foreign-start-time": {"host": here, "pid": os.getppid(), "start_time": "12"}}
    if isinstance(record, str):
        record = records[record]
    elif isinstance(record, dict) and "host" in record:
        record = {**record, "host": here}
    (tmp_path / LOCK_FILE).write_text(json.dumps(record))
    assert holder(tmp_path) is None
    with RunLock(tmp_path):  # taken over
        assert holder(tmp_path)["pid"] == os.getpid()  # held by this process now: live
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_lock_of_a_live_process_with_its_start_time_is_held(tmp_path):
    from cifarzoo.runlock import RunLocked, holder, start_time

    parent = os.getppid()
    (tmp_path / LOCK_FILE).write_text(json.dumps({"host": os.uname().nodename, "pid": parent,
                                                  "start_time": start_time(parent)}))
    assert holder(tmp_path)["pid"] == parent
    with pytest.raises(RunLocked) as error:
        RunLock(tmp_path).acquire()
    assert "\n" not in str(error.value) and f"pid {parent}" in str(error.value)


@pytest.mark.slow
def test_two_processes_started_together_in_different_dirs_train_the_configuration_once(tmp_path):
    """The claim of (config_hash, seed) in the store's folder, taken before training."""
    from conftest import REPO_DIR
    from mlflow.tracking import MlflowClient

    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "CIFARZOO_OUTPUTS": str(tmp_path / "outputs"), "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, str(REPO_DIR / "run.py"), "data=fake", "data.train_size=1024", "data.test_size=64",
            "model.depth=8", "train.epochs=2", "train.batch_size=64", "train.device=cpu"]
    procs = [subprocess.Popen([*args, f"hydra.run.dir={tmp_path / name}"], cwd=REPO_DIR, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for name in ("a", "b")]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name(DEFAULT_EXPERIMENT).experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED", outputs
    log = "\n".join(outputs)
    assert "running elsewhere" in log or "FINISHED before as MLflow run" in log


def test_a_sweep_job_whose_configuration_is_claimed_elsewhere_is_skipped_naming_that_dir(make_run, client, tmp_path):
    from omegaconf import OmegaConf

    from cifarzoo import distill
    from cifarzoo.config import config_hash
    from cifarzoo.runlock import start_time
    from cifarzoo.task import RunContext

    cfg, ctx = make_run(*SMALL, out="sweep/0")
    ctx = RunContext(ctx.output_dir, ctx.choices, ctx.overrides, sweep=str(ctx.output_dir.parent))
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["train"]["world_size"] = 1
    chash = config_hash(distill.identity(resolved, None))  # as the job computes it
    claim = tmp_path / "claims" / "test" / f"{chash}-seed0.lock"  # beside the test's sqlite store
    claim.parent.mkdir(parents=True)
    parent = os.getppid()  # a live process of this host: the job that claimed it
    claim.write_text(json.dumps({"host": os.uname().nodename, "pid": parent, "start_time": start_time(parent),
                                 "run_dir": str(tmp_path / "other")}))
    assert math.isnan(train(cfg, ctx))
    assert runs_of(client) == []  # nothing trained
    detail = json.loads((ctx.output_dir / OUTCOME_FILE).read_text())
    assert detail["outcome"] == "skipped-running" and str(tmp_path / "other") in detail["detail"]


@pytest.mark.slow
def test_two_processes_started_on_one_run_dir_train_it_once(tmp_path):
    from conftest import REPO_DIR
    from mlflow.tracking import MlflowClient

    run_dir = tmp_path / "run"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "CIFARZOO_OUTPUTS": str(tmp_path / "outputs"), "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, str(REPO_DIR / "run.py"), "data=fake", "data.train_size=1024", "data.test_size=64",
            "model.depth=8", "train.epochs=2", "train.batch_size=64", "train.device=cpu", f"hydra.run.dir={run_dir}"]
    procs = [subprocess.Popen(args, cwd=REPO_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name(DEFAULT_EXPERIMENT).experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert steps(client, runs[0].info.run_id) == [1, 2]  # each epoch logged once
    log = "\n".join(outputs)
    assert "running elsewhere" in log or "FINISHED before in this dir" in log


# -- 3. corrupt or truncated checkpoints ---------------------------------------------------

def test_a_truncated_checkpoint_falls_back_to_the_previous_one_and_logs_no_epoch_twice(
        make_run, client, monkeypatch, caplog, one_thread):
    cfg, straight = make_run(*SMALL, "train.epochs=3", "tracking.experiment=straight", out="straight")
    expected = train(cfg, straight)

    monkeypatch.setattr(Trainer, "save", stop_after_epoch(2))
    cfg, ctx = make_run(*SMALL, "train.epochs=3", out="run")
    with pytest.raises(SystemExit):
        train(cfg, ctx)
    monkeypatch.undo()
    current = ctx.output_dir / "checkpoint.pt"
    assert checkpoint.read(ctx.output_dir / "checkpoint.prev.pt")["epoch"] == 1
    current.write_bytes(current.read_bytes()[:1000])  # a crash mid-copy, a bad sector, ...

    with caplog.at_level(logging.WARNING, logger="cifarzoo"):
        assert train(cfg, ctx) == expected  # replays epoch 2 from the epoch-1 checkpoint, bit for bit
    assert "unreadable checkpoint" in caplog.text and "resuming from the previous checkpoint" in caplog.text
    (run,) = runs_of(client)
    assert run.info.status == "FINISHED" and steps(client, run.info.run_id) == [1, 2, 3]


def test_flipped_bytes_inside_a_tensor_are_caught_by_the_checksum_and_the_previous_checkpoint_is_used(
        tmp_path, caplog):
    path, weights = tmp_path / "checkpoint.pt", torch.arange(4096, dtype=torch.float32)
    checkpoint.save_atomic({"model": {"w": weights}, "epoch": 1}, path)
    checkpoint.save_atomic({"model": {"w": weights + 1}, "epoch": 2}, path)
    data = bytearray(path.read_bytes())
    start = data.find((weights + 1).numpy().tobytes()[:256])
    assert start > 0
    for i in range(start + 4000, start + 4064):  # 64 bytes of bit rot inside the weight tensor
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    assert torch.load(path, weights_only=True)["epoch"] == 2  # torch's zip reader notices nothing

    with caplog.at_level(logging.WARNING, logger="cifarzoo"):
        state = checkpoint.load(path)
    assert state["epoch"] == 1 and torch.equal(state["model"]["w"], weights)
    (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "sha256" in warning.getMessage() and "checkpoint.prev.pt" in warning.getMessage()
    with pytest.raises(CheckpointError) as error:
        checkpoint.read(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_a_checkpoint_error_line_says_what_torch_refused_without_its_half_sentences(tmp_path):
    malicious_checkpoint(tmp_path / "checkpoint.pt", tmp_path / "marker")  # torch's refusal runs on for lines
    with pytest.raises(CheckpointError) as error:
        checkpoint.read(tmp_path / "checkpoint.pt")
    reason = str(error.value).split("unreadable checkpoint (", 1)[1]
    assert "\x1b" not in reason and "two options" not in reason, reason  # not half of torch's how-to
    assert "plain data" in reason and len(reason) <= 202, reason


def test_no_readable_checkpoint_is_one_line_with_the_way_out_and_restart_starts_over(
        make_run, client, monkeypatch, capsys, one_thread):
    monkeypatch.setattr(Trainer, "save", stop_after_epoch(2))
    cfg, ctx = make_run(*SMALL, "train.epochs=3", out="run")
    with pytest.raises(SystemExit):
        train(cfg, ctx)
    monkeypatch.undo()
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (ctx.output_dir / name).write_bytes(b"garbage")
    with pytest.raises(CheckpointError) as error:
        train(cfg, ctx)
    message = str(error.value)
    assert "\n" not in message and str(ctx.output_dir / "checkpoint.pt") in message and "+restart=true" in message
    assert outcome(ctx.output_dir) == "failed"

    cfg, again = make_run(*SMALL, "train.epochs=3", "+restart=true", out="run")
    assert math.isfinite(train(cfg, again))
    statuses = sorted((r.info.status, r.data.tags.get("failure_reason", "")) for r in runs_of(client))
    assert statuses == [("FAILED", "started over with +restart=true"), ("FINISHED", "")]
    assert (ctx.output_dir / "checkpoint.pt.discarded").exists()


def test_a_finished_runs_result_is_never_downgraded_by_a_broken_checkpoint(make_run, client, one_thread):
    cfg, ctx = make_run(*SMALL, "train.epochs=1", out="run")
    error = train(cfg, ctx)
    (ctx.output_dir / "checkpoint.pt").write_bytes(b"garbage")
    (ctx.output_dir / "checkpoint.prev.pt").unlink(missing_ok=True)
    assert train(cfg, ctx) == error  # skipped: FINISHED before in this dir
    assert outcome(ctx.output_dir) == "finished"  # the dir's record stays
    (run,) = runs_of(client)
    assert run.info.status == "FINISHED"


# -- 3b. a job that does not train in a dir leaves it as it found it ---------------------------

def as_hydra_would(directory: Path, overrides: str) -> None:
    """What Hydra does in a job's dir before the task starts: its files, and the log opened."""
    (directory / ".hydra").mkdir(parents=True, exist_ok=True)
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (directory / ".hydra" / name).write_text(f"- {overrides}\n")
    (directory / "run.log").touch()


def contents(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_a_plan_or_a_skip_of_the_run_a_dir_holds_writes_nothing_there(make_run, capsys, caplog, one_thread):
    """Hydra has written the new job's files into the dir before the task runs; they go back to
    the files of the run the dir holds, and no outcome or log line of the new job stays."""
    caplog.set_level(logging.INFO, logger="cifarzoo")
    cfg, ctx = make_run(*SMALL, "train.epochs=1", out="run")
    as_hydra_would(ctx.output_dir, "optim.lr=0.1")
    (ctx.output_dir / "run.log").write_text("the run's log\n")
    train(cfg, ctx)
    before = contents(ctx.output_dir)
    assert before[".hydra/owner/overrides.yaml"] == b"- optim.lr=0.1\n" and before["run.log"] == b"the run's log\n"
    capsys.readouterr()
    jobs = [(("optim.lr=0.3", "+plan=true"), "plan: invalid", "hydra.run.dir: holds a checkpoint of a different configuration"),
            (("+plan=true",), "plan: skip", "FINISHED before in this dir"),
            ((), "", "")]  # a skip
    for extra, plan, reason in jobs:
        cfg, ctx = make_run(*SMALL, "train.epochs=1", *extra, out="run")
        as_hydra_would(ctx.output_dir, " ".join(extra))
        job_log = logging.FileHandler(ctx.output_dir / "run.log")  # the job's lines, as Hydra's handler writes them
        logging.getLogger().addHandler(job_log)
        try:
            if plan == "plan: invalid":  # a single run's plan with an invalid job exits 2, as a multirun's
                with pytest.raises(SystemExit) as exit_:
                    train(cfg, ctx)
                assert exit_.value.code == 2
            else:
                train(cfg, ctx)
        finally:
            logging.getLogger().removeHandler(job_log)
            job_log.close()
        line = capsys.readouterr().out
        assert line.startswith(plan) and reason in line
        assert contents(ctx.output_dir) == before


def test_a_refused_single_runs_fresh_dir_goes_and_a_dir_with_anything_else_stays(tmp_path, monkeypatch):
    from cifarzoo.jobdir import FoundDir

    monkeypatch.setenv("CIFARZOO_OUTPUTS", str(tmp_path / "outputs"))
    fresh = tmp_path / "outputs" / "runs" / "2026-01-01" / "12-00-00"
    as_hydra_would(fresh, "model.depth=21")
    found = FoundDir.look(fresh)
    write_outcome(fresh, "failed", "model.depth: ...")
    (fresh / "run.log").write_text("the refused job's lines\n")
    found.leave(single_run=True)
    assert not (tmp_path / "outputs" / "runs" / "2026-01-01").exists() and (tmp_path / "outputs" / "runs").is_dir()

    kept = tmp_path / "mine"
    (kept / "notes.txt").parent.mkdir()
    (kept / "notes.txt").write_text("not Hydra's")
    as_hydra_would(kept, "model.depth=21")
    found = FoundDir.look(kept)
    write_outcome(kept, "failed", "model.depth: ...")
    (kept / "run.log").write_text("the refused job's lines\n")
    found.leave(single_run=True)
    assert sorted(contents(kept)) == [".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", "notes.txt",
                                      "run.log"]
    assert (kept / "run.log").read_text() == ""  # empty, as found

    (kept / "checkpoint.pt").write_bytes(b"a run's")  # a job dir of a sweep, or one that trained meanwhile: never removed
    for single_run in (False, True):
        FoundDir(kept, fresh=True).leave(single_run)
        assert (kept / "checkpoint.pt").exists()


# -- 4. a full disk ------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A real 192 KiB filesystem (tmpfs; needs root, as CI has)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192k", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_fails_the_run_in_one_line_and_leaves_no_temp_file(make_run, client, small_disk, one_thread):
    cfg, ctx = make_run(*SMALL, "train.epochs=1", out="unused")
    ctx.output_dir = small_disk / "run"  # the run dir on the small disk; the MLflow store elsewhere
    with pytest.raises(CheckpointError) as error:
        train(cfg, ctx)
    message = str(error.value)
    assert message == f"cannot write checkpoint {ctx.output_dir / 'checkpoint.pt'}: [Errno 28] No space left on device"
    assert not list(ctx.output_dir.glob(".checkpoint*"))
    (run,) = runs_of(client)
    assert run.info.status == "FAILED" and run.data.tags["failure_reason"] == message
    assert outcome(ctx.output_dir) == "failed"


def test_outcomes_are_written_atomically_and_the_summary_counts_unreadable_ones(small_disk, tmp_path):
    write_outcome(small_disk / "0", "finished")
    with open(small_disk / "fill", "wb", buffering=0) as f:  # fill the disk to the last byte
        with pytest.raises(OSError):
            while True:
                f.write(b"x" * 512)
    write_outcome(small_disk / "0", "failed")  # cannot be written: the old outcome stays whole
    assert outcome(small_disk / "0") == "finished"
    assert not list((small_disk / "0").glob(".outcome*"))

    sweep = tmp_path / "sweep"
    write_outcome(sweep / "0", "finished")
    (sweep / "1").mkdir(parents=True)
    (sweep / "1" / OUTCOME_FILE).write_text("")  # left 0-byte by a writer that died
    line, counts = summarize(sweep)
    assert line == "cifarzoo sweep: 1 finished (0 resumed), 0 failed, 0 skipped, 1 without a readable outcome (killed, or the disk was full)"
    assert failed_jobs(counts) == 1  # the sweep exits non-zero


# -- 6. divergence seen first in the test loss -----------------------------------------------

def test_a_non_finite_test_loss_marks_the_run_diverged(make_run, client, monkeypatch, one_thread):
    evaluate = Trainer.evaluate

    def overflowing_test_logits(self):
        loss, error = evaluate(self)
        return math.nan, error  # weights huge but finite: the training loss is fine, test logits overflow

    monkeypatch.setattr(Trainer, "evaluate", overflowing_test_logits)
    cfg, ctx = make_run(*SMALL, "train.epochs=3")
    with pytest.raises(Diverged):
        train(cfg, ctx)
    (run,) = runs_of(client)
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"] == "diverged" and run.data.tags["diverged_epoch"] == "1"
    assert steps(client, run.info.run_id) == [1]  # stopped at once, not an epoch later


# -- a resume whose MLflow run is gone --------------------------------------------------------

def all_runs(client, experiment="test"):
    from mlflow.entities import ViewType

    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL)


def test_a_resume_whose_mlflow_run_was_deleted_is_refused_in_one_line_not_a_partial_new_run(
        make_run, client, monkeypatch, one_thread):
    monkeypatch.setattr(Trainer, "save", stop_after_epoch(1))
    cfg, ctx = make_run(*SMALL, "train.epochs=2", out="run")
    with pytest.raises(SystemExit):
        train(cfg, ctx)
    monkeypatch.undo()
    (run,) = runs_of(client)
    client.delete_run(run.info.run_id)
    with pytest.raises(ConfigError) as error:
        train(cfg, ctx)
    message = str(error.value)
    assert "\n" not in message and "+restart=true" in message and run.info.run_id in message
    assert len(all_runs(client)) == 1  # no new run holding epoch 2 alone

    cfg, again = make_run(*SMALL, "train.epochs=2", "+restart=true", out="run")
    assert math.isfinite(train(cfg, again))
    assert [r.info.status for r in runs_of(client)] == ["FINISHED"]


def test_a_resume_against_another_store_names_the_recorded_tracking_uri(make_run, tmp_path, monkeypatch, one_thread):
    monkeypatch.setattr(Trainer, "save", stop_after_epoch(1))
    cfg, ctx = make_run(*SMALL, "train.epochs=2", out="run")
    with pytest.raises(SystemExit):
        train(cfg, ctx)
    monkeypatch.undo()
    other = f"sqlite:///{tmp_path / 'other.db'}"
    cfg, ctx = make_run(*SMALL, "train.epochs=2", f"tracking.uri={other}", out="run")
    with pytest.raises(ConfigError) as error:
        train(cfg, ctx)
    message = str(error.value)
    assert message.startswith("tracking.uri:") and "\n" not in message
    assert f"tracking.uri={cfg.tracking.uri}" not in message and "tracking.uri=sqlite:///" in message
    assert str(tmp_path / "mlflow.db") in message  # the store that holds the run



# -- what a sweep trusts in the store ----------------------------------------------------------

def test_a_forged_finished_run_is_not_trusted_and_a_skip_names_the_run_dir_it_trusts(
        make_run, client, tmp_path, caplog, one_thread):
    from mlflow.entities import Metric

    from cifarzoo.tracking import log_params

    cfg, first = make_run(*SMALL, "train.epochs=1", out="first")
    error = train(cfg, first)
    (real,) = runs_of(client)
    # Anyone who can write the store: a FINISHED run with the same config_hash and seed, a perfect
    # result, and an output_dir tag naming a real dir that does not hold it.
    (tmp_path / "elsewhere").mkdir()
    forged = client.create_run(real.info.experiment_id, tags={**real.data.tags, "output_dir": str(tmp_path / "elsewhere")})
    log_params(client, forged.info.run_id, real.data.params)
    client.log_batch(forged.info.run_id, metrics=[Metric("test_error", 0.0, 0, 1)])
    client.set_terminated(forged.info.run_id, "FINISHED")

    cfg, again = make_run(*SMALL, "train.epochs=1", out="sweep/0")
    with caplog.at_level(logging.WARNING, logger="cifarzoo"):
        assert train(cfg, again) == error  # the real run's result, not the forged 0.0
    assert "not trusted" in caplog.text and forged.info.run_id in caplog.text
    detail = json.loads((again.output_dir / OUTCOME_FILE).read_text())
    assert detail["outcome"] == "skipped" and real.info.run_id in detail["detail"]
    assert f"in {first.output_dir}" in detail["detail"]  # the run dir the skip trusts


def test_a_finished_run_with_no_run_dir_is_shown_as_created_outside_cifarzoo(client, tracking_uri, tmp_path):
    from analysis.runs import load_runs, unvouched
    from cifarzoo.sweep import decide

    experiment = client.create_experiment("outside")
    run = client.create_run(experiment, tags={"config_hash": "abc"})
    client.log_param(run.info.run_id, "seed", "0")
    client.set_terminated(run.info.run_id, "FINISHED")
    decision = decide(client, "outside", "abc", 0, rerun_failed=False)
    assert decision.action == "skip" and "created outside cifarzoo" in decision.reason
    (tmp_path / "dir").mkdir()  # a run naming a dir here that does not record it
    forged = client.create_run(experiment, tags={"config_hash": "abc", "output_dir": str(tmp_path / "dir")})
    note = unvouched(load_runs(tracking_uri, ["outside"]))  # what `python -m analysis` prints on stderr
    assert "1 with no run dir, created outside cifarzoo (" + run.info.run_id in note
    assert "1 whose run dir does not record them (" + forged.info.run_id in note and "\n" not in note


@pytest.mark.slow
def test_a_disk_that_takes_no_bytes_at_start_is_one_line_not_a_hydra_traceback(tmp_path):
    """RLIMIT_FSIZE=0 (Python ignores SIGXFSZ): every write fails, as on a full disk, starting with
    Hydra's own .hydra/config.yaml before the task runs."""
    import resource

    from conftest import QUICK, run_cli

    def no_bytes() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))

    done = run_cli([*QUICK, f"hydra.run.dir={tmp_path / 'run'}"],
                   {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}, timeout=300, preexec_fn=no_bytes)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cifarzoo: error: cannot write the run's files"), done.stderr[-2000:]
