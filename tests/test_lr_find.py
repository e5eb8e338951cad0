"""`python -m cifarzoo.lr_find`: the LR range test on fake data with the run's own step, its MLflow run
(real sqlite store), its absence from analysis/sweeps tables, and a later run it leaves unchanged."""

from __future__ import annotations

import contextlib
import io
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config, compose_run
from mlflow.tracking import MlflowClient

from analysis.runs import load_runs
from cifarzoo import lr_find
from cifarzoo.config import build
from cifarzoo.paths import REPO_DIR
from cifarzoo.task import train

# 128 images in batches of 32: 4 steps per epoch.
TINY = ["data=fake", "data.num_train=128", "data.num_test=32", "model.depth=8", "model.base_channels=4",
        "train.batch_size=32", "train.device=cpu", "tracking.experiment=test"]
PER_EPOCH = 4
START, END, STEPS = 1e-3, 1e4, 20  # the loss diverges long before 1e4, several epochs in


@dataclass
class Session:
    uri: str
    out: Path
    printed: str
    plain: float  # test error of a run before the range test, in another experiment
    after: float  # ... and of the same run after it, in the range test's experiment
    client: MlflowClient


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    """A normal run, then the range test logged into the store, then the same normal run again."""
    tmp = tmp_path_factory.mktemp("lr_find")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = [*TINY, f"tracking.uri={uri}", "train.epochs=1"]
        plain = train(*compose_run([*run, "tracking.experiment=plain"], tmp / "plain"))
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            code = lr_find.main([*TINY, f"tracking.uri={uri}", "--start", str(START), "--end", str(END),
                                 "--steps", str(STEPS), "--out", str(tmp / "lr_find.png")])
        assert code == 0
        after = train(*compose_run(run, tmp / "after"))
    finally:
        torch.set_num_threads(threads)
    return Session(uri, tmp / "lr_find.png", printed.getvalue(), plain, after, MlflowClient(tracking_uri=uri))


def lr_find_runs(session: Session):
    exp = session.client.get_experiment_by_name("test")
    return session.client.search_runs([exp.experiment_id], filter_string="tags.kind = 'lr_find'")


def test_it_stops_on_divergence_and_suggests_an_lr_inside_the_range(session):
    lines = session.printed.splitlines()
    assert "diverged" in lines[0] and "eager step" in lines[0]
    taken = int(lines[0].split("stopped at step ")[1].split("/")[0])
    assert PER_EPOCH < taken < STEPS  # cycled through the data, then stopped early
    (suggested,) = [float(line.split(": ")[1]) for line in lines if line.startswith("suggested lr: ")]
    (min_loss,) = [float(line.split(": ")[1]) for line in lines if line.startswith("min-loss/10 lr: ")]
    assert START <= suggested <= END and START / 10 <= min_loss <= END / 10
    head = session.out.read_bytes()[:8]
    assert head == b"\x89PNG\r\n\x1a\n" and session.out.stat().st_size > 10_000


def test_the_mlflow_run_holds_the_curve_the_suggestion_and_the_plot(session):
    (run,) = lr_find_runs(session)
    assert run.info.status == "FINISHED" and run.data.tags["kind"] == "lr_find"
    assert "config_hash" not in run.data.tags and len(run.data.tags["lr_find.config_hash"]) == 16
    p = run.data.params
    assert (p["lr_find.start"], p["lr_find.end"], p["lr_find.steps"]) == (str(START), str(END), str(STEPS))
    assert p["model.depth"] == "8" and p["model"] == "resnet_preact" and p["data"] == "fake" and p["seed"] == "0"
    history = session.client.get_metric_history(run.info.run_id, "smoothed_loss")
    lrs = [m.value for m in sorted(session.client.get_metric_history(run.info.run_id, "lr"), key=lambda m: m.step)]
    assert len(history) == len(lrs) > PER_EPOCH and lrs[0] == pytest.approx(START)
    ratio = (END / START) ** (1 / (STEPS - 1))
    assert np.allclose(np.diff(np.log(lrs)), math.log(ratio))
    printed = float(session.printed.split("suggested lr: ")[1].split()[0])
    assert run.data.metrics["suggested_lr"] == pytest.approx(printed, rel=5e-3)
    assert "lr_find.png" in [a.path for a in session.client.list_artifacts(run.info.run_id)]


def test_analysis_and_sweeps_tables_leave_it_out(session, capsys):
    from sweeps.cli import main as sweeps_main

    runs = load_runs(session.uri, ["test"])
    assert len(runs) == 1 and "tags.kind" not in runs.columns and "metrics.suggested_lr" not in runs.columns
    assert sweeps_main(["table", "h001_mnist", f"tracking.uri={session.uri}", "tracking.experiment=test"]) == 0
    assert "1 run of experiment 'test' matches no row" in capsys.readouterr().out  # the normal run alone


def test_a_later_run_is_unchanged_and_not_skipped_as_done(session):
    assert math.isfinite(session.after) and session.after == session.plain
    exp = session.client.get_experiment_by_name("test")
    runs = session.client.search_runs([exp.experiment_id])  # the range test and the run that trained
    assert sorted(r.data.tags.get("kind", "training") for r in runs) == ["lr_find", "training"]
    assert all(r.info.status == "FINISHED" for r in runs)


def test_more_steps_than_an_epoch_cycle_through_fresh_permutations(one_thread):
    cfg = compose_config([*TINY, "optim=adam"])
    record, run = lr_find.run_range_test(cfg, 1e-6, 1e-4, 2 * PER_EPOCH + 1)
    assert record.diverged_at is None and len(record.lrs) == 2 * PER_EPOCH + 1
    assert record.lrs[0] == pytest.approx(1e-6) and record.lrs[-1] == pytest.approx(1e-4)
    assert all(math.isfinite(x) for x in record.losses)


def test_the_graph_step_form_sweeps_the_same_lrs_as_the_eager_step(one_thread):
    records = {}
    for step in ("eager", "graph"):
        cfg = compose_config([*TINY, f"train.step={step}"])
        records[step], run = lr_find.run_range_test(cfg, 1e-3, 1.0, 6, graph_on_cpu=True)
        assert run.step.kind == step
    assert records["graph"].lrs == pytest.approx(records["eager"].lrs)
    assert records["graph"].losses == pytest.approx(records["eager"].losses, rel=1e-4)


def test_warmup_is_replaced_and_param_groups_keep_their_ratio():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    cfg = compose_config(["optim=sam", "optim.no_weight_decay_on_bn=true", "sched.warmup=linear", "sched.warmup_epochs=1"])
    optimizer = build(cfg.optim).build(model, 128)
    build(cfg.sched).build(optimizer, 10, 5)  # the run's schedule: the first step at 1e-3 x lr
    optimizer.base.param_groups[1]["initial_lr"] *= 0.5  # a group at half the LR of group 0
    schedule = lr_find.exponential_schedule(optimizer, 1e-4, 1e-2, 3)
    x, seen = torch.randn(4, 2), []

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = model(x).square().mean()
        loss.backward()
        return loss

    for _ in range(3):
        seen.append([g["lr"] for g in optimizer.base.param_groups])  # SAM shares its base's groups
        optimizer.step(closure)
        schedule.step()
    assert np.allclose(seen, [[1e-4, 5e-5], [1e-3, 5e-4], [1e-2, 5e-3]])


def test_smoothing_is_a_bias_corrected_moving_average():
    smooth = lr_find.Smoother(0.98)
    assert smooth(2.0) == 2.0  # bias correction: the first value as it is
    assert smooth(4.0) == pytest.approx((0.98 * 0.02 * 2 + 0.02 * 4) / (1 - 0.98**2))


def test_suggestions_are_the_steepest_descent_and_the_min_loss_over_ten():
    steps = 100
    lrs = list(np.geomspace(1e-6, 1e2, steps))
    # Falls fastest at lr 1e-2, lowest at lr 1, then rises.
    smoothed = [2 - math.tanh(math.log10(lr) + 2) + 0.5 * max(0.0, math.log10(lr)) ** 2 for lr in lrs]
    record = lr_find.RangeTest(1e-6, 1e2, steps, lrs, smoothed, smoothed)
    found = lr_find.suggest(record)
    assert found.window == (10, 95)
    assert found.steepest == pytest.approx(1e-2, rel=0.2)
    assert found.min_loss_lr == pytest.approx(0.1, rel=0.3)


def test_a_curve_too_short_to_suggest_from_is_an_error():
    record = lr_find.RangeTest(1.0, 10.0, 100, [1.0], [math.inf], [math.inf], diverged_at=0)
    with pytest.raises(lr_find.LRFindError, match="diverged after 1 step"):
        lr_find.suggest(record)


@pytest.mark.parametrize(("args", "message"), [
    (["--start", "1", "--end", "0.1"], "--end: must be greater than --start 1"),
    (["--steps", "1"], "--steps: must be an int >= 2"),
    (["--out", "x.jpg"], "--out: must end in .png"),
    (["model=nope"], "overrides: "),
    (["optim.lr=-1"], "optim.lr: must be > 0"),
    (["+lr=0.1"], "lr: unknown top-level key"),
    (["--steps", "many"], "argument --steps: invalid int value"),
])
def test_bad_input_is_one_line_and_exit_2_before_training(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        code = lr_find.main([*TINY, "--no-log", "--out", str(tmp_path / "x.png"), *args])
        raise SystemExit(code)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.slow
def test_cli_prints_the_suggestion_and_writes_the_plot(tmp_path):
    out = tmp_path / "plot.png"
    done = subprocess.run(
        [sys.executable, "-m", "cifarzoo.lr_find", *TINY, "--steps", "12", "--end", "1", "--out", str(out), "--no-log"],
        cwd=REPO_DIR, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert "suggested lr: " in done.stdout and "mlflow run" not in done.stdout
    assert out.read_bytes()[:4] == b"\x89PNG"
