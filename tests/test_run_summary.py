"""What a run says on the console (issue 22): a closing line per run (final and best test error,
MLflow run id, run dir, the commands that show it), the teacher named when distillation starts,
and one warning for `train.channels_last=true` on a model without convolutions to speed up."""

from __future__ import annotations

import logging

import pytest
from conftest import QUICK, compose_config, compose_run
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from cifarzoo.config import build_model
from cifarzoo.task import channels_last_note, train

TINY = ["model.depth=8", "model.base_channels=4", "train.epochs=2"]


@pytest.fixture
def uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "cifarzoo"]


def test_a_finished_run_ends_with_one_summary_line(tmp_path, uri, caplog, one_thread):
    cfg, ctx = compose_run([*QUICK, *TINY, f"tracking.uri={uri}", "tracking.experiment=summary"], tmp_path / "run")
    with caplog.at_level(logging.INFO, logger="cifarzoo"):
        error = train(cfg, ctx)
    run_id = OmegaConf.load(ctx.output_dir / "mlflow_run.json").run_id
    best = MlflowClient(tracking_uri=uri).get_run(run_id).data.metrics["best_test_error"]
    last = messages(caplog)[-1]
    assert last.startswith(f"done: test error {error:.2f}% (best {best:.2f}% at epoch ")
    assert f"MLflow run {run_id}, run dir {ctx.output_dir}; show it: python -m cifarzoo.runs --experiment summary, " \
           f"python -m cifarzoo.evaluate {ctx.output_dir}" in last


def test_a_distillation_run_names_its_teacher_when_it_starts(tmp_path, uri, caplog, one_thread):
    common = [*QUICK, f"tracking.uri={uri}", "tracking.experiment=kd"]
    cfg, ctx = compose_run([*common, *TINY, "train.epochs=1"], tmp_path / "teacher")
    train(cfg, ctx)
    teacher_id = OmegaConf.load(ctx.output_dir / "mlflow_run.json").run_id
    cfg, student = compose_run([*common, "model=lenet", "train.epochs=1", f"train.distill.teacher={teacher_id}"],
                               tmp_path / "student")
    with caplog.at_level(logging.INFO, logger="cifarzoo"):
        train(cfg, student)
    named = [m for m in messages(caplog) if m.startswith("distilling from teacher ")]
    assert named == [f"distilling from teacher {ctx.output_dir} (ResNetPreAct on FakeData, MLflow run {teacher_id}), "
                     "T=4, alpha=0.9"]


@pytest.mark.parametrize(("model", "meaningless"), [("vit", True), ("resnet_preact", False), ("lenet", False)])
def test_channels_last_on_a_model_without_convolutions_is_one_warning(model, meaningless):
    import torch

    cfg = compose_config([f"model={model}", "data=fake"])
    with torch.device("meta"):
        network = build_model(cfg.model, 3, 10)
    note = channels_last_note(network)
    assert (note is not None) == meaningless
    if meaningless:
        assert note.startswith(f"train.channels_last=true changes nothing for {type(network).__name__}: ")
