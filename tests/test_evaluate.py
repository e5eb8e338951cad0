"""Using a trained model: `python -m cifarzoo.evaluate`, its exports, and the MLflow model a
finished run logs. One tiny real run (ResNet-preact-8 on data=fake, 1 epoch, a real sqlite
store) is trained once for the module."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from conftest import QUICK, compose_run
from cifarzoo.data import DeviceData
from cifarzoo.evaluate import main
from cifarzoo.trained import load_trained
from cifarzoo.tracking import RUN_FILE

TINY = [*QUICK, "model.depth=8", "train.epochs=1", "data.num_train=128", "data.num_test=64", "data.train_size=null",
        "data.test_size=null", "train.batch_size=32", "tracking.log_model=true"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    """(run dir, MLflow run id, tracking URI) of a finished tiny run that logged its model."""
    from cifarzoo.task import train

    root = tmp_path_factory.mktemp("evaluate")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cfg, ctx = compose_run([*TINY, f"tracking.uri={uri}", "tracking.experiment=eval"], root / "run")
    train(cfg, ctx)
    run_id = json.loads((root / "run" / RUN_FILE).read_text())["run_id"]
    return root / "run", run_id, uri


def _json_result(capsys, argv: list[str]) -> dict:
    """`main(argv + ["--json"])`'s result, with its stderr under "stderr"."""
    assert main([*argv, "--json"]) == 0
    captured = capsys.readouterr()
    return {**json.loads(captured.out), "stderr": captured.err}


def _inputs(run_dir: Path) -> tuple[torch.Tensor, torch.Tensor, DeviceData]:
    """The run's test images as [0, 1] floats, their labels, and the project's DeviceData of them."""
    t = load_trained(run_dir)
    data = DeviceData(t.dataset.load(), t.dataset.mean, t.dataset.std, torch.device("cpu"), t.dataset.num_classes, False)
    return data.test_x.float() / 255, data.test_y, data


def test_evaluate_gives_the_runs_logged_test_error_by_dir_and_by_run_id_and_logs_nothing(trained, capsys):
    run_dir, run_id, uri = trained
    client = MlflowClient(uri)
    before = client.get_run(run_id).data.metrics
    by_dir = _json_result(capsys, [str(run_dir)])
    by_id = _json_result(capsys, [run_id, "--tracking-uri", uri])
    assert {**by_dir, "stderr": ""} == {**by_id, "stderr": ""}
    assert "warning" not in by_dir["stderr"]
    assert by_dir["error"] == before["test_error"] and by_dir["loss"] == pytest.approx(before["test_loss"], rel=1e-6)
    assert by_dir["finished"] and by_dir["epoch"] == 1 and by_dir["images"] == 64
    wrong = sum(e * n / 100 for e, n in zip(by_dir["class_error"], by_dir["class_images"]))
    assert sum(by_dir["class_images"]) == 64 and round(wrong) == round(by_dir["error"] * 64 / 100)
    assert client.get_run(run_id).data.metrics == before  # without --log nothing is written
    assert main([str(run_dir)]) == 0
    text = capsys.readouterr().out
    assert f"test error {before['test_error']:.2f}%" in text and "per-class error" in text


def test_tta_flip_averages_the_softmax_of_each_image_and_its_flip_and_train_split_is_the_runs(trained, capsys):
    run_dir, _, _ = trained
    model = load_trained(run_dir).model
    x01, labels, data = _inputs(run_dir)
    with torch.no_grad():
        x = data.normalize(data.test_x)
        probs = (F.softmax(model(x), 1) + F.softmax(model(torch.flip(x, dims=[3])), 1)) / 2
        train_logits = model(data.normalize(data.train_x))
    flip = _json_result(capsys, [str(run_dir), "--tta", "flip"])
    plain = _json_result(capsys, [str(run_dir)])
    assert flip["loss"] == pytest.approx(F.nll_loss(probs.log(), labels).item(), rel=1e-5)
    assert flip["error"] == pytest.approx(100 * (probs.argmax(1) != labels).float().mean().item())
    assert flip["loss"] != plain["loss"]
    train = _json_result(capsys, [str(run_dir), "--split", "train"])
    assert train["images"] == 128
    assert train["error"] == pytest.approx(100 * (train_logits.argmax(1) != data.train_y).float().mean().item())


def test_log_adds_the_evaluation_to_the_mlflow_run(trained, capsys):
    run_dir, run_id, uri = trained
    plain = _json_result(capsys, [str(run_dir), "--log"])
    flip = _json_result(capsys, [str(run_dir), "--tta", "flip", "--log"])
    client = MlflowClient(uri)
    history = {k: [(m.step, m.value) for m in client.get_metric_history(run_id, k)]
               for k in ("eval_test_error", "eval_test_loss", "eval_tta_flip_test_error")}
    assert history == {"eval_test_error": [(1, plain["error"])], "eval_test_loss": [(1, plain["loss"])],
                       "eval_tta_flip_test_error": [(1, flip["error"])]}
    assert {a.path for a in client.list_artifacts(run_id, "evaluation")} == {"evaluation/test.json",
                                                                            "evaluation/tta_flip_test.json"}


EXPORTS = ("torchscript", "pt2", "onnx")
LOAD_WITHOUT_CIFARZOO = textwrap.dedent(
    """
    import importlib.util, os, sys
    # hide cifarzoo: the paths that hold it (PYTHONPATH, an editable install's .pth) and editable-install finders
    sys.path = [p for p in sys.path if not os.path.isdir(os.path.join(p or ".", "cifarzoo"))]
    sys.meta_path = [f for f in sys.meta_path if "editable" not in str(getattr(f, "__module__", "")).lower()]
    assert importlib.util.find_spec("cifarzoo") is None, "cifarzoo is still importable"
    import mlflow.pytorch, onnxruntime, torch
    folder, uri, run_id = sys.argv[1:]
    x = torch.load(folder + "/x.pt")
    out = {
        "torchscript": torch.jit.load(folder + "/model.torchscript")(x),
        "pt2": torch.export.load(folder + "/model.pt2").module()(x),
        "onnx": torch.from_numpy(onnxruntime.InferenceSession(folder + "/model.onnx").run(None, {"images": x.numpy()})[0]),
    }
    assert "cifarzoo" not in sys.modules
    mlflow.set_tracking_uri(uri)
    out["mlflow"] = mlflow.pytorch.load_model(f"runs:/{run_id}/model")(x)  # brings cifarzoo as its code
    assert os.path.join("code", "cifarzoo") in sys.modules["cifarzoo"].__file__, sys.modules["cifarzoo"].__file__
    torch.save({k: v.detach() for k, v in out.items()}, folder + "/logits.pt")
    """
)


def test_exports_and_the_mlflow_model_load_without_cifarzoo_and_give_the_rebuilt_models_logits(trained, tmp_path, capsys):
    run_dir, run_id, uri = trained
    for fmt in (*EXPORTS, "state_dict"):
        assert main([str(run_dir), "--export", fmt, str(tmp_path / f"model.{fmt}")]) == 0
    assert "wrote state_dict" in capsys.readouterr().out
    restored = load_trained(run_dir)
    x01, _, data = _inputs(run_dir)
    x = x01[:5]  # another batch size than the export's example: the batch dimension is dynamic
    with torch.no_grad():
        expected = restored.classifier()(x)
        # the Classifier's normalisation is the project's: uint8 images through DeviceData
        torch.testing.assert_close(expected, restored.model(data.normalize(data.test_x[:5])), atol=1e-5, rtol=0)
    torch.save(x, tmp_path / "x.pt")
    subprocess.run([sys.executable, "-c", LOAD_WITHOUT_CIFARZOO, str(tmp_path), uri, run_id], check=True, timeout=300,
                   cwd=tmp_path)
    logits = torch.load(tmp_path / "logits.pt")
    for fmt in (*EXPORTS, "mlflow"):
        torch.testing.assert_close(logits[fmt], expected, atol=1e-5, rtol=0, msg=fmt)
    note = json.loads((tmp_path / "model.state_dict.json").read_text())
    from cifarzoo.config import build_model

    net = build_model(OmegaConf.create(note["model"]), note["in_channels"], note["num_classes"]).eval()
    net.load_state_dict(torch.load(tmp_path / "model.state_dict", weights_only=True))
    mean, std = (torch.tensor(note[k]).view(1, -1, 1, 1) for k in ("mean", "std"))
    with torch.no_grad():
        torch.testing.assert_close(net((x - mean) / std), expected, atol=1e-5, rtol=0)


def test_a_finished_run_logs_its_final_weights_as_an_mlflow_model(trained, monkeypatch):
    import mlflow.pytorch

    from cifarzoo.mlflow_model import log_model, logged_model_id

    run_dir, run_id, uri = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # Loading puts the model's bundled code dir first on sys.path: undone after the test, or
    # processes this worker spawns later (tests/test_distributed.py) import cifarzoo from there.
    monkeypatch.setattr(sys, "path", list(sys.path))
    loaded = mlflow.pytorch.load_model(f"runs:/{run_id}/model")
    restored = load_trained(run_dir)  # the checkpoint's weights
    x01, _, _ = _inputs(run_dir)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x01), restored.classifier()(x01), atol=1e-6, rtol=0)
    info = mlflow.models.get_model_info(f"runs:/{run_id}/model")
    assert tuple(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == (-1, 3, 32, 32)
    client = MlflowClient(uri)
    model_id = logged_model_id(client, run_id)
    assert model_id is not None
    assert log_model(client, run_id, restored.classifier(), restored.input_shape, 10, 1) == model_id  # once only
    assert len(client.search_logged_models([client.get_run(run_id).info.experiment_id])) == 1


def test_tracking_log_model_false_logs_no_model(trained, tmp_path):
    from cifarzoo.data.base import Splits
    from cifarzoo.tracking import Tracker

    uri = trained[2]
    tracker = Tracker.open(uri, "off", tmp_path / "run", "run", {"tracking.log_model": "False"}, {"config_hash": "h"}, "")
    x, y = torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.arange(4)
    data = DeviceData(Splits(x, y, x, y), (0.5,) * 3, (0.25,) * 3, torch.device("cpu"), 10)
    tracker.log_model(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10)), data, step=1)
    client = MlflowClient(uri)
    assert client.search_logged_models([client.get_run(tracker.run_id).info.experiment_id]) == []


@pytest.mark.parametrize("env, value", [(None, True), ("false", False), ("true", True)])
def test_tracking_log_model_is_on_by_default_and_cifarzoo_log_model_sets_the_default(monkeypatch, env, value):
    from conftest import compose_config

    if env is None:
        monkeypatch.delenv("CIFARZOO_LOG_MODEL", raising=False)
    else:
        monkeypatch.setenv("CIFARZOO_LOG_MODEL", env)
    assert compose_config([]).tracking.log_model is value
    assert compose_config(["tracking.log_model=true"]).tracking.log_model is True


def test_an_fp16_runs_network_exports_as_float32(one_thread):
    from cifarzoo.export import deployable
    from cifarzoo.models.resnet_preact import ResNetPreAct
    from cifarzoo.precision import FP16

    torch.manual_seed(0)
    net = ResNetPreAct(depth=8, in_channels=3, num_classes=10).eval()
    half = FP16().prepare(ResNetPreAct(depth=8, in_channels=3, num_classes=10)).eval()
    half.load_state_dict(net.state_dict())  # the weights rounded to float16, as an fp16 run holds them
    exported = deployable(half, (0.5,) * 3, (0.25,) * 3)
    net.load_state_dict({k: v.float() for k, v in half.state_dict().items()})
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        out = exported(x)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, net((x - 0.5) / 0.25), atol=1e-6, rtol=0)


def test_an_unfinished_run_is_evaluated_with_a_warning_from_its_hydra_config(trained, tmp_path, capsys):
    """A run dir copied away from its MLflow store: its .hydra/config.yaml is its config, here one of 2
    epochs whose checkpoint has 1. While its store is on this machine, the store's config.yaml is."""
    run_dir, run_id, uri = trained
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    cfg = OmegaConf.to_container(load_trained(run_dir).cfg)
    cfg["train"]["epochs"], cfg["data"]["test_size"] = 2, 32
    (copy / ".hydra").mkdir()
    OmegaConf.save(OmegaConf.create(cfg), copy / ".hydra" / "config.yaml")
    tracked = _json_result(capsys, [str(copy)])  # the config the run trained with, not the edited file
    assert tracked["images"] == 64 and tracked["finished"]
    record = json.loads((copy / RUN_FILE).read_text())
    (copy / RUN_FILE).write_text(json.dumps({**record, "tracking_uri": f"sqlite:///{tmp_path / 'gone' / 'mlflow.db'}"}))
    result = _json_result(capsys, [str(copy)])
    assert result["images"] == 32 and not result["finished"] and result["run_id"] == run_id
    assert "warning: the run has not finished training" in result["stderr"]


@pytest.mark.parametrize("argv, says", [
    (["0123456789abcdef0123456789abcdef"], "run: no MLflow run 0123456789abcdef0123456789abcdef in"),
    (["no/such/dir"], "run: is neither an existing run dir or checkpoint file nor an MLflow run id"),
    (["{tmp}"], "run: no checkpoint.pt in"),
    (["0123456789abcdef0123456789abcdef", "--tracking-uri", "sqlite:///{tmp}/none.db"], "--tracking-uri: no MLflow store"),
    (["{run}", "--export", "tflite", "x"], "--export: must be one of"),
])
def test_bad_input_is_one_line_and_exit_2(trained, tmp_path, capsys, argv, says):
    run_dir, _, uri = trained
    argv = [a.format(tmp=tmp_path, run=run_dir) for a in argv]
    if "--tracking-uri" not in argv:
        argv += ["--tracking-uri", uri]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"cifarzoo: error: {says}"), err


def test_help_explains_the_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    text = capsys.readouterr().out
    assert exit_.value.code == 0
    for words in ("output dir or its MLflow run id", "--tta", "horizontal flip", "--log", "eval_<split>_error",
                  "--export FORMAT PATH", "torchscript", "onnx", "state_dict", "[0, 1]"):
        assert words in text, words
