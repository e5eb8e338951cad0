"""run.py's exit codes (cifarzoo.exits): 0 finished, 1 failed, 2 bad configuration (Hydra's own
errors too, in one line), 3 diverged, 128+n signal; a multirun's from its jobs' outcomes."""

from __future__ import annotations

import json
import logging
import os
import runpy
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
    (["nokey=1"], "cifarzoo: error: overrides: Could not override 'nokey'. To append to your config use +nokey=1"),
    (["-m", "model=nope", "seed=1,2"], "cifarzoo: error: overrides: In 'config': Could not find 'model/nope'"),
], ids=["experiment", "group-option", "syntax", "unknown-key", "multirun"])
def test_hydras_own_config_errors_are_one_line_and_exit_2(run_py, tmp_path, args, message):
    code, out, err = run_py(*args)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith(message), err
    assert "HYDRA_FULL_ERROR" not in err and "Traceback" not in err
    assert not (tmp_path / "outputs").exists()


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
