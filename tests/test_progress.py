"""Feedback on long work: progress inside an epoch (lines in logs, a tqdm bar on a terminal), the
run's ETA on each epoch line, and `k/N done, ETA` as a multirun's jobs end."""

from __future__ import annotations

import logging
import re
import time

import torch

from cifarzoo.callbacks import SweepCallbacks
from cifarzoo.progress import LossProbe, Progress, format_eta
from cifarzoo.sweep import write_outcome
from cifarzoo.task import train

SMALL = ("model.depth=8", "data.train_size=256", "data.test_size=64", "train.batch_size=32")
PROGRESS_LINE = re.compile(r"epoch (\d)/2  step (\d+)/8 \(\d+%\)  train loss (\S+)  \d+ img/s  ETA epoch \S+, run (\S+)$")


def test_format_eta():
    assert [format_eta(s) for s in (3720, 245, 12.4, 0)] == ["1h02m", "4m05s", "12s", "0s"]
    assert format_eta(float("inf")) == "?"


def test_without_a_terminal_each_epoch_logs_progress_lines_and_each_epoch_line_the_runs_eta(
        make_run, caplog, one_thread):
    """Under pytest stdout is not a terminal: `auto` is lines. Interval 0: a line after every step."""
    cfg, ctx = make_run(*SMALL, "train.progress_every_s=0")
    with caplog.at_level(logging.INFO, logger="cifarzoo"):
        train(cfg, ctx)
    messages = [r.getMessage() for r in caplog.records]
    lines = [m for m in messages if PROGRESS_LINE.match(m)]
    assert [PROGRESS_LINE.match(m).group(1, 2) for m in lines] == [(e, str(s)) for e in "12" for s in range(1, 9)]
    for line in lines:
        assert re.search(r"ETA epoch (\d+s|\?), run (\d+s|\d+m\d\ds|\?)$", line), line
    epoch_lines = [m for m in messages if re.match(r"epoch \d/2  train loss", m)]
    assert re.search(r"  ETA \d+s$", epoch_lines[0]), epoch_lines[0]  # one epoch left
    assert "ETA" not in epoch_lines[1]  # the last one: nothing left
    # The loss a line shows is the epoch's running mean: after its last step, the epoch's train loss.
    last = PROGRESS_LINE.match(lines[7]).group(3)
    assert last == re.search(r"train loss (\S+)", epoch_lines[0]).group(1)


def test_progress_off_logs_nothing_inside_epochs(make_run, caplog, one_thread):
    cfg, ctx = make_run(*SMALL, "train.epochs=1", "train.progress=off", "train.progress_every_s=0")
    with caplog.at_level(logging.INFO, logger="cifarzoo"):
        train(cfg, ctx)
    assert not [r for r in caplog.records if "step " in r.getMessage()]


def test_the_bar_is_tqdms_with_images_per_s_loss_and_the_runs_eta(capsys):
    progress = Progress("bar", every_s=0)
    sums = torch.zeros(2, dtype=torch.float64)
    epoch = progress.epoch(2, 5, 0, 4, 32, LossProbe(sums, 32), epoch_s=60.0)
    for step in range(1, 5):
        sums[0] += 32 * 1.5  # a loss of 1.5 per image
        time.sleep(0.01)
        epoch.step(step)
    epoch.close()
    err = capsys.readouterr().err
    assert "epoch 2/5:" in err and "img/s" in err and "loss 1.5000" in err
    assert re.search(r"run ETA 3m\d\ds", err), err  # 3 epochs of 60 s after this one


def test_the_loss_probe_reads_a_copy_of_the_sums_never_the_device_tensor_itself():
    sums = torch.tensor([64.0, 0.0], dtype=torch.float64)
    probe = LossProbe(sums, images_per_step=32)
    assert probe.read(2) == 1.0
    sums[0] = 640.0
    assert probe.read(2) == 10.0
    assert probe.host.data_ptr() != sums.data_ptr()


def test_each_finished_job_of_a_multirun_prints_k_of_n_done_and_an_eta(tmp_path, capsys):
    callbacks = SweepCallbacks()
    callbacks.sweep_dir, callbacks.total, callbacks.started_at = tmp_path, 4, time.time() - 120
    write_outcome(tmp_path / "0", "finished")
    callbacks.on_job_end(config=None)
    write_outcome(tmp_path / "1", "diverged")
    callbacks.on_job_end(config=None)
    out = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"cifarzoo sweep: 1/4 done, ETA 6m0\ds", out[0]), out  # 120 s a job, 3 left
    assert re.fullmatch(r"cifarzoo sweep: 2/4 done, ETA 2m0\ds", out[1]), out


def test_other_ranks_show_no_progress():
    from omegaconf import OmegaConf

    from cifarzoo.progress import progress_from_config

    for mode in ("bar", "lines", "auto"):
        assert progress_from_config(OmegaConf.create({"progress": mode}), shown=False).mode == "off"
