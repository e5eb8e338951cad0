"""A stored run is data, never code: a `_target_` planted in a run's stored config (the MLflow
`config.yaml` artifact, through a real tracking server's REST API, or a run dir's
`.hydra/config.yaml`) is refused in one line before anything runs, on every path that rebuilds a
trained run: evaluate/export (`load_trained`), a distillation teacher, and `+plan=true`.

Each payload is first shown to be live (Hydra's `instantiate` of it creates the marker file), so a
test fails if the refusal goes away."""

from __future__ import annotations

import contextlib
import json
import math
import pickle
import shutil
from pathlib import Path

import pytest
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from conftest import QUICK, compose_run
from served import Server
from cifarzoo.errors import ConfigError
from cifarzoo.task import train
from cifarzoo.trained import HYDRA_CONFIG, load_trained
from cifarzoo.tracking import RUN_FILE

pytestmark = pytest.mark.slow  # a tracking server and one training run per module (~40 s on 2 cores)

TINY = [*QUICK, "model.depth=8", "train.epochs=1", "data.train_size=64", "data.test_size=32", "train.batch_size=32"]


class _Touch:
    """Unpickling it opens `path` for writing: the marker that code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def payloads(evil: Path, marker: Path) -> dict[str, dict]:
    """The six `_target_`s Hydra's blocklist lets through, each creating `marker` when built."""
    return {
        "torch.load": {"_target_": "torch.load", "f": str(evil), "weights_only": False},
        "pandas.read_pickle": {"_target_": "pandas.read_pickle", "filepath_or_buffer": str(evil)},
        "numpy.load": {"_target_": "numpy.load", "file": str(evil), "allow_pickle": True},
        "joblib.load": {"_target_": "joblib.load", "filename": str(evil)},
        "Path.write_text": {"_target_": "pathlib.Path.write_text",
                            "_args_": [{"_target_": "pathlib.Path", "_args_": [str(marker)]}, "ran"]},
        "open": {"_target_": "builtins.open", "file": str(marker), "mode": "w"},
    }


@pytest.fixture(scope="module")
def served_run(tmp_path_factory):
    """One tracking server for the module, holding one FINISHED run trained through it."""
    tmp = tmp_path_factory.mktemp("served")
    server = Server(tmp).start()
    try:
        cfg, ctx = compose_run([*TINY, f"tracking.uri={server.uri}", "tracking.experiment=victim"], tmp / "run")
        assert math.isfinite(train(cfg, ctx))
        run_id = json.loads((ctx.output_dir / RUN_FILE).read_text())["run_id"]
        yield server, run_id, ctx.output_dir
    finally:
        server.stop()


@pytest.fixture(params=["torch.load", "pandas.read_pickle", "numpy.load", "joblib.load", "Path.write_text", "open"])
def payload(request, tmp_path):
    """(name, node, marker): a live payload (checked here) and the file it would create."""
    marker, evil = tmp_path / "ran.txt", tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(_Touch(str(marker))))
    node = payloads(evil, marker)[request.param]
    with contextlib.suppress(Exception):  # torch.load runs the pickle, then finds no magic number
        instantiate(node)  # the payload is live: building it runs code
    assert marker.exists(), request.param
    marker.unlink()
    return request.param, node, marker


def _planted(config: dict, node: dict, where: str) -> dict:
    planted = json.loads(json.dumps(config))
    if where == "nested":  # inside the model node: built before the model itself
        planted["model"]["stem"] = node
    else:
        planted["data"] = node
    return planted


def _refused(error: pytest.ExceptionInfo, name: str) -> str:
    message = str(error.value)
    assert "\n" not in message and "not one of cifarzoo's own classes" in message, message
    return message


def _plant_remote(server: Server, run_id: str, node: dict, where: str) -> None:
    client = MlflowClient(server.uri)
    path = client.download_artifacts(run_id, "config.yaml", str(server.tmp / f"dl-{where}"))
    config = OmegaConf.to_container(OmegaConf.load(path))
    # what anyone who reaches the server can do to a FINISHED run, with nothing but the REST API
    client.log_text(run_id, OmegaConf.to_yaml(_planted(config, node, where)), "config.yaml")


@pytest.fixture
def restore_config(served_run):
    server, run_id, _ = served_run
    client = MlflowClient(server.uri)
    original = Path(client.download_artifacts(run_id, "config.yaml", str(server.tmp / "original"))).read_text()
    yield
    client.log_text(run_id, original, "config.yaml")


def test_a_config_planted_through_the_server_runs_nothing_on_evaluate(served_run, payload, restore_config):
    server, run_id, _ = served_run
    name, node, marker = payload
    _plant_remote(server, run_id, node, "nested")
    with pytest.raises(ConfigError) as error:
        load_trained(run_id, server.uri, device="cpu")
    assert "model.stem._target_" in _refused(error, name)
    assert not marker.exists()


def test_a_config_planted_in_a_run_dir_runs_nothing_on_evaluate(served_run, payload, tmp_path):
    _, _, run_dir = served_run
    copied = tmp_path / "copied"  # a run dir away from its store: its own .hydra/config.yaml is read
    shutil.copytree(run_dir, copied, ignore=shutil.ignore_patterns(RUN_FILE, "*.lock"))
    name, node, marker = payload
    config = _stored(served_run)
    (copied / HYDRA_CONFIG).parent.mkdir(parents=True, exist_ok=True)
    (copied / HYDRA_CONFIG).write_text(OmegaConf.to_yaml(_planted(config, node, "data")))
    with pytest.raises(ConfigError) as error:
        load_trained(copied, device="cpu")
    assert "data._target_" in _refused(error, name)
    assert not marker.exists()


def _stored(served_run) -> dict:
    server, run_id, _ = served_run
    path = MlflowClient(server.uri).download_artifacts(run_id, "config.yaml", str(server.tmp / "stored"))
    return OmegaConf.to_container(OmegaConf.load(path))


@pytest.mark.parametrize("path", ["train", "plan", "preflight"])
def test_a_planted_teacher_config_runs_nothing_in_training_plan_or_preflight(served_run, tmp_path, restore_config, path):
    from cifarzoo.preflight import build_on_meta

    server, run_id, _ = served_run
    marker = tmp_path / "ran.txt"
    _plant_remote(server, run_id, {"_target_": "builtins.open", "file": str(marker), "mode": "w"}, "nested")
    cfg, ctx = compose_run([*TINY, f"tracking.uri={server.uri}", "tracking.experiment=student",
                            f"train.distill.teacher='{run_id}'", *(["+plan=true"] if path == "plan" else [])],
                           tmp_path / "student")
    with pytest.raises(ConfigError) as error:
        build_on_meta(cfg) if path == "preflight" else train(cfg, ctx)  # what `run.py -m` checks per job
    message = _refused(error, "open")
    assert message.startswith("train.distill.teacher:")
    assert not marker.exists()
    assert not (ctx.output_dir / "checkpoint.pt").exists()


def test_the_projects_own_stored_config_still_rebuilds(served_run):
    server, run_id, _ = served_run
    trained = load_trained(run_id, server.uri, device="cpu")
    assert trained.finished and type(trained.model).__name__ == "ResNetPreAct"


def test_evaluate_reads_the_dataset_from_this_machines_data_root_not_the_stored_one(served_run, tmp_path,
                                                                                     restore_config):
    """torchvision unpickles CIFAR's batches: a stored `data.root` must not choose which files."""
    from cifarzoo.trained import local_data_root

    server, run_id, _ = served_run
    client = MlflowClient(server.uri)
    config = _stored(served_run)
    config["data"]["root"] = str(tmp_path / "planted")
    client.log_text(run_id, OmegaConf.to_yaml(config), "config.yaml")
    trained = load_trained(run_id, server.uri, device="cpu")
    assert trained.cfg.data.root == local_data_root() != str(tmp_path / "planted")
    assert load_trained(run_id, server.uri, device="cpu", data_root=tmp_path).cfg.data.root == str(tmp_path)

