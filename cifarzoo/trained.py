"""A finished run's trained model: found by MLflow run id, run dir or checkpoint path, and rebuilt
from the run's own config and checkpoint (the teacher of `cifarzoo.distill`).

The run's MLflow record is the authority: it must be FINISHED; its `config.yaml` artifact (the
resolved config the run trained with, logged when the run opened) gives the model and data; its
`config_hash` tag and `seed` param say which trained model it is. The run dir must vouch for the
run (its `mlflow_run.json` names it), as a sweep's resume requires. Every failure is one line."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from cifarzoo import checkpoint
from cifarzoo.checkpoint import CHECKPOINT_FILE, CheckpointError
from cifarzoo.config import build, build_model
from cifarzoo.errors import ConfigError
from cifarzoo.tracking import RUN_FILE, recorded_run, sqlite_path

_RUN_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class TrainedRun:
    run_id: str
    run_dir: Path
    checkpoint: Path
    config: DictConfig  # as the run trained with it, resolved
    config_hash: str
    seed: int


def find_run(ref: object, tracking_uri: str, key: str) -> TrainedRun:
    """The finished run `ref` names: an MLflow run id in the store at `tracking_uri`, a run dir, or a
    checkpoint file in a run dir. ConfigError on `key` when it is missing, unfinished or unreadable.
    Reads no weights (pre-flight checks call it)."""
    if not isinstance(ref, str) or not ref:
        raise ConfigError(key, "must be an MLflow run id, a run dir or a checkpoint path (quote an id that "
                          "Hydra reads as a number)", ref)
    path = Path(ref).expanduser()
    if path.is_dir() or path.is_file():
        run_dir = path if path.is_dir() else path.parent
        record = recorded_run(run_dir)
        if "run_id" not in record or "tracking_uri" not in record:
            raise ConfigError(key, f"{run_dir} has no readable {RUN_FILE}: not the dir of a tracked cifarzoo run", ref)
        run_id, uri = str(record["run_id"]), str(record["tracking_uri"])
        ckpt = path if path.is_file() else run_dir / CHECKPOINT_FILE
    elif _RUN_ID.fullmatch(ref):
        run_id, uri = ref, tracking_uri
        run_dir, ckpt = None, None
    else:
        raise ConfigError(key, "is neither an existing run dir or checkpoint file nor an MLflow run id", ref)
    run = _mlflow_run(run_id, uri, key)
    if run_dir is None:
        run_dir = Path(run.data.tags.get("output_dir", ""))
        if recorded_run(run_dir).get("run_id") != run_id:
            raise ConfigError(key, f"MLflow run {run_id}'s output dir {run_dir} does not hold that run "
                              f"(its {RUN_FILE} names another, or it is gone)", ref)
        ckpt = run_dir / CHECKPOINT_FILE
    if run.info.status != "FINISHED":
        raise ConfigError(key, f"MLflow run {run_id} is {run.info.status}, not FINISHED: only a run that "
                          "finished training can be used", ref)
    if not ckpt.is_file():
        raise ConfigError(key, f"MLflow run {run_id} left no checkpoint at {ckpt}", ref)
    cfg = _trained_config(run_id, uri, key)
    return TrainedRun(run_id, run_dir, ckpt, cfg, run.data.tags.get("config_hash", ""),
                      int(run.data.params.get("seed", cfg.get("seed", 0))))


def _mlflow_run(run_id: str, uri: str, key: str):  # noqa: ANN202  (mlflow's Run)
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    db = sqlite_path(uri)
    if db is not None and not db.exists():  # MlflowClient would create an empty store there
        raise ConfigError(key, f"no MLflow store at {uri} to find run {run_id} in")
    try:
        return MlflowClient(tracking_uri=uri).get_run(run_id)
    except MlflowException as error:
        reason = _first_line(error)
        raise ConfigError(key, f"no MLflow run {run_id} in {uri} ({reason})") from None


def _trained_config(run_id: str, uri: str, key: str) -> DictConfig:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory() as tmp, _no_progress_bar():
        try:
            path = MlflowClient(tracking_uri=uri).download_artifacts(run_id, "config.yaml", tmp)
        except (MlflowException, OSError) as error:
            raise ConfigError(key, f"cannot read MLflow run {run_id}'s config.yaml artifact ({_first_line(error)})") from None
        return OmegaConf.load(path)


@contextlib.contextmanager
def _no_progress_bar() -> Iterator[None]:
    """MLflow draws a progress bar for every download, even of one small file."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def trained_data(run: TrainedRun):  # noqa: ANN201  (an ImageDataset; its files are not read)
    """The dataset the run trained on (classes, channels, image size)."""
    return build(run.config.data)


def load_model(run: TrainedRun, device: torch.device, key: str) -> torch.nn.Module:
    """The run's model with its final weights, in eval mode, without gradients, on `device`. Building
    it draws no random number from torch's global stream (a run that loads it stays reproducible)."""
    try:
        state = checkpoint.read(run.checkpoint)
    except CheckpointError as error:
        raise ConfigError(key, str(error)) from None
    if state.get("final") is None:
        raise ConfigError(key, f"{run.checkpoint} is not the end of training (epoch {state.get('epoch')})")
    if state.get("config_hash") != run.config_hash or state.get("mlflow_run_id") not in (None, run.run_id):
        raise ConfigError(key, f"{run.checkpoint} was not written by MLflow run {run.run_id}")
    dataset = trained_data(run)
    with torch.random.fork_rng(devices=[]):
        model = build_model(run.config.model, dataset.channels, dataset.num_classes)
    model.load_state_dict(state["model"])  # ghost BN has BatchNorm2d's keys, and in eval mode its output
    return model.to(device).eval().requires_grad_(False)
