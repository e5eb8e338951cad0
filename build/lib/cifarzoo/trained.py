"""A trained model back from its run: `find_run` finds the run (by MLflow run id, run dir or
checkpoint path) and reads its config, `load_model` rebuilds the network and loads the
checkpoint's weights. Both users start here: a distillation teacher (`cifarzoo.distill`: a
FINISHED run and its final weights) and `python -m cifarzoo.evaluate` (`load_trained`: any run
with a checkpoint, finished or not, `TrainedModel.finished` says which).

- Finding: a run dir (or the dir of a named checkpoint file) must vouch for its MLflow run: its
  `mlflow_run.json` names the run and its store. A run id is looked up in the store given; its
  `output_dir` tag names its dir, which must be on this machine and record that run (a tag alone,
  which anyone can set on a tracking server, does not choose which files are read).
  `require_finished=False` also accepts a dir that records no MLflow run, or whose store is not on
  this machine (a copied dir): it is used from its own files.
- The config: the MLflow run's `config.yaml` artifact when the run's MLflow record is read (the
  resolved config the run trained with, logged when it opened; files in the dir can be edited
  afterwards), else the dir's `.hydra/config.yaml` (written by run.py), resolved here.
- Loading: the checkpoint must belong to the run (its `mlflow_run_id` and `config_hash`); it is
  read `weights_only` (`cifarzoo.checkpoint`: no code runs); with `require_final=False` the newest
  readable of `checkpoint.pt` / `checkpoint.prev.pt`. Half-precision weights load as float32;
  building the network draws nothing from torch's global random stream (an alpha=0 distillation
  run equals a plain run bitwise). The model is in eval mode, without gradients.

Every failure is a one-line ConfigError naming the key the run came from (`train.distill.teacher`,
`run`)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from cifarzoo import checkpoint
from cifarzoo.checkpoint import CHECKPOINT_FILE, CheckpointError
from cifarzoo.config import build, build_model
from cifarzoo.data import ImageDataset
from cifarzoo.errors import ConfigError
from cifarzoo.export import Classifier, deployable
from cifarzoo.tracking import RUN_FILE, check_reachable, first_line, recorded_run, sqlite_path

_RUN_ID = re.compile(r"[0-9a-f]{32}")
HYDRA_CONFIG = Path(".hydra") / "config.yaml"


@dataclass(frozen=True)
class TrainedRun:
    """A run `find_run` found: where its files are and what it trained with (no weights read)."""

    run_dir: Path
    checkpoint: Path  # the file `load_model` reads: the one named, else the dir's checkpoint.pt
    config: DictConfig  # as the run trained with it, resolved
    run_id: str | None = None  # None: the dir records no MLflow run
    tracking_uri: str | None = None  # the store its MLflow record was read from; None: not read
    status: str | None = None  # the MLflow run's status, when read
    config_hash: str | None = None  # the MLflow run's config_hash tag, when read
    seed: int = 0

    def dataset(self) -> ImageDataset:
        """The dataset the run trained on (classes, channels, image size); its files are not read."""
        return build(self.config.data)

    def with_data_root(self, root: str | Path | None) -> TrainedRun:
        """The run with `data.root` replaced (where the dataset is on this machine); None: unchanged."""
        if root is None:
            return self
        config = self.config.copy()
        with open_dict(config):
            config.data.root = str(root)
        return dataclasses.replace(self, config=config)


@dataclass
class TrainedModel:
    run: TrainedRun
    model: torch.nn.Module  # float32, eval mode, no gradients, on `device`; takes normalised images
    dataset: ImageDataset  # the run's `data` option, not loaded: mean, std, channels, classes, `load()`
    device: torch.device
    epoch: int  # epochs the checkpoint's weights have trained
    step: int  # steps into the next epoch (0 at an epoch's end)

    @property
    def cfg(self) -> DictConfig:
        return self.run.config

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


def find_run(ref: object, tracking_uri: str, key: str, *, require_finished: bool = True,
             uri_key: str | None = None) -> TrainedRun:
    """The run `ref` names: an MLflow run id in the store at `tracking_uri`, a run dir, or a
    checkpoint file in a run dir (see the module docstring). `require_finished`: its MLflow run must
    be FINISHED (so the dir must record one, in a store on this machine). A ConfigError on `key`
    when it is missing, unfinished or unreadable; on `uri_key` (default `key`) when `tracking_uri`
    holds no store. Reads no weights (pre-flight checks call it)."""
    if isinstance(ref, Path):
        ref = str(ref)
    if not isinstance(ref, str) or not ref:
        raise ConfigError(key, "must be an MLflow run id, a run dir or a checkpoint path (quote an id that "
                          "Hydra reads as a number)", ref)
    path = Path(ref).expanduser()
    named: Path | None = None
    if path.is_dir() or path.is_file():
        named = path.resolve() if path.is_file() else None
        run_dir = path.resolve() if named is None else named.parent
        record = recorded_run(run_dir)
        run_id, uri = record.get("run_id"), record.get("tracking_uri")
        if not (isinstance(run_id, str) and isinstance(uri, str)):
            if require_finished:
                raise ConfigError(key, f"{run_dir} has no readable {RUN_FILE}: not the dir of a tracked cifarzoo run", ref)
            run_id = uri = None
        elif not require_finished and _store_elsewhere(uri):
            uri = None  # a dir copied away from its store: its own files tell
        store_key = key
    elif _RUN_ID.fullmatch(ref):
        run_id, uri, run_dir, store_key = ref, tracking_uri, None, uri_key or key
    else:
        raise ConfigError(key, "is neither an existing run dir or checkpoint file nor an MLflow run id", ref)
    run = None if uri is None else _mlflow_run(run_id, uri, key, store_key)
    if run_dir is None:
        run_dir = _output_dir(run, key)
    if require_finished and run.info.status != "FINISHED":
        raise ConfigError(key, f"MLflow run {run_id} is {run.info.status}, not FINISHED: only a run that "
                          "finished training can be used", ref)
    ckpt = named or run_dir / CHECKPOINT_FILE
    if not (ckpt.is_file() or named is None and checkpoint.exists(run_dir)):
        raise ConfigError(key, f"no {CHECKPOINT_FILE} in {run_dir} (the run saved none yet)", ref)
    cfg = _config(run_dir, run_id, uri, key)
    if run is None:
        return TrainedRun(run_dir, ckpt, cfg, run_id, seed=int(cfg.get("seed", 0)))
    return TrainedRun(run_dir, ckpt, cfg, run_id, uri, run.info.status, run.data.tags.get("config_hash", ""),
                      int(run.data.params.get("seed", cfg.get("seed", 0))))


def _store_elsewhere(uri: str) -> bool:
    db = sqlite_path(uri)
    return db is not None and not db.exists()


def _mlflow_run(run_id: str, uri: str, key: str, store_key: str) -> Any:  # mlflow's Run
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    if _store_elsewhere(uri):  # MlflowClient would create an empty store there
        raise ConfigError(store_key, f"no MLflow store there to find run {run_id} in", uri)
    check_reachable(uri)
    try:
        return MlflowClient(tracking_uri=uri).get_run(run_id)
    except MlflowException as error:
        raise ConfigError(key, f"no MLflow run {run_id} in {uri} ({first_line(error, 200)})") from None


def _output_dir(run: Any, key: str) -> Path:
    """The dir a run id's `output_dir` tag names, if it is here and records that run."""
    run_id, output_dir = run.info.run_id, run.data.tags.get("output_dir", "")
    if not output_dir or not Path(output_dir).is_dir():
        raise ConfigError(key, f"MLflow run {run_id}'s output dir {output_dir or '(no output_dir tag)'} is not on "
                          "this machine (the checkpoint lives there; copy the dir and pass its path)")
    if recorded_run(Path(output_dir)).get("run_id") != run_id:
        raise ConfigError(key, f"MLflow run {run_id}'s output dir {output_dir} does not hold that run "
                          f"(its {RUN_FILE} names another, or none)")
    return Path(output_dir)


def _config(run_dir: Path, run_id: str | None, uri: str | None, key: str) -> DictConfig:
    """The MLflow run's config.yaml artifact when its record is read (`uri`), else .hydra/config.yaml."""
    if uri is not None:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        with tempfile.TemporaryDirectory() as tmp, _no_progress_bar():
            try:
                path = MlflowClient(tracking_uri=uri).download_artifacts(run_id, "config.yaml", tmp)
            except (MlflowException, OSError) as error:
                raise ConfigError(key, f"cannot read MLflow run {run_id}'s config.yaml artifact "
                                  f"({first_line(error, 200)})") from None
            return _resolved(OmegaConf.load(path), Path(path), key)
    local = run_dir / HYDRA_CONFIG
    if not local.is_file():
        raise ConfigError(key, f"{run_dir} has no {HYDRA_CONFIG} and no MLflow run on this machine to read its "
                          "config from")
    return _resolved(OmegaConf.load(local), local, key)


def _resolved(cfg: Any, source: Path, key: str) -> DictConfig:
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as error:
        raise ConfigError(key, f"the run's config {source} does not resolve ({first_line(error, 200)})") from None
    return cfg


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


def load_model(run: TrainedRun, device: torch.device, key: str, *, require_final: bool = True) -> TrainedModel:
    """The run's network with its checkpoint's weights, in eval mode, without gradients, on `device`
    (see the module docstring). `require_final`: the checkpoint must be the end of training."""
    state = _checkpoint_state(run.checkpoint, require_final, key)
    if require_final and state.get("final") is None:
        raise ConfigError(key, f"{run.checkpoint} is not the end of training (epoch {state.get('epoch')})")
    if (run.run_id is not None and state.get("mlflow_run_id") not in (None, run.run_id)
            or run.config_hash is not None and state.get("config_hash") != run.config_hash):
        raise ConfigError(key, f"{run.checkpoint} was not written by MLflow run {run.run_id} (it belongs to "
                          f"{state.get('mlflow_run_id') or 'another run'})")
    dataset = run.dataset()
    with torch.random.fork_rng(devices=[]):
        model = build_model(run.config.model, dataset.channels, dataset.num_classes)
    weights = {k: v.float() if v.is_floating_point() else v for k, v in state["model"].items()}  # fp16 runs: half
    try:
        model.load_state_dict(weights)  # ghost BN has BatchNorm2d's keys, and in eval mode its output
    except RuntimeError as error:
        raise ConfigError(key, f"{run.checkpoint}: its weights do not fit the network the run's config builds now "
                          f"(the model code changed since?): {first_line(error, 200)}") from None
    return TrainedModel(run, model.to(device).eval().requires_grad_(False), dataset, device,
                        int(state.get("epoch", 0)), int(state.get("step", 0)))


def _checkpoint_state(path: Path, require_final: bool, key: str) -> dict[str, Any]:
    try:
        if require_final or path.name != CHECKPOINT_FILE:
            return checkpoint.read(path)
        state = checkpoint.load(path)  # the newest readable: checkpoint.prev.pt when checkpoint.pt is not
    except CheckpointError as error:
        raise ConfigError(key, str(error)) from None
    if state is None:
        raise ConfigError(key, f"no {CHECKPOINT_FILE} in {path.parent} (the run saved none yet)")
    return state


def load_trained(ref: str | Path, tracking_uri: str | None = None, device: str = "auto",
                 data_root: str | Path | None = None) -> TrainedModel:
    """Any run with a checkpoint (finished or not: `.finished`), by run dir, checkpoint path or run id
    (looked up in `tracking_uri`, default: the training default), with its latest weights on `device`
    (auto | cpu | cuda | cuda:N). `data_root` replaces the run's `data.root`. Errors name the CLI's
    arguments (`python -m cifarzoo.evaluate`)."""
    from cifarzoo.build import resolve_device  # cifarzoo.build imports this module
    from cifarzoo.paths import default_tracking_uri

    run = find_run(ref, tracking_uri or default_tracking_uri(), "run", require_finished=False,
                   uri_key="--tracking-uri")
    try:
        torch_device = resolve_device(device)
    except ConfigError:
        raise ConfigError("device", "must be auto, cpu, cuda or cuda:N, and CUDA must be visible for cuda", device) from None
    return load_model(run.with_data_root(data_root), torch_device, "run", require_final=False)
