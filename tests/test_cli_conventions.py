"""One convention across the CLIs (issue 22, docs/cli.md): the store and experiment named by flags
or by run.py's tracking.* words, overrides never taken for names, the same exit codes."""

from __future__ import annotations

import pytest

from analysis.cli import main as analysis_main
from cifarzoo.cli import flags_as_words, words_as_flags
from cifarzoo.lr_find import main as lr_find_main
from sweeps.cli import main as sweeps_main

STUDY = ("title: t\nsource: s\nexperiment: e\noverrides: [data=fake]\n"
         "grids:\n  - ['model.depth=8', 'seed=1']\n")


def test_sweeps_check_takes_an_override_after_the_study_as_an_override(tmp_path, capsys):
    """It took `model.depth=21` for a study name (after printing "ok" for the study)."""
    path = tmp_path / "tiny.yaml"
    path.write_text(STUDY)  # no `published:` block: one problem of its own
    assert sweeps_main(["check", str(path), "model.depth=21"]) == 2
    out, err = capsys.readouterr()
    assert out.splitlines()[0].endswith("1 runs  2 problems") and not err
    assert "model.depth: ResNet-preact with basic blocks needs depth = 6n+2, n >= 1 (got 21)" in out


@pytest.mark.parametrize("args", [
    ["table", "h000_mnist", "--tracking-uri", "{db}"],
    ["table", "h000_mnist", "tracking.uri={db}"],
    ["report", "--tracking-uri", "{db}", "--out", "{out}"],
])
def test_sweeps_names_the_store_by_flag_or_word(tmp_path, capsys, args):
    db = tmp_path / "missing.db"
    assert sweeps_main([a.format(db=f"sqlite:///{db}", out=tmp_path / "r.md") for a in args]) == 2
    assert capsys.readouterr().err.strip() == f"sweeps: error: tracking.uri: no MLflow store at {db}"
    assert not db.exists()


def test_analysis_takes_run_pys_tracking_words(tmp_path, capsys):
    db = tmp_path / "missing.db"
    assert analysis_main(["table", f"tracking.uri=sqlite:///{db}", "tracking.experiment=demo"]) == 2
    assert capsys.readouterr().err.strip() == f"analysis: error: --tracking-uri: no MLflow store at {db}"


def test_lr_find_takes_the_store_flags(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'no-such-dir' / 'mlflow.db'}"
    assert lr_find_main(["--tracking-uri", uri, "--experiment", "x", "data=fake", "--steps", "2"]) == 2
    assert capsys.readouterr().err.startswith(f"cifarzoo: error: tracking.uri: the folder {tmp_path / 'no-such-dir'} "
                                              "does not exist")


def test_words_and_flags_translate_both_ways():
    assert words_as_flags(["table", "tracking.uri=sqlite:///a.db", "+tracking.experiment=demo", "--rows", "x"]) == [
        "table", "--tracking-uri", "sqlite:///a.db", "--experiment", "demo", "--rows", "x"]
    assert flags_as_words("sqlite:///a.db", None) == ["tracking.uri=sqlite:///a.db"]
