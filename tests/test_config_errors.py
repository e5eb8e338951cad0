"""Bad input fails before training with one line naming the key and the rule."""

from __future__ import annotations

import pytest
import torch

from cifarzoo.errors import ConfigError
from cifarzoo.task import train
from cifarzoo.tracking import sqlite_path


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.depth=21", "model.depth: ResNet-preact with basic blocks needs depth = 6n+2, n >= 1 (got 21)"),
        ("model.depth=29", "model.depth: ResNet-preact with basic blocks needs depth = 6n+2"),
        ("model.block=bottleneck model.depth=32", "model.depth: ResNet-preact with bottleneck blocks needs depth = 9n+2"),
        ("model.block=wide", "model.block: must be basic or bottleneck (got 'wide')"),
        ("optim.lr=0", "optim.lr: must be > 0 (got 0)"),
        ("optim.lr=-0.1", "optim.lr: must be > 0"),
        ("train.epochs=0", "train.epochs: must be a positive int (got 0)"),
        ("train.batch_size=-1", "train.batch_size: must be a positive int"),
        ("train.batch_size=300", "train.batch_size: must be at most the training-set size 256 (got 300)"),
        ("train.eval_every=0", "train.eval_every: must be a positive int"),
        ("train.device=tpu", "train.device: must be auto, cpu or cuda"),
        ("data.train_size=0", "data.train_size: must be null or a positive int"),
        ("data.train_size=true", "data.train_size: must be null or a positive int"),
        ("data.test_size=999999", "data.test_size: must be at most the split's size 2000"),
        ("sched=multistep sched.milestones=[150,100]", "sched.milestones: must be increasing positive epochs"),
        ("aug=cutout aug.cutout.cut_inside=true aug.cutout.size=40",
         "aug.cutout.size: must fit in the 32x32 image when cut_inside is true (got 40)"),
        ("aug=dual_cutout aug.dual_cutout.cut_inside=true aug.dual_cutout.size=33", "aug.dual_cutout.size: must fit"),
        ("aug=cutout aug.cutout.size=100", "aug.cutout.size: must be smaller than the 32x32 image (a square as large "
                                           "as the image erases most or all of every image it hits) (got 100)"),
        ("aug=cutout aug.cutout.size=32", "aug.cutout.size: must be smaller than the 32x32 image"),
        ("train.distributed=yes", "train.distributed: must be true or false"),
        ("train.step=graph", "train.step: graph cannot be used: train.device: a CUDA graph needs a CUDA device "
                             "(the run is on cpu) (got 'graph')"),
        ("train.step=fast", "train.step: must be auto, graph or eager (got 'fast')"),
        ("train.progress=fancy", "train.progress: must be one of auto, bar, lines, off (got 'fancy')"),
        ("train.progress_every_s=-1", "train.progress_every_s: must be a number of seconds >= 0 (got -1)"),
        ("+experimnt=wrn", "experimnt: unknown top-level key (a typo? experiments are +experiment=NAME"),
        ("+lr=0.3", "lr: unknown top-level key"),
        ("sched=multistep", "sched.milestones: must be epochs the run reaches: less than its 2 epochs (train.epochs) "
                            "(got [100, 150])"),
        ("sched=multistep sched.milestones=[1,2]", "sched.milestones: must be epochs the run reaches"),
        ("sched=multistep sched.milestones=[1] sched.warmup=linear sched.warmup_epochs=1",
         "sched.milestones: must be epochs the run reaches: less than its 1 epochs after the warmup"),
    ],
)
def test_bad_values_raise_one_line_config_error(make_run, tracking_uri, override, message):
    cfg, ctx = make_run(*override.split())
    with pytest.raises(ConfigError) as info:
        train(cfg, ctx)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)
    assert not sqlite_path(tracking_uri).exists()  # failed before any MLflow run was opened
    assert not (ctx.output_dir / "checkpoint.pt").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda(make_run):
    cfg, ctx = make_run("train.device=cuda")
    with pytest.raises(ConfigError, match=r"^train.device: asks for CUDA but no CUDA device is visible"):
        train(cfg, ctx)


def test_missing_dataset_files_with_download_off(make_run, tmp_path):
    cfg, ctx = make_run("data=cifar10", f"data.root={tmp_path / 'empty'}", "~data.train_size", "~data.test_size")
    with pytest.raises(ConfigError, match=r"^data.root: no CIFAR-10 files found there"):
        train(cfg, ctx)


def test_resuming_into_a_dir_of_another_configuration_is_refused(make_run):
    cfg, ctx = make_run("model.depth=8", "train.epochs=1")
    train(cfg, ctx)
    cfg, ctx = make_run("model.depth=8", "train.epochs=1", "optim.lr=0.3")
    with pytest.raises(ConfigError, match=r"^hydra.run.dir: holds a checkpoint of a different configuration"):
        train(cfg, ctx)


def test_fp16_on_cpu_is_a_warning_not_an_error(caplog):
    """It can be intended (fp16 numerics on a laptop), but it is far slower than fp32 there: one line."""
    import logging

    from cifarzoo.precision import FP16, AmpBF16

    with caplog.at_level(logging.WARNING, logger="cifarzoo"):
        AmpBF16().setup(torch.device("cpu"))
        assert caplog.records == []
        FP16().setup(torch.device("cpu"))
    (record,) = caplog.records
    assert record.levelname == "WARNING" and record.getMessage().startswith("precision=fp16 on CPU:")
    assert "\n" not in record.getMessage()


def test_unknown_experiment_is_refused_naming_the_experiments(make_cfg):
    """`+experiment=anything` used to train the default and log a junk param `experiment`."""
    from hydra import initialize_config_dir

    from cifarzoo.paths import REPO_DIR
    from cifarzoo.preflight import invalid_jobs

    with initialize_config_dir(config_dir=str(REPO_DIR / "conf"), version_base="1.3"):
        ((_, error),) = invalid_jobs([["data=fake", "+experiment=anything"]])
    assert "Could not find 'experiment/anything'" in error and "wrn28_10_ricap" in error and "\n" not in error
