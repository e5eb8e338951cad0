"""`python -m cifarzoo.runs` (issue 22): run id, status, test error, run dir and the command that
evaluates or resumes each run; a missing experiment lists the store's; a missing store is refused."""

from __future__ import annotations

import argparse

import pytest

from cifarzoo.cli import CliError, take_store_words
from cifarzoo.runs import format_runs, main
from cifarzoo.task import train
from cifarzoo.tracking import sqlite_path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, float, object]:
    """One finished run in experiment `test`, in a store of its own."""
    from conftest import compose_run

    tmp = tmp_path_factory.mktemp("runs")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    cfg, ctx = compose_run(["data=fake", "data.train_size=128", "data.test_size=64", "train.device=cpu",
                            "model.depth=8", "train.epochs=1", "seed=7", "tracking.experiment=test",
                            f"tracking.uri={uri}", "tracking.system_metrics=false"], tmp / "run")
    return uri, train(cfg, ctx), ctx


def test_lists_run_id_status_error_dir_and_the_evaluate_command(trained):
    uri, error, ctx = trained
    text = format_runs(uri, "test")
    lines = text.splitlines()
    assert lines[0] == f"1 runs in experiment 'test' at {uri}"
    row = next(line for line in lines if "FINISHED" in line)
    run_id = row.split()[0]
    assert len(run_id) == 32 and f"FINISHED  {error:>12.2f}" in row and "seed=7" in row
    assert f"    dir: {ctx.output_dir}" in lines
    assert f"    evaluate: python -m cifarzoo.evaluate {ctx.output_dir}" in lines
    assert text.endswith(f"ui --backend-store-uri {uri}")


def test_a_missing_experiment_lists_the_experiments_and_exits_2(trained, capsys):
    uri, _, _ = trained
    assert main(["--tracking-uri", uri, "--experiment", "nope"]) == 2
    assert capsys.readouterr().err.strip() == "cifarzoo: error: --experiment: no experiment 'nope' " \
                                              "(experiments: Default, test)"


def test_a_missing_store_is_refused_not_created(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'typo.db'}"
    assert main([f"tracking.uri={uri}", "tracking.experiment=test"]) == 2
    assert capsys.readouterr().err.startswith(f"cifarzoo: error: --tracking-uri: no MLflow store at {tmp_path / 'typo.db'}")
    assert not sqlite_path(uri).exists()


def test_flags_and_hydra_style_words_name_the_same_store(trained, capsys):
    uri, _, _ = trained
    assert main([f"tracking.uri={uri}", "tracking.experiment=test"]) == 0
    by_words = capsys.readouterr().out
    assert main(["--tracking-uri", uri, "--experiment", "test"]) == 0
    assert capsys.readouterr().out == by_words
    with pytest.raises(CliError, match="tracking.uri: given twice"):
        take_store_words(argparse.Namespace(tracking_uri="a", experiment=None), ["tracking.uri=b"])
