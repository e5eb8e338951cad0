"""A finished run's final weights as an MLflow model (`mlflow.pytorch`), so that MLflow's model
tooling works on them: `mlflow.pytorch.load_model("runs:/<run id>/model")`, `mlflow models
predict|serve -m runs:/<run id>/model`, the run's Models tab in the UI.

The model is `cifarzoo.export.Classifier` (float32 images in [0, 1], shape (N, C, H, W), in;
logits out; the dataset's normalisation inside), pickled (`serialization_format="pickle"`,
mlflow.pytorch's format for arbitrary modules) with the cifarzoo package as its code
(`code_paths`), so it loads where cifarzoo is not installed; its requirements are the pinned
versions of torch, omegaconf and the other packages its layers come from (timm for the
transformers). The signature declares the tensor shapes. Its size is that of the float32 weights
(ResNet-preact-20 1 MB, WRN-28-10 146 MB) plus ~0.7 MB of code.

Logged through the run's own client (never MLflow's global tracking URI or active run), as
MLflow 3 does it: a LoggedModel named `model` whose source run is the run, its files, then the
run's output link. A run's READY model is never logged twice; an unfinished attempt (a crash
mid-upload) is deleted and redone."""

from __future__ import annotations

import importlib.metadata
import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient

from cifarzoo.export import Classifier

MODEL_NAME = "model"  # runs:/<run id>/model
_ALWAYS = ("torch", "omegaconf")  # cifarzoo's import of itself needs omegaconf (its resolvers)


def requirements(model: torch.nn.Module) -> list[str]:
    """Pinned pip requirements: torch, omegaconf and every other package a layer of `model` comes from."""
    packages = set(_ALWAYS) | {type(m).__module__.split(".")[0] for m in model.modules()}
    pinned = []
    for name in sorted(packages - {"cifarzoo", "builtins", "__main__"}):
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        pinned.append(f"{name}=={version.split('+')[0]}")
    return pinned


def logged_model_id(client: MlflowClient, run_id: str) -> str | None:
    """The id of the run's READY model; unfinished attempts are deleted."""
    from mlflow.entities import LoggedModelStatus

    experiment_id = client.get_run(run_id).info.experiment_id
    found = client.search_logged_models(experiment_ids=[experiment_id],
                                        filter_string=f"name = '{MODEL_NAME}' AND source_run_id = '{run_id}'")
    ready = None
    for model in found:
        if model.status == LoggedModelStatus.READY and ready is None:
            ready = model.model_id
        elif model.status != LoggedModelStatus.READY:
            client.delete_logged_model(model.model_id)
    return ready


def log_model(client: MlflowClient, run_id: str, model: Classifier, input_shape: Sequence[int], num_classes: int,
              step: int) -> str:
    """Log `model` as the run's MLflow model (once); return its model id."""
    existing = logged_model_id(client, run_id)
    if existing is not None:
        return existing
    import mlflow.pytorch
    import numpy as np
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    import cifarzoo

    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *input_shape), "images")]),
                               outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes), "logits")]))
    experiment_id = client.get_run(run_id).info.experiment_id
    logged = client.create_logged_model(experiment_id, name=MODEL_NAME, source_run_id=run_id,
                                        tags={"cifarzoo.input": "float32 images in [0, 1], (N, C, H, W)"})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / MODEL_NAME
        meta = Model(artifact_path=logged.artifact_location, model_uuid=logged.model_id, run_id=run_id,
                     model_id=logged.model_id)
        pickle_warning = logging.getLogger("mlflow.pytorch")  # "pickle can run code": we chose it, said once in the README
        level = pickle_warning.level
        pickle_warning.setLevel(logging.ERROR)
        try:
            mlflow.pytorch.save_model(model, str(path), mlflow_model=meta, signature=signature,
                                      serialization_format="pickle", pip_requirements=requirements(model),
                                      code_paths=[str(Path(cifarzoo.__file__).parent)])
        finally:
            pickle_warning.setLevel(level)
        for cache in path.rglob("__pycache__"):
            shutil.rmtree(cache, ignore_errors=True)
        client.log_model_artifacts(logged.model_id, str(path))
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=step)])
    return logged.model_id
