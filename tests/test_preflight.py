"""Pre-flight validation: a multirun (any launcher) or `sweeps run` with a job that would not start
stops with one line per bad job before anything trains or is submitted; `+plan=true` reports it."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO_DIR, run_cli

from cifarzoo.preflight import invalid_jobs, sweep_jobs
from sweeps.cli import main as sweeps_main

QUICK = ["data=fake", "train.device=cpu", "train.epochs=1", "data.train_size=128", "data.test_size=64"]
BAD = "cifarzoo: error: job model.depth=21 "
DEPTH_RULE = "model.depth: ResNet-preact with basic blocks needs depth = 6n+2, n >= 1 (got 21)"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "CIFARZOO_OUTPUTS": str(tmp_path / "outputs"),
            "OMP_NUM_THREADS": "1"}


def test_sweep_jobs_are_hydras_basic_sweep():
    jobs = sweep_jobs(["model.depth=8,20", "seed=1,2", "data=fake"], {"optim.lr": "0.1,0.2"})
    assert len(jobs) == 8
    assert jobs[0] == ["optim.lr=0.1", "model.depth=8", "seed=1", "data=fake"]


def test_invalid_jobs_names_each_bad_configuration_once():
    from hydra import initialize_config_dir

    jobs = sweep_jobs(["model.depth=8,21", "seed=1,2", "+experiment_typo=1", "data=fake"])
    with initialize_config_dir(config_dir=str(REPO_DIR / "conf"), version_base="1.3"):
        invalid = invalid_jobs(jobs)
    assert [job for job, _ in invalid] == [["model.depth=8", "seed=1", "+experiment_typo=1", "data=fake"],
                                           ["model.depth=21", "seed=1", "+experiment_typo=1", "data=fake"]]
    assert all("\n" not in error for _, error in invalid)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=local_parallel"], ["hydra/launcher=slurm"]],
                         ids=["local", "joblib", "slurm"])
def test_multirun_with_a_bad_job_trains_and_submits_nothing(env, tmp_path, launcher):
    """Today's failure: job 0 (depth 8) trains, then depth 21 fails and the rest is abandoned."""
    result = run_cli(["-m", *launcher, "model.depth=8,21,14", *QUICK], env, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("cifarzoo: error:")]
    assert len(lines) == 2 and lines[0].startswith(BAD) and lines[0].endswith(DEPTH_RULE), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "epoch 1/" not in result.stdout + result.stderr
    assert not (tmp_path / "outputs").exists()  # no job dir, no .submitit folder
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_plan_reports_invalid_jobs(env, tmp_path):
    result = run_cli(["-m", "model.depth=8,21", *QUICK, "+plan=true"], env, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    plans = [line for line in result.stdout.splitlines() if line.startswith("plan:")]
    assert plans[0].startswith("plan: run    model.depth=8 ")
    assert plans[1].startswith("plan: invalid model.depth=21 ") and plans[1].endswith(DEPTH_RULE)
    assert "1 would run, 0 would resume, 0 would skip, 1 invalid" in result.stdout
    assert not (tmp_path / "outputs").exists()  # issue 22: a plan wrote job dirs (.hydra/, logs, outcome.json)


@pytest.mark.slow
def test_a_rerun_of_a_finished_sweep_launches_nothing_and_makes_no_sweep_dir(env, tmp_path):
    """Issue 22: every rerun of a finished sweep added a new sweep dir of "skipped" stubs."""
    sweep = ["-m", "model.depth=8", "seed=1,2", *QUICK]
    first = run_cli(sweep, env, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    made = sorted((tmp_path / "outputs" / "multirun").glob("*/*"))
    assert len(made) == 1
    again = run_cli(sweep, env, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    skipped = [line for line in again.stdout.splitlines() if line.startswith("skipped: ")]
    assert len(skipped) == 2 and all("FINISHED before as MLflow run " in line for line in skipped)
    assert "2 skipped; every job was done before: nothing was launched and no sweep dir was made" in again.stdout
    assert sorted((tmp_path / "outputs" / "multirun").glob("*/*")) == made


def test_sweeps_run_checks_the_study_first(tmp_path, capsys, monkeypatch):
    """No run.py is started for a study with a bad job (with the extra overrides of the command)."""
    import subprocess

    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: started.append(a))
    path = tmp_path / "s.yaml"
    path.write_text("title: t\nsource: s\nexperiment: e\noverrides: [data=fake]\ngrids:\n  - ['model.depth=8,20']\n")
    assert sweeps_main(["run", str(path), "model.depth=21", "hydra/launcher=slurm"]) == 2
    err = capsys.readouterr().err
    assert "sweeps: error: data=fake model.depth=8 model.depth=21 tracking.experiment=e: model.depth:" in err
    assert "nothing was run" in err and started == []


def test_a_sweep_without_its_data_stops_before_job_0(env, tmp_path):
    """Issue 22: with no CIFAR-10 on disk, job 0 started and failed, then the same command was
    printed as the way to resume. Each distinct dataset is looked at once, before any dir exists."""
    result = run_cli(["-m", "model.depth=8,14", "seed=1,2", "data=cifar10", f"data.root={tmp_path / 'no-data'}",
                      "train.epochs=1"], env, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("cifarzoo: error:")]
    assert errors[0].startswith("cifarzoo: error: job model.depth=8 seed=1 ") and "data.root: no CIFAR-10 files found" in errors[0]
    assert len(errors) == 2 and errors[1] == "cifarzoo: error: 1 invalid job(s) of 4; nothing was run"
    assert "to resume" not in result.stdout + result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "mlflow.db").exists()


def test_launcher_settings_are_checked_before_any_dir(tmp_path, monkeypatch):
    """Issue 22: n_jobs=0 was a 43-line joblib traceback, a missing sbatch a 40-line submitit one."""
    from omegaconf import OmegaConf

    from cifarzoo.errors import ConfigError
    from cifarzoo.preflight import check_launcher

    joblib = OmegaConf.create({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"})
    for n_jobs in (0, -1, "2"):
        joblib.n_jobs = n_jobs
        with pytest.raises(ConfigError, match=r"^hydra.launcher.n_jobs: must be a positive int"):
            check_launcher(joblib)
    joblib.n_jobs = 2
    check_launcher(joblib)
    slurm = OmegaConf.create({"_target_": "hydra_plugins.cifarzoo_slurm.launcher.SlurmLauncher", "partition": "gpu-a10"})
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, srun, sinfo
    with pytest.raises(ConfigError, match=r"^hydra/launcher: slurm needs SLURM's sbatch on PATH"):
        check_launcher(slurm)
    for tool, script in (("sbatch", ""), ("srun", ""), ("sinfo", "echo 'debug*'; echo gpu-a100")):
        (tmp_path / tool).write_text(f"#!/bin/sh\n{script}\n")
        (tmp_path / tool).chmod(0o755)
    with pytest.raises(ConfigError, match=r"^hydra.launcher.partition: not a partition of this cluster \(did you mean "
                                          r"gpu-a100\?\); sinfo lists debug, gpu-a100 \(got 'gpu-a10'\)"):
        check_launcher(slurm)
    slurm.partition = "debug"
    check_launcher(slurm)
