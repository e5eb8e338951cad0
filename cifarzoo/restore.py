"""A trained model back from its run: `load_trained(ref)` rebuilds the network from the run's
config and loads its checkpoint's weights (what `python -m cifarzoo.evaluate` and anything that
reuses a trained model, e.g. a distillation teacher, start from).

`ref` is a run's output dir, or an MLflow run id: the run's `output_dir` tag names its dir, which
must be on this machine and record that run in its `mlflow_run.json` (a tag alone, which anyone
can set on a tracking server, does not choose which files are read). The config is the dir's
`.hydra/config.yaml` (written by run.py), else the run's `config.yaml` artifact in MLflow. The
checkpoint is loaded as every checkpoint is, `weights_only` (no code runs); the newest readable
of `checkpoint.pt` / `checkpoint.prev.pt`. A run that has not finished training loads too, with
its latest weights (`TrainedRun.finished` says which)."""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

import cifarzoo  # noqa: F401  (registers the config's resolvers)
from cifarzoo import checkpoint
from cifarzoo.build import resolve_device
from cifarzoo.checkpoint import CHECKPOINT_FILE, CheckpointError
from cifarzoo.config import build, build_model
from cifarzoo.data import ImageDataset
from cifarzoo.errors import ConfigError
from cifarzoo.export import Classifier, deployable
from cifarzoo.paths import default_tracking_uri
from cifarzoo.tracking import check_reachable, recorded_run, sqlite_path

log = logging.getLogger("cifarzoo")

_RUN_ID = re.compile(r"[0-9a-f]{32}")
HYDRA_CONFIG = Path(".hydra") / "config.yaml"


@dataclass
class RunRef:
    """Where a run is: its output dir and, when known, its MLflow run."""

    run_dir: Path
    run_id: str | None = None
    tracking_uri: str | None = None
    status: str | None = None  # the MLflow run's status, when looked up


@dataclass
class TrainedRun:
    cfg: DictConfig  # the run's config, resolved (data.root as given to load_trained)
    model: torch.nn.Module  # the network, float32, eval mode, on `device`; takes normalised images
    dataset: ImageDataset  # the run's `data` option, not loaded: mean, std, channels, classes, `load()`
    ref: RunRef
    device: torch.device
    epoch: int  # epochs the checkpoint's weights have trained
    step: int  # steps into the next epoch (0 at an epoch's end)

    @property
    def finished(self) -> bool:
        """Whether the weights are those of the run's last epoch."""
        return self.epoch >= int(self.cfg.train.epochs) and self.step == 0

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.dataset.channels, self.dataset.image_size, self.dataset.image_size)

    def classifier(self) -> Classifier:
        """The network with the dataset's normalisation: [0, 1] images in, logits out (float32, CPU)."""
        return deployable(self.model, self.dataset.mean, self.dataset.std)


def find_run(ref: str | Path, tracking_uri: str | None = None) -> RunRef:
    """`ref` as a run dir (an existing directory; its MLflow run is the one its mlflow_run.json
    records, looked up at `tracking_uri` if given, else at the URI recorded there) or an MLflow run
    id in the store at `tracking_uri` (default: the training default); a ConfigError on `run` otherwise."""
    path = Path(ref).expanduser()
    if path.is_dir():
        record = recorded_run(path)
        return RunRef(path.resolve(), record.get("run_id"), tracking_uri or record.get("tracking_uri"))
    ref = str(ref)
    if not _RUN_ID.fullmatch(ref):
        raise ConfigError("run", "is neither a directory nor an MLflow run id (32 hex digits)", ref)
    uri = tracking_uri or default_tracking_uri()
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        raise ConfigError("--tracking-uri", f"no MLflow store there to look up run {ref} in", uri)
    check_reachable(uri)
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        run = MlflowClient(tracking_uri=uri).get_run(ref)
    except MlflowException:
        raise ConfigError("run", f"no MLflow run with this id in {uri}", ref) from None
    output_dir = run.data.tags.get("output_dir", "")
    if not output_dir or not Path(output_dir).is_dir():
        raise ConfigError("run", f"its output dir {output_dir or '(no output_dir tag)'} is not on this machine "
                          "(the checkpoint lives there; copy the dir and pass its path)", ref)
    if recorded_run(Path(output_dir)).get("run_id") != ref:
        raise ConfigError("run", f"its output dir {output_dir} does not record this run in its mlflow_run.json", ref)
    return RunRef(Path(output_dir), ref, uri, run.info.status)


def run_config(ref: RunRef) -> DictConfig:
    """The run's config: `.hydra/config.yaml` in its dir, else its MLflow `config.yaml` artifact."""
    local = ref.run_dir / HYDRA_CONFIG
    if local.exists():
        return _resolved(OmegaConf.load(local), local)
    if ref.run_id is None or ref.tracking_uri is None:
        raise ConfigError("run", f"has no {HYDRA_CONFIG} and records no MLflow run to read its config from",
                          str(ref.run_dir))
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = MlflowClient(tracking_uri=ref.tracking_uri).download_artifacts(ref.run_id, "config.yaml", tmp)
        except (MlflowException, OSError) as error:
            raise ConfigError("run", f"has no {HYDRA_CONFIG}, and its MLflow run's config.yaml is unreadable "
                              f"({str(error).splitlines()[0][:200]})", str(ref.run_dir)) from None
        return _resolved(OmegaConf.load(path), path)


def _resolved(cfg: Any, source: Path) -> DictConfig:
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as error:
        raise ConfigError("run", f"its config {source} does not resolve ({str(error).splitlines()[0]})") from None
    return cfg


def load_trained(ref: str | Path | RunRef, tracking_uri: str | None = None, device: str = "auto",
                 data_root: str | None = None) -> TrainedRun:
    """Rebuild the run's network and load its checkpoint's weights (see the module docstring).
    `data_root` replaces the run's `data.root` (the dataset is where this machine keeps it)."""
    ref = ref if isinstance(ref, RunRef) else find_run(ref, tracking_uri)
    state = checkpoint.load(ref.run_dir / CHECKPOINT_FILE)
    if state is None:
        raise ConfigError("run", f"no {CHECKPOINT_FILE} in {ref.run_dir} (the run saved none yet)", str(ref.run_dir))
    if ref.run_id is not None and state.get("mlflow_run_id") not in (None, ref.run_id):
        raise ConfigError("run", f"the checkpoint in {ref.run_dir} belongs to MLflow run {state['mlflow_run_id']}, "
                          f"not {ref.run_id}", str(ref.run_dir))
    cfg = run_config(ref)
    if data_root is not None:
        with open_dict(cfg):
            cfg.data.root = str(data_root)
    dataset = build(cfg.data)
    model = build_model(cfg.model, dataset.channels, dataset.num_classes)
    weights = {k: v.float() if v.is_floating_point() else v for k, v in state["model"].items()}  # fp16 runs: half
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(f"{ref.run_dir / CHECKPOINT_FILE}: its weights do not fit the network the run's config "
                              f"builds now (the model code changed since?): {str(error).splitlines()[0][:200]}") from None
    try:
        torch_device = resolve_device(device)
    except ConfigError:
        raise ConfigError("device", "must be auto, cpu, cuda or cuda:N, and CUDA must be visible for cuda", device) from None
    return TrainedRun(cfg, model.to(torch_device).eval(), dataset, ref, torch_device,
                      int(state.get("epoch", 0)), int(state.get("step", 0)))
