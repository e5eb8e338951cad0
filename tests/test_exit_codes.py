"""run.py's exit codes (cifarzoo.exits): 0 finished, 1 failed, 2 bad configuration (Hydra's own
errors too, in one line), 3 diverged, 128+n signal; a multirun's from its jobs' outcomes."""

from __future__ import annotations

import json
import logging
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import QUICK, REPO_DIR
from cifarzoo.callbacks import SweepCallbacks
from cifarzoo.sweep import write_outcome


@pytest.fixture
def run_py(monkeypatch, tmp_path, capsys):
    """`run_py(*args)`: run.py as a script in this process; returns (exit code, stdout, stderr).
    Hydra's logging setup, its global state and HYDRA_FULL_ERROR are put back afterwards."""
    from hydra.core.global_hydra import GlobalHydra

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("CIFARZOO_OUTPUTS", str(tmp_path / "outputs"))
    full_error = os.environ.get("HYDRA_FULL_ERROR")
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", [str(REPO_DIR / "run.py"), *args])
        try:
            runpy.run_path(str(REPO_DIR / "run.py"), run_name="__main__")
            code = 0  # the script ended: Python exits 0
        except SystemExit as stop:
            code = stop.code
        out, err = capsys.readouterr()
        return code, out, err

    yield run
    GlobalHydra.instance().clear()
    root.handlers[:], root.level = handlers, level
    if full_error is None:
        os.environ.pop("HYDRA_FULL_ERROR", None)
    else:
        os.environ["HYDRA_FULL_ERROR"] = full_error


@pytest.mark.parametrize(("args", "message"), [
    (["+experiment=nope"], "cifarzoo: error: overrides: In 'config': Could not find 'experiment/nope'; "
                           "Available options in 'experiment': resnet_preact20_w4_cutout, "),
    (["model=nope"], "cifarzoo: error: overrides: In 'config': Could not find 'model/nope'; Available options in 'model': "),
    (["model.depth=[8,"], "cifarzoo: error: overrides: model.depth=[8,: no viable alternative at input '[8,'"),
    (["nokey=1"], "cifarzoo: error: nokey: unknown top-level key; the + switches are +plan, +restart, +rerun_failed, +model.init"),
    (["train.epoch=3"], "cifarzoo: error: train.epoch: unknown key (did you mean train.epochs?); the + switches are "),
    (["-m", "model=nope", "seed=1,2"], "cifarzoo: error: overrides: In 'config': Could not find 'model/nope'"),
    (["-m", "data=fake", "seed=1,2", "hydra/launcher=local_parallel", "hydra.launcher.n_jobs=0"],
     "cifarzoo: error: hydra.launcher.n_jobs: must be a positive int (runs at once) (got 0)"),
], ids=["experiment", "group-option", "syntax", "unknown-key", "nested-typo", "multirun", "n_jobs"])
def test_hydras_own_config_errors_are_one_line_and_exit_2(run_py, tmp_path, args, message):
    code, out, err = run_py(*args)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith(message), err
    assert "HYDRA_FULL_ERROR" not in err and "Traceback" not in err
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["+train.epoch=3"], "cifarzoo: error: train.epoch: unknown key (did you mean train.epochs?); the + switches are "
                         "+plan, +restart, +rerun_failed, +model.init, +model.bn_weight_init (got 3)"),
    (["++train.epoch=3"], "cifarzoo: error: train.epoch: unknown key (did you mean train.epochs?)"),
    (["+trian.epochs=3"], "cifarzoo: error: trian.epochs: unknown key (did you mean train.epochs?)"),
    (["aug=cutout", "+aug.cutout.sise=3"], "cifarzoo: error: aug.cutout.sise: unknown key (did you mean aug.cutout.size?)"),
    (["+plann=true"], "cifarzoo: error: plann: unknown top-level key (did you mean plan?)"),
    (["-m", "+train.epoch=3", "seed=1,2"], "cifarzoo: error: job +train.epoch=3 seed=1 data=fake: train.epoch: "
                                           "unknown key (did you mean train.epochs?)"),
], ids=["nested", "force-add", "top", "deep", "switch", "multirun"])
def test_an_added_key_the_config_does_not_know_is_one_line(run_py, tmp_path, args, message):
    """Issue 22: `+train.epoch=3` trained the default 200 epochs, the key ignored."""
    code, out, err = run_py(*args, "data=fake")
    assert code == 2
    assert err.startswith(message) and "Traceback" not in err, err
    assert not any(p.is_file() for p in (tmp_path / "outputs").rglob("*"))  # no run dir left behind


def test_a_diverged_run_exits_3(run_py, tmp_path):
    args = [*QUICK, "data.train_size=128", "data.test_size=64", "model.depth=8", "train.epochs=1"]
    code, out, err = run_py(*args, "optim.lr=1e30", f"hydra.run.dir={tmp_path / 'diverged'}")
    assert code == 3
    assert "run diverged: non-finite training loss in epoch 1; marked FAILED" in out
    assert json.loads((tmp_path / "diverged" / "outcome.json").read_text())["outcome"] == "diverged"


def test_a_failing_run_exits_1_with_its_traceback_from_the_task_down(run_py, tmp_path, monkeypatch):
    import cifarzoo.task

    def broken_build(cfg, ranks):
        raise RuntimeError("building exploded")

    monkeypatch.setattr(cifarzoo.task, "build_run", broken_build)
    code, out, err = run_py(*QUICK, f"hydra.run.dir={tmp_path / 'run'}")
    assert code == 1
    trace = err[err.index("Traceback (most recent call last):"):].splitlines()
    assert trace[1].endswith(", in main") and "run.py" in trace[1]  # from run.py's task down, as Hydra showed it
    assert trace[-1] == "RuntimeError: building exploded"


def test_the_worst_of_several_exit_codes():
    from cifarzoo.exits import worst

    assert [worst(0, 3), worst(3, 1), worst(2, 1), worst(1, 130), worst(0, -15), worst()] == [3, 1, 2, 130, 143, 0]


def sweep_end(sweep_dir: Path, outcomes: list[str]) -> int:
    for i, outcome in enumerate(outcomes):
        write_outcome(sweep_dir / str(i), outcome)
    try:
        SweepCallbacks().on_multirun_end(config=OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}}))
    except SystemExit as stop:
        return stop.code
    return 0


@pytest.mark.parametrize(("outcomes", "code"), [
    (["finished", "resumed", "skipped", "skipped-failed"], 0),
    (["finished", "diverged"], 3),
    (["diverged", "failed"], 1),
    (["finished", "interrupted", "diverged"], 1),
    (["plan-run", "plan-invalid"], 2),
])
def test_a_multiruns_exit_code_is_its_worst_jobs(tmp_path, capsys, outcomes, code):
    assert sweep_end(tmp_path, outcomes) == code
    if "diverged" in outcomes:
        assert "1 diverged" in capsys.readouterr().out


@pytest.mark.parametrize("args", [["model=nope"], ["+train.epoch=3"], ["train.epoch=3"], ["--help"]],
                         ids=["group-option", "added-key", "unknown-key", "help"])
def test_config_mistakes_and_help_answer_without_importing_torch_or_mlflow(tmp_path, args):
    """Issue 22: a one-line typo error took 9-15 s, most of it importing torch, mlflow and pandas."""
    env = {**os.environ, "CIFARZOO_OUTPUTS": str(tmp_path / "outputs"), "PYTHONPATH": str(REPO_DIR)}
    result = subprocess.run([sys.executable, "-X", "importtime", str(REPO_DIR / "run.py"), *args],
                            capture_output=True, text=True, env=env, timeout=120)
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert result.returncode == (0 if args == ["--help"] else 2), result.stderr[-2000:]
    assert not imported & {"torch", "mlflow", "pandas", "cifarzoo.task"}
