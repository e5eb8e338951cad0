"""sweeps/: the seeds' studies as study files, their expansion into runs, the check and the runner."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pytest
from conftest import REPO_DIR
from mlflow.tracking import MlflowClient

from sweeps.check import check_study
from sweeps.cli import main
from sweeps.study import StudyError, expand, load, names


@pytest.mark.parametrize("name", names())
def test_every_study_composes_and_every_job_builds(name):
    """Each job of each study composed by Hydra and built (model, aug, optimizer, schedule) as a
    run would build it: a wrong key, option or value in a study file fails here."""
    study = load(name)
    assert study.jobs(), name
    assert check_study(study) == []


def test_studies_write_to_experiments_of_their_own():
    experiments = Counter(load(name).experiment for name in names())
    assert [e for e, n in experiments.items() if n > 1] == []


def test_expand_is_hydras_basic_sweep():
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = ["model=resnet_preact", "optim.lr=0.1,0.2", "model.depth=20,56,110", "aug=[cutout,mixup]"]
    ours = expand(overrides)
    (batch,) = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(overrides), None)
    assert ours == [list(job) for job in batch]
    assert len(ours) == 6 and ours[0] == ["model=resnet_preact", "optim.lr=0.1", "model.depth=20", "aug=[cutout,mixup]"]


def test_check_names_the_job_and_the_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("title: t\nsource: s\nexperiment: e\noverrides: [data=fake]\n"
                    "grids:\n  - ['model.depth=20,21', 'seed=1']\n  - ['model.nope=1']\n")
    problems = check_study(load(str(path)))
    assert len(problems) == 2
    assert problems[0].startswith("data=fake model.depth=21 seed=1") and "6n+2" in problems[0]
    assert "model.nope" in problems[1]


@pytest.mark.parametrize("text, message", [
    ("- a\n", "must be a mapping"),
    ("title: t\nsource: s\nexperiment: e\ngrids: [[seed=1]]\ncolour: red\n", r"unknown keys \['colour'\]"),
    ("source: s\nexperiment: e\ngrids: [[seed=1]]\n", "title: must be a non-empty string"),
    ("title: t\nsource: s\nexperiment: e\ngrids: []\n", "grids: must be a non-empty list"),
    ("title: t\nsource: s\nexperiment: e\noverrides: [depth]\ngrids: [[seed=1]]\n", "overrides: must be a list"),
    ("title: t\nsource: s\nexperiment: e\ngrids: [[tracking.experiment=x]]\n", "set the experiment with `experiment:`"),
    ("title: [\n", "not valid YAML"),
])
def test_malformed_study_files_fail_with_one_line(tmp_path, capsys, text, message):
    path = tmp_path / "study.yaml"
    path.write_text(text)
    with pytest.raises(StudyError, match=message):
        load(str(path))
    assert main(["show", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sweeps: error: ") and err.count("\n") == 1


def test_show_prints_the_commands_of_a_study(capsys):
    name = names()[0]
    study = load(name)
    assert main(["show", name]) == 0
    out = capsys.readouterr().out
    commands = [line for line in out.splitlines() if line.startswith("python run.py -m ")]
    assert len(commands) == len(study.grids)
    assert all(f"tracking.experiment={study.experiment}" in c for c in commands)
    assert f"# {len(study.jobs())} runs" in out


@pytest.mark.slow
def test_run_launches_every_multirun_into_the_study_experiment(tmp_path):
    """`python -m sweeps run <file>`: each grid one multirun, all in one experiment (that re-running
    skips what FINISHED is test_sweep's); `python -m sweeps table <file>` tables that experiment beside
    the file's published numbers."""
    path = tmp_path / "tiny.yaml"
    path.write_text(
        "title: tiny\nsource: test\nexperiment: tiny\n"
        "overrides: [data=fake, data.train_size=128, data.test_size=64, train.epochs=1, train.batch_size=64, "
        "train.device=cpu, model.depth=8]\n"
        "grids:\n  - ['aug=none', 'seed=1']\n  - ['aug=cutout', 'aug.cutout.size=4,8', 'seed=1']\n"
        "published:\n  rows: {aug=none: 91.5, aug.cutout.size=4: 92.5, aug.cutout.size=8: {reason: none printed}}\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "CIFARZOO_OUTPUTS": str(tmp_path / "outputs"), "OMP_NUM_THREADS": "1"}

    first = subprocess.run([sys.executable, "-m", "sweeps", "run", str(path)], cwd=REPO_DIR, env=env,
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "cifarzoo sweep: 1 finished" in first.stdout and "cifarzoo sweep: 2 finished" in first.stdout, first.stdout[-3000:]
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert sorted((r.data.params["aug"], r.data.params.get("aug.cutout.size")) for r in runs) == [
        ("cutout", "4"), ("cutout", "8"), ("none", None)]
    assert {r.info.status for r in runs} == {"FINISHED"}
    table = subprocess.run([sys.executable, "-m", "sweeps", "table", str(path)], cwd=REPO_DIR, env=env,
                           capture_output=True, text=True, timeout=120)
    assert table.returncode == 0, table.stderr[-2000:]
    rows = {cells[0]: cells[1:] for cells in ([c.strip() for c in line.split("|")[1:-1]]
                                               for line in table.stdout.splitlines()[2:] if line.startswith("|"))}
    assert sorted(rows) == ["ResNet-preact-8, Cutout 4", "ResNet-preact-8, Cutout 8", "ResNet-preact-8, no augmentation"], \
        table.stdout
    assert rows["ResNet-preact-8, no augmentation"][1] == "91.50" and rows["ResNet-preact-8, Cutout 4"][1] == "92.50"
    assert rows["ResNet-preact-8, Cutout 8"][1:4] == ["n/a", "-", "1/1"] and rows["ResNet-preact-8, Cutout 8"][8] == "no number"
    assert "rows run 3/3" in table.stdout and "n/a (ResNet-preact-8, Cutout 8): none printed" in table.stdout
