"""Every recipe, precision mode and speed switch trains in-process on `data=fake` and logs to MLflow."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import QUICK, compose_config
from cifarzoo.build import build_run
from cifarzoo.errors import ConfigError
from cifarzoo.loop import Diverged
from cifarzoo.models.ghost_bn import GhostBatchNorm2d
from cifarzoo.paths import REPO_DIR
from cifarzoo.task import train

AUG_YAMLS = sorted(p.stem for p in (REPO_DIR / "conf" / "aug").glob("*.yaml"))
SMALL = ("model.depth=8", "train.epochs=1", "data.train_size=128", "data.test_size=64")


def only_run(client):
    (run,) = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    return run


def test_every_aug_option_of_the_issue_is_present():
    assert AUG_YAMLS == sorted([
        "standard", "none", "cutout", "random_erasing", "mixup", "cutmix", "ricap", "dual_cutout",
        "label_smoothing", "autoaugment", "randaugment", "random_resized_crop",
    ])


@pytest.mark.parametrize("aug", [*AUG_YAMLS, "[cutout,mixup]", "[autoaugment,mixup]", "[cutout,label_smoothing]"])
def test_every_aug_recipe_trains_an_epoch_and_is_logged(aug, make_run, client, one_thread):
    cfg, ctx = make_run(*SMALL, f"aug={aug}")
    error = train(cfg, ctx)
    run = only_run(client)
    assert run.info.status == "FINISHED" and math.isfinite(error)
    assert run.data.params["aug"] == aug.strip("[]").replace(",", "+")
    (loss,) = [m.value for m in client.get_metric_history(run.info.run_id, "train_loss")]
    (train_error,) = [m.value for m in client.get_metric_history(run.info.run_id, "train_error")]
    assert math.isfinite(loss) and 0 <= train_error <= 100


def test_fp16_trains_the_whole_model_in_half(make_run, client, one_thread):
    cfg, ctx = make_run(*SMALL, "precision=fp16", "optim.lr=0.05")
    assert math.isfinite(train(cfg, ctx))
    assert only_run(client).info.status == "FINISHED"
    run = build_run(compose_config([*QUICK, "precision=fp16"]))
    assert {p.dtype for p in run.parts.model.parameters()} == {torch.float16}


def test_fp16_divergence_is_recorded_as_failed_diverged(make_run, client, one_thread):
    # A step size at which fp32 weights stay finite but float16 ones overflow.
    overrides = (*SMALL, "data.train_size=256", "optim.lr=100")
    cfg, ctx = make_run(*overrides, "precision=fp16")
    with pytest.raises(Diverged):
        train(cfg, ctx)
    run = only_run(client)
    assert run.info.status == "FAILED" and run.data.tags["failure_reason"] == "diverged"
    cfg, ctx = make_run(*overrides, "precision=fp32", "tracking.experiment=fp32", out="fp32")
    assert math.isfinite(train(cfg, ctx))


def test_ghost_batch_size_swaps_every_batchnorm_and_trains(make_run, client, one_thread):
    built = build_run(compose_config([*QUICK, "train.ghost_batch_size=16"]))
    bns = [m for m in built.parts.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(isinstance(m, GhostBatchNorm2d) and m.ghost_batch_size == 16 for m in bns)
    cfg, ctx = make_run(*SMALL, "train.ghost_batch_size=16")
    assert math.isfinite(train(cfg, ctx))
    assert only_run(client).data.params["train.ghost_batch_size"] == "16"


def test_ghost_batch_size_must_divide_the_batch():
    with pytest.raises(ConfigError, match=r"^train\.ghost_batch_size: must divide train\.batch_size"):
        build_run(compose_config([*QUICK, "train.ghost_batch_size=48"]))


def test_channels_last_on_cpu_is_a_config_error():
    """This CPU torch crashes (SIGSEGV) in the backward of a channels_last 1x1 stride-2 convolution."""
    with pytest.raises(ConfigError, match=r"^train\.channels_last: must be false or null on CPU: .*crashes the process"):
        build_run(compose_config([*QUICK, "train.channels_last=true"]))
    plain = build_run(compose_config([*QUICK]))  # CPU default: off
    assert plain.parts.data.normalize(plain.parts.data.train_x[:4]).is_contiguous()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="channels_last runs on CUDA only")
def test_cuda_channels_last_switch_sets_the_memory_format(make_run, one_thread):
    built = build_run(compose_config([*QUICK, "train.device=cuda", "train.channels_last=true"]))
    conv = next(m for m in built.parts.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and conv.weight.shape[-1] > 1
    x = built.parts.data.normalize(built.parts.data.train_x[:4])
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    cfg, ctx = make_run(*SMALL, "train.device=cuda", "train.channels_last=true")
    assert math.isfinite(train(cfg, ctx))


@pytest.mark.slow
def test_compile_trains_through_the_compiled_model_and_checkpoints_the_plain_one(make_run, client, tmp_path):
    cfg, ctx = make_run(*SMALL, "train.compile=true")
    assert math.isfinite(train(cfg, ctx))
    state = torch.load(ctx.output_dir / "checkpoint.pt", weights_only=False)
    assert not any(k.startswith("_orig_mod") for k in state["model"])
    built = build_run(compose_config([*QUICK, "train.compile=true"]))
    assert built.parts.forward is not built.parts.model and hasattr(built.parts.forward, "_orig_mod")
