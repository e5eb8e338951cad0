"""The training loop: epochs over device-resident data, evaluation, checkpoints, resume.

It knows nothing of Hydra or MLflow: results leave through the `on_epoch` callback. In a
data-parallel run every rank runs it on its shard; metrics are summed over ranks, so every rank
reports (and stops on) the same numbers, and rank 0 writes the checkpoint with every rank's state."""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cifarzoo import checkpoint
from cifarzoo.aug import Recipe
from cifarzoo.data import DeviceData
from cifarzoo.distributed import Ranks
from cifarzoo.precision import Precision
from cifarzoo.progress import LossProbe, Progress, format_eta
from cifarzoo.steps import EagerStep, TrainStep

log = logging.getLogger("cifarzoo")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
CTRL_C_LINE = b"\ncifarzoo: Ctrl-C: stopping after a checkpoint at the next step (Ctrl-C again stops at once, without one)\n"
# Data-parallel ranks agree on a stop signal every this many steps (and at each epoch's last step):
# one tiny all-reduce and host sync, where a one-process run checks a Python flag every step.
STOP_CHECK_EVERY = 10


class Diverged(Exception):
    def __init__(self, epoch: int, what: str = "training loss") -> None:
        super().__init__(f"non-finite {what} in epoch {epoch}")
        self.epoch = epoch


class Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} after writing a checkpoint")
        self.signum = signum


class Requeued(Interrupted):
    """The signal's previous handler took over after the checkpoint and ended the process: in a
    SLURM job, submitit's timeout/preemption handler, which has requeued the job. The run goes
    on in the requeued job (same overrides, same output dir), resuming from the checkpoint."""

    def __init__(self, signum: int, code: Any) -> None:
        Exception.__init__(self, f"{signal.Signals(signum).name} after writing a checkpoint: "
                                 "handed to the job's own handler, which requeued the job")
        self.signum, self.code = signum, code


class StopSignals:
    """Turns SIGTERM/SIGINT/SIGUSR1/SIGUSR2 into a flag the loop checks between steps.

    Ctrl-C (SIGINT) stops as SIGTERM does, with one line on stderr at once; a second Ctrl-C raises
    KeyboardInterrupt wherever the run is (Python's default handler is back). A SIGINT ignored
    when the loop starts (a background job of a non-interactive shell) stays ignored.
    A handler installed before ours (submitit's, in a SLURM job) gets the signal after the
    checkpoint is written (`hand_over`); plain runs have the default handlers: nothing changes."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            os.write(2, CTRL_C_LINE)  # not print(): the signal may land inside a write to sys.stderr

    def hand_over(self) -> None:
        """Call the previous Python handler of the received signal, if there is one. If it ends
        the process (SystemExit: submitit has requeued the job), raise `Requeued` instead; if it
        returns (submitit logs and ignores SIGTERM), the caller stops as for a plain run."""
        signum = self.received
        previous = self._previous.get(signum) if signum is not None else None
        if not callable(previous) or previous is signal.default_int_handler:  # SIG_DFL / SIG_IGN / None / Ctrl-C's
            return
        log.info("handing %s to the handler installed before the loop's", signal.Signals(signum).name)
        try:
            previous(signum, None)
        except SystemExit as exit_:
            raise Requeued(signum, exit_.code) from None

    def __enter__(self) -> StopSignals:
        try:
            caught = [s for s in STOP_SIGNALS if not (s == signal.SIGINT and signal.getsignal(s) == signal.SIG_IGN)]
            self._previous = {s: signal.signal(s, self._handle) for s in caught}
        except ValueError:  # not the main thread: signals cannot be caught here
            self._previous = {}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


@dataclass
class LoopSettings:
    epochs: int
    batch_size: int
    eval_every: int
    eval_batch_size: int
    checkpoint_every: int


EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class Parts:
    """Everything a run trains with, built from its config (`cifarzoo.build.build_run`)."""

    settings: LoopSettings
    model: torch.nn.Module
    data: DeviceData
    aug: Recipe
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    precision: Precision
    generator: torch.Generator
    grad_clip: float | None = None
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None  # the model compiled, or None: the model
    ranks: Ranks = Ranks()
    train_forward: Callable[[torch.Tensor], torch.Tensor] | None = None  # DDP-wrapped forward, or None: forward
    train_step: TrainStep | None = None  # the step `train.step` chose (cifarzoo.steps), or None: the eager step


class Trainer:
    def __init__(self, parts: Parts, checkpoint_path: Path, checkpoint_extra: dict[str, Any],
                 on_epoch: EpochCallback) -> None:
        self.model, self.data, self.aug = parts.model, parts.data, parts.aug
        self.optimizer, self.scheduler, self.precision = parts.optimizer, parts.scheduler, parts.precision
        self.settings, self.generator, self.grad_clip = parts.settings, parts.generator, parts.grad_clip
        self.forward = parts.model if parts.forward is None else parts.forward
        self.train_forward = self.forward if parts.train_forward is None else parts.train_forward
        self.ranks = parts.ranks
        self.stepper = EagerStep(parts) if parts.train_step is None else parts.train_step
        self.checkpoint_path, self.checkpoint_extra, self.on_epoch = checkpoint_path, checkpoint_extra, on_epoch
        data, optimizer, settings = parts.data, parts.optimizer, parts.settings
        self.local_batch = settings.batch_size // self.ranks.world_size  # data.* is this rank's shard
        self.steps_per_epoch = data.num_train // self.local_batch
        # Progress: completed epochs, and the position inside the current one.
        self.epoch, self.step = 0, 0
        self.perm: torch.Tensor | None = None
        # This rank's loss sum, correct: one tensor for the whole run (a captured step adds to it in place).
        self.sums = torch.zeros(2, dtype=torch.float64, device=data.device)
        self.lr = optimizer.param_groups[0]["lr"]
        self.epoch_train_s = 0.0
        self.elapsed_s = 0.0
        self.final: dict[str, float] | None = None

    # -- checkpoints -----------------------------------------------------------------
    def rank_state(self) -> dict[str, Any]:
        """What differs between ranks: random streams, the shard's permutation, running sums."""
        return {
            "rng": checkpoint.rng_state(self.generator),
            "perm": None if self.perm is None else self.perm.cpu(),
            "sums": self.sums.cpu(),
        }

    def state_dict(self, rank_states: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The checkpoint: rank 0's model and optimizer (the same on every rank), progress, and
        every rank's `rank_state` (default: this process's alone)."""
        return {
            **self.checkpoint_extra,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "precision": self.precision.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "lr": self.lr,
            "epoch_train_s": self.epoch_train_s,
            "elapsed_s": self.elapsed_s,
            "final": self.final,
            "ranks": [self.rank_state()] if rank_states is None else rank_states,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from `state`; it must come from a run with as many processes as this one
        (`checkpoint.world_size` says how many)."""
        device = self.data.device
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.precision.load_state_dict(state["precision"])
        own = checkpoint.rank_states(state)[self.ranks.rank]
        checkpoint.restore_rng(own["rng"], self.generator)
        self.perm = None if own["perm"] is None else own["perm"].to(device)
        self.sums.copy_(own["sums"])
        self.epoch, self.step, self.lr = state["epoch"], state["step"], state["lr"]
        self.epoch_train_s, self.elapsed_s, self.final = state["epoch_train_s"], state["elapsed_s"], state["final"]

    def save(self) -> None:
        """Write the checkpoint atomically (rank 0); every rank must call it, at the same step."""
        rank_states = self.ranks.gather(self.rank_state())
        if rank_states is not None:
            checkpoint.save_atomic(self.state_dict(rank_states), self.checkpoint_path)

    # -- the loop ----------------------------------------------------------------------
    def fit(self, progress: Progress | None = None) -> dict[str, float]:
        """Train to `settings.epochs` from wherever the state is; return the last epoch's metrics.
        `progress`: what is shown inside each epoch (default: nothing)."""
        progress = Progress() if progress is None else progress
        with StopSignals() as stop:
            while self.final is None:
                self._run_epoch(stop, progress)
        return self.final

    def _run_epoch(self, stop: StopSignals, progress: Progress) -> None:
        s = self.settings
        start = time.perf_counter()
        self._train(stop, progress)
        epoch = self.epoch + 1
        count = self.steps_per_epoch * s.batch_size
        loss_sum, correct = self.ranks.sum_(self.sums.clone()).tolist()
        metrics = {
            "train_loss": loss_sum / count,
            "train_error": 100.0 * (1 - correct / count),
            "lr": self.lr,
            "epoch_time_s": self.epoch_train_s,
            "images_per_s": count / self.epoch_train_s,
        }
        if not math.isfinite(metrics["train_loss"]):
            self.on_epoch(epoch, metrics)
            raise Diverged(epoch)
        if epoch % s.eval_every == 0 or epoch == s.epochs:
            metrics["test_loss"], metrics["test_error"] = self.evaluate()
            if not math.isfinite(metrics["test_loss"]):  # huge but finite weights: the test logits overflow first
                self.on_epoch(epoch, metrics)
                raise Diverged(epoch, "test loss")
        self.epoch, self.step, self.perm = epoch, 0, None
        self.elapsed_s += time.perf_counter() - start
        if epoch == s.epochs:
            self.final = {**metrics, "train_time_s": self.elapsed_s}
        self.on_epoch(epoch, metrics)
        log.info(_epoch_line(epoch, s.epochs, metrics) + self._eta())
        if epoch % s.checkpoint_every == 0 or self.final is not None:
            self.save()

    def _eta(self) -> str:
        """`  ETA 1h02m`: the run's remaining epochs at its mean epoch time so far ('' after the last)."""
        left = self.settings.epochs - self.epoch
        return f"  ETA {format_eta(self.elapsed_s / self.epoch * left)}" if left and self.epoch else ""

    def _train(self, stop: StopSignals, progress: Progress) -> None:
        data = self.data
        if self.step == 0:
            self.perm = data.permutation(self.generator)
            self.sums.zero_()
            self.epoch_train_s = 0.0
        self.model.train()
        start = time.perf_counter()
        b = self.local_batch
        shown = progress.epoch(self.epoch + 1, self.settings.epochs, self.step, self.steps_per_epoch,
                               self.settings.batch_size, LossProbe(self.sums, b),
                               self.elapsed_s / self.epoch if self.epoch else None)
        try:
            for step in range(self.step, self.steps_per_epoch):
                self.train_step(self.perm[step * b : (step + 1) * b])
                self.step = step + 1
                shown.step(self.step)
                signum = self._stop_signal(stop)
                if signum is not None:
                    self.epoch_train_s += time.perf_counter() - start
                    self.elapsed_s += time.perf_counter() - start
                    self.save()
                    stop.hand_over()
                    raise Interrupted(signum)
        finally:
            shown.close()
        if data.device.type == "cuda":
            torch.cuda.synchronize(data.device)
        self.epoch_train_s += time.perf_counter() - start

    def _stop_signal(self, stop: StopSignals) -> int | None:
        """The stop signal this process must act on now: its own (one process), or the one any
        rank received, agreed every STOP_CHECK_EVERY steps so that all ranks stop at one step."""
        if self.ranks.world_size == 1:
            return stop.received
        if self.step % STOP_CHECK_EVERY and self.step < self.steps_per_epoch:
            return None
        received = torch.tensor([stop.received or 0], device=self.data.device)
        return int(self.ranks.max_(received).item()) or None

    def train_step(self, index: torch.Tensor) -> None:
        """One optimizer step on the training images at `index`, augmented on the device, by the run's
        step (`cifarzoo.steps`: eager, or replayed from a CUDA graph)."""
        self.lr = self.stepper(index, self.sums)

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """Test loss and error (%) over the whole test split (each rank its shard), without augmentation."""
        self.ranks.broadcast_buffers(self.model)
        self.model.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=self.data.device)  # loss sum, wrong, count
        for images, labels in self.data.test_batches(self.settings.eval_batch_size):
            with self.precision.autocast():
                logits = self.forward(self.data.normalize(images))
            sums[0] += F.cross_entropy(logits.float(), labels, reduction="sum")
            sums[1] += (logits.argmax(1) != labels).sum()
        sums[2] = len(self.data.test_x)
        loss_sum, wrong, n = self.ranks.sum_(sums).tolist()
        return loss_sum / n, 100.0 * wrong / n


def _epoch_line(epoch: int, epochs: int, m: dict[str, float]) -> str:
    line = f"epoch {epoch}/{epochs}  train loss {m['train_loss']:.4f} err {m['train_error']:5.2f}%"
    if "test_error" in m:
        line += f"  test loss {m['test_loss']:.4f} err {m['test_error']:5.2f}%"
    return line + f"  lr {m['lr']:.4g}  {m['epoch_time_s']:.1f}s  {m['images_per_s']:.0f} img/s"
