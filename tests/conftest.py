"""Shared fixtures: compose the real Hydra config (as run.py does) and read MLflow stores."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, open_dict

import cifarzoo  # noqa: F401  (registers the resolvers the config uses)
from cifarzoo.paths import REPO_DIR
from cifarzoo.task import RunContext

CONF_DIR = REPO_DIR / "conf"
# Runs here (and the run.py processes tests start, which inherit it) log no MLflow model: ~3 s per
# process; tests/test_evaluate.py turns it on (tracking.log_model=true) and tests it.
os.environ.setdefault("CIFARZOO_LOG_MODEL", "false")
SHARED_DATA = Path(os.environ.get("CIFARZOO_DATA_SHARED", REPO_DIR.parent / "shared" / "data"))

# Small, fast defaults for in-process runs; each test adds its own overrides after these.
QUICK = [
    "data=fake",
    "data.train_size=256",
    "data.test_size=128",
    "train.epochs=2",
    "train.batch_size=64",
    "train.device=cpu",
]


# In-process runs of the fixtures below: their own experiment, and no system-metrics sampler (a
# thread per run, sharing the sqlite store with the run; tests/test_tracking.py switches it on).
IN_PROCESS = ["tracking.experiment=test", "tracking.system_metrics=false"]


def compose_config(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def compose_run(overrides: list[str], output_dir: Path) -> tuple[DictConfig, RunContext]:
    """The config and run context run.py would hand to the task for these overrides."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    ctx = RunContext.from_hydra_config(cfg.hydra, output_dir)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, ctx


@pytest.fixture(autouse=True)
def run_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The analysis run cache (analysis/runcache.py) of each test in a temp dir, never in ~/.cache."""
    monkeypatch.setenv("CIFARZOO_CACHE_DIR", str(tmp_path_factory.mktemp("runcache")))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one intra-op thread is faster and steadier on a shared 2-core box."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def make_cfg(tracking_uri: str) -> Callable[..., DictConfig]:
    """`make_cfg("model.depth=8", ...)`: the quick config against this test's MLflow store."""

    def _make(*overrides: str, quick: bool = True) -> DictConfig:
        base = QUICK if quick else []
        return compose_config([*base, *IN_PROCESS, f"tracking.uri={tracking_uri}", *overrides])

    return _make


@pytest.fixture
def make_run(tracking_uri: str, tmp_path: Path) -> Callable[..., tuple[DictConfig, RunContext]]:
    """`make_run("optim.lr=0.2", out="a")`: quick config + run context with its own output dir."""

    def _make(*overrides: str, out: str = "run", quick: bool = True) -> tuple[DictConfig, RunContext]:
        base = QUICK if quick else []
        args = [*base, *IN_PROCESS, f"tracking.uri={tracking_uri}", *overrides]
        return compose_run(args, tmp_path / out)

    return _make


@pytest.fixture
def client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_until_killed(cfg: DictConfig, ctx: RunContext, epoch: int = 1) -> None:
    """Train, and 'die' (SystemExit) right after the checkpoint of `epoch`: rerunning resumes there."""
    from cifarzoo.loop import Trainer
    from cifarzoo.task import train

    original_save = Trainer.save

    def save_then_die(self: Trainer) -> None:
        original_save(self)
        if self.epoch == epoch:
            raise SystemExit(f"killed after the epoch-{epoch} checkpoint")

    Trainer.save = save_then_die
    try:
        with pytest.raises(SystemExit):
            train(cfg, ctx)
    finally:
        Trainer.save = original_save


def run_cli(args: list[str], env_extra: dict[str, str], timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    """`python run.py ARGS` in a subprocess, as a user would type it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **env_extra}
    return subprocess.run(
        [sys.executable, str(REPO_DIR / "run.py"), *args],
        cwd=REPO_DIR, env=env, capture_output=True, text=True, timeout=timeout, **kw,
    )
