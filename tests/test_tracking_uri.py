"""Tracking URIs a user mistypes fail with one line before anything is created or trained."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO_DIR, free_port

from cifarzoo.errors import ConfigError
from cifarzoo.task import train
from cifarzoo.tracking import check_reachable


@pytest.mark.parametrize("uri", ["sqlit:///tmp/mlflow.db", "ftp://host/mlflow", "mlflow.db://x"])
def test_an_unknown_scheme_is_one_line(uri):
    with pytest.raises(ConfigError, match=r"^tracking.uri: unknown scheme ") as info:
        check_reachable(uri)
    assert "\n" not in str(info.value) and uri in str(info.value)


def test_sqlite_in_a_missing_folder_is_refused_and_nothing_is_created(make_run, tmp_path):
    """It used to create the folder and a new, empty store there (a typo went unnoticed)."""
    typo = tmp_path / "typo" / "dir"
    cfg, ctx = make_run(f"tracking.uri=sqlite:///{typo / 'mlflow.db'}")
    with pytest.raises(ConfigError, match=r"^tracking.uri: the folder .*/typo/dir does not exist") as info:
        train(cfg, ctx)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "typo").exists()


def test_sqlite_in_an_existing_folder_and_outputs_pass(tmp_path, monkeypatch):
    check_reachable(f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("CIFARZOO_OUTPUTS", str(tmp_path / "fresh" / "outputs"))  # cifarzoo's own: created on use
    check_reachable(f"sqlite:///{tmp_path / 'fresh' / 'outputs' / 'mlflow.db'}")
    check_reachable("postgresql+psycopg2://u@h/db")  # a database URI is not checked further here


@pytest.mark.parametrize("uri", [lambda: f"http://127.0.0.1:{free_port()}", lambda: "sqlit:///x.db"],
                         ids=["server-down", "bad-scheme"])
def test_analysis_against_an_unreachable_server_or_bad_scheme_fails_with_one_line(uri):
    """`python -m analysis table` used to retry for minutes against a server that is down, then dump a
    traceback; an unknown scheme gave a long traceback."""
    result = subprocess.run([sys.executable, "-m", "analysis", "table", "--tracking-uri", uri()], cwd=REPO_DIR,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip().startswith("analysis: error: --tracking-uri: ") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
