"""Feedback inside an epoch: a tqdm bar over the epoch's steps on a terminal, periodic plain lines
in logs (SLURM, CI, `> file`), or nothing.

`train.progress`: `auto` (a bar when stdout and stderr are both terminals, else lines), `bar`,
`lines` or `off`; `train.progress_every_s`: seconds between two lines. Each shows images/s, the
epoch's running training loss, and the ETA of the epoch and of the run. Only rank 0 of a
data-parallel run shows progress.

The loss is read at the display's rate, not every step, and without stalling the device: a read
starts a non-blocking copy of the running sums into host memory and shows the last copy that has
landed (`LossProbe`), so the training step stays free of host syncs (the CUDA-graph step too)."""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack

import torch
from omegaconf import DictConfig

from cifarzoo.errors import is_number, require

log = logging.getLogger("cifarzoo")

BAR_REFRESH_S = 0.5  # the bar's redraws and loss reads


def format_eta(seconds: float) -> str:
    """`1h02m`, `4m05s`, `12s`; `?` while unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class LossProbe:
    """The epoch's running mean training loss, from the loop's running sums (loss sum, correct) of
    this rank's `images_per_step` images a step."""

    def __init__(self, sums: torch.Tensor, images_per_step: int) -> None:
        self.sums, self.images_per_step = sums, images_per_step
        cuda = sums.device.type == "cuda"
        self.host = torch.zeros(sums.shape, dtype=sums.dtype, pin_memory=cuda)
        self.landed = torch.cuda.Event() if cuda else None
        self.in_flight = 0  # steps summed in the copy under way (0: none)
        self.value: float | None = None

    def read(self, steps: int) -> float | None:
        """The loss after the latest copy that has landed (None: none yet); starts a copy of the
        sums after `steps` steps."""
        if self.in_flight and (self.landed is None or self.landed.query()):
            self.value = float(self.host[0]) / (self.in_flight * self.images_per_step)
            self.in_flight = 0
        if not self.in_flight and steps:
            self.host.copy_(self.sums, non_blocking=True)
            self.in_flight = steps
            if self.landed is None:  # CPU: the copy is done
                return self.read(0)
            self.landed.record()
        return self.value


class EpochProgress:
    """One epoch's feedback. `step(n)` after each step (cheap: a clock read); `close()` at the end."""

    def __init__(self, epoch: int, epochs: int, first_step: int, steps: int, images_per_step: int,
                 probe: LossProbe, epoch_s: float | None, every_s: float) -> None:
        self.epoch, self.epochs, self.first_step, self.steps = epoch, epochs, first_step, steps
        self.images_per_step, self.probe, self.epoch_s, self.every_s = images_per_step, probe, epoch_s, every_s
        self.start = self.last = time.perf_counter()

    def step(self, step: int) -> None:
        now = time.perf_counter()
        if now - self.last >= self.every_s:
            self.last = now
            self.show(step, now - self.start)

    def figures(self, step: int, elapsed: float) -> tuple[float, str, float, float]:
        """Images/s, running loss, ETA of the epoch and of the run (s) after `step` steps."""
        rate = (step - self.first_step) / elapsed if elapsed > 0 else 0.0
        epoch_left = (self.steps - step) / rate if rate else math.inf
        per_epoch = self.epoch_s if self.epoch_s is not None else (self.steps / rate if rate else math.inf)
        run_left = epoch_left + (self.epochs - self.epoch) * per_epoch
        loss = self.probe.read(step)
        return rate * self.images_per_step, "..." if loss is None else f"{loss:.4f}", epoch_left, run_left

    def show(self, step: int, elapsed: float) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class LineProgress(EpochProgress):
    """A log line every `every_s` seconds."""

    def show(self, step: int, elapsed: float) -> None:
        images_s, loss, epoch_left, run_left = self.figures(step, elapsed)
        log.info("epoch %d/%d  step %d/%d (%d%%)  train loss %s  %.0f img/s  ETA epoch %s, run %s",
                 self.epoch, self.epochs, step, self.steps, 100 * step // self.steps, loss, images_s,
                 format_eta(epoch_left), format_eta(run_left))


class BarProgress(EpochProgress):
    """tqdm's bar over the epoch's images (its rate and remaining time are the epoch's), with the
    loss and the run's ETA after it; log lines go above the bar while it is shown."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        self.stack = ExitStack()
        self.stack.enter_context(logging_redirect_tqdm())
        self.bar = self.stack.enter_context(tqdm(
            total=self.steps * self.images_per_step, initial=self.first_step * self.images_per_step,
            desc=f"epoch {self.epoch}/{self.epochs}", unit="img", unit_scale=True, leave=False,
            file=sys.stderr, mininterval=self.every_s, dynamic_ncols=True))
        self.shown = self.first_step

    def show(self, step: int, elapsed: float) -> None:
        _, loss, _, run_left = self.figures(step, elapsed)
        self.bar.set_postfix_str(f"loss {loss}, run ETA {format_eta(run_left)}", refresh=False)
        self.bar.update((step - self.shown) * self.images_per_step)
        self.shown = step

    def close(self) -> None:
        self.stack.close()


class NoProgress(EpochProgress):
    def step(self, step: int) -> None:
        pass


MODES: dict[str, Callable[..., EpochProgress]] = {"bar": BarProgress, "lines": LineProgress, "off": NoProgress}


class Progress:
    """Starts each epoch's feedback in the run's mode (`train.progress`; `auto` is resolved here)."""

    def __init__(self, mode: str = "off", every_s: float = 30.0) -> None:
        if mode == "auto":
            mode = "bar" if sys.stdout.isatty() and sys.stderr.isatty() else "lines"
        self.mode, self.start, self.every_s = mode, MODES[mode], every_s
        self.bar = mode == "bar"

    def epoch(self, epoch: int, epochs: int, first_step: int, steps: int, images_per_step: int,
              probe: LossProbe, epoch_s: float | None) -> EpochProgress:
        """`images_per_step`: over all ranks; `epoch_s`: the mean time of the run's completed
        epochs (evaluation included), if any."""
        every_s = min(self.every_s, BAR_REFRESH_S) if self.bar else self.every_s
        return self.start(epoch, epochs, first_step, steps, images_per_step, probe, epoch_s, every_s)


def progress_from_config(train: DictConfig, shown: bool = True) -> Progress:
    """The run's `Progress` from `train.progress` / `train.progress_every_s` (`shown=False`: off,
    for ranks other than 0). Raises ConfigError on a bad value."""
    mode, every_s = train.get("progress", "auto"), train.get("progress_every_s", 30)
    require(isinstance(mode, str) and (mode == "auto" or mode in MODES), "train.progress", f"must be one of auto, {', '.join(MODES)}", mode)
    require(is_number(every_s) and every_s >= 0, "train.progress_every_s", "must be a number of seconds >= 0", every_s)
    return Progress(mode if shown else "off", float(every_s))
