"""LR schedules of the `sched` group, applied per optimizer step as a factor of `optim.lr`.

Every option is a `Schedule` subclass: the subclass's `decay` is the main schedule, and the
base class adds the optional warmup (`sched.warmup`, `sched.warmup_epochs`, shared by every
option). The conventions follow hysts/pytorch_image_classification
(`pytorch_image_classification/scheduler/`):

- Warmup of W = `warmup_epochs * steps_per_epoch` steps, at step t < W the factor is
  `s + (1 - s) * (t / W) ** p` with `s = 1e-3` and `p = 1` (`linear`) or `p = 4`
  (`exponential`): hysts' `LinearScheduler` / `ExponentialScheduler` in `components.py` with
  its defaults `warmup.start_factor = 1e-3`, `warmup.exponent = 4`. ("exponential" is hysts'
  name; the ramp is a 4th power of the progress, not a geometric one.) The factor reaches 1 at
  step W, the first step of the main schedule. Unlike hysts, the exponential warmup is not
  multiplied by the base LR a second time (hysts passes `base_lr` into a LambdaLR factor).
- The main schedule is compressed into the steps after the warmup, as hysts' `create_scheduler`
  does (`main_epochs = epochs - warmup_epochs`): `decay` sees its own clock, step 0 being the
  first step after the warmup and `total_steps` the steps left after it. So `multistep`
  milestones and `sgdr` periods count epochs from the end of the warmup, and `cosine` /
  `linear` reach their floor at the end of the run.
- `linear_from_zero` is the tricks seed's warm-cosine warmup (pprp/pytorch-cifar-tricks,
  `GradualWarmupScheduler` with `multiplier=1`, Goyal et al. 2017): the same linear ramp with
  `s = 0`, so the first step trains at LR 0 and the factor is t / W. Deviations from that
  class: it ramps per step (the reference steps once per epoch), the main schedule is
  compressed into the epochs after the warmup (the reference passes the whole run as the
  cosine's `T_max`, counted from the end of the warmup, so its cosine does not reach 0), and the peak LR is not
  repeated for one extra epoch at the hand-over (the reference's `last_epoch > total_epoch`
  test holds the peak at epochs W and W + 1). Any option can follow it; `sched=cosine
  sched.warmup=linear_from_zero` is the warm-cosine. The reference's `warmcosine` was
  this warmup of 20 epochs + `CosineAnnealingLR(T_max=epochs)` when its tables were made
  (`utils/controler.py` at c6e3861, 2021-10-24, table 3.8); its HEAD builds
  `CosineAnnealingWarmRestarts(T_0=10, T_mult=2, eta_min=1e-4)` instead, the warmup commented
  out (that is `sched=sgdr sched.t0=10 sched.t_mult=2`, with a floor).
- `warmup: none` or `warmup_epochs: 0` means no warmup (as hysts' `_create_warmup`); then
  `warmup_epochs` is ignored and the main schedule runs over the whole run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from cifarzoo.errors import is_int, require

WARMUPS = ("none", "linear", "exponential", "linear_from_zero")


class Schedule:
    """Warmup (shared by every option) followed by the subclass's `decay`."""

    # (start factor s, exponent p) of each warmup: hysts' start_factor 1e-3 and exponent 1 or 4,
    # and the tricks seed's GradualWarmupScheduler (multiplier 1) ramping from 0
    WARMUP_RAMP = {"linear": (1e-3, 1), "exponential": (1e-3, 4), "linear_from_zero": (0.0, 1)}

    def __init__(self, warmup: str = "none", warmup_epochs: int = 0) -> None:
        require(warmup in WARMUPS, "sched.warmup", "must be none, linear, exponential or linear_from_zero", warmup)
        require(is_int(warmup_epochs) and warmup_epochs >= 0, "sched.warmup_epochs", "must be an int >= 0", warmup_epochs)
        self.warmup, self.warmup_epochs = warmup, warmup_epochs

    def active_warmup_epochs(self) -> int:
        """Warmup epochs in effect: 0 for `warmup: none` whatever `warmup_epochs` says."""
        return 0 if self.warmup == "none" else self.warmup_epochs

    def decay(self, step: int, steps_per_epoch: int, total_steps: int) -> float:
        """The main schedule's factor at `step` of its own `total_steps` (counted after the warmup)."""
        raise NotImplementedError

    def check(self, main_epochs: int) -> None:
        """Raise a ConfigError if the options cannot run over `main_epochs` (the epochs after the warmup)."""

    def factor(self, step: int, steps_per_epoch: int, total_steps: int) -> float:
        """The LR multiplier of `optim.lr` at optimizer step `step` (0-based) of the run."""
        warmup_steps = self.active_warmup_epochs() * steps_per_epoch
        if step < warmup_steps:
            s, p = self.WARMUP_RAMP[self.warmup]
            return s + (1 - s) * (step / warmup_steps) ** p
        return self.decay(step - warmup_steps, steps_per_epoch, total_steps - warmup_steps)

    def build(self, optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
        warmup_epochs = self.active_warmup_epochs()
        require(warmup_epochs < epochs, "sched.warmup_epochs", f"must be less than train.epochs ({epochs})", warmup_epochs)
        self.check(epochs - warmup_epochs)
        total = steps_per_epoch * epochs
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: self.factor(step, steps_per_epoch, total))


def _check_floor(lr_min_factor: float) -> float:
    require(0 <= lr_min_factor <= 1, "sched.lr_min_factor", "must be in [0, 1]", lr_min_factor)
    return float(lr_min_factor)


class Constant(Schedule):
    """`optim.lr` throughout (after the warmup, if any)."""

    def __init__(self, warmup: str = "none", warmup_epochs: int = 0) -> None:
        super().__init__(warmup, warmup_epochs)

    def decay(self, step: int, steps_per_epoch: int, total_steps: int) -> float:
        return 1.0


class Cosine(Schedule):
    """Cosine annealing without restarts (Loshchilov & Hutter), from 1 to `lr_min_factor`."""

    def __init__(self, lr_min_factor: float = 0.0, warmup: str = "none", warmup_epochs: int = 0) -> None:
        super().__init__(warmup, warmup_epochs)
        self.lr_min_factor = _check_floor(lr_min_factor)

    def decay(self, step: int, steps_per_epoch: int, total_steps: int) -> float:
        cosine = 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
        return self.lr_min_factor + (1 - self.lr_min_factor) * cosine


class Linear(Schedule):
    """Linear decay per step from 1 to `lr_min_factor`, reached after the run's last step."""

    def __init__(self, lr_min_factor: float = 0.0, warmup: str = "none", warmup_epochs: int = 0) -> None:
        super().__init__(warmup, warmup_epochs)
        self.lr_min_factor = _check_floor(lr_min_factor)

    def decay(self, step: int, steps_per_epoch: int, total_steps: int) -> float:
        return 1 - (1 - self.lr_min_factor) * min(step, total_steps) / total_steps


class MultiStep(Schedule):
    """Multiply the LR by `gamma` at the start of each epoch listed in `milestones`."""

    def __init__(
        self, milestones: Sequence[int] = (100, 150), gamma: float = 0.1, warmup: str = "none", warmup_epochs: int = 0,
    ) -> None:
        super().__init__(warmup, warmup_epochs)
        milestones = list(milestones)
        require(
            all(isinstance(m, int) and m > 0 for m in milestones) and milestones == sorted(milestones),
            "sched.milestones", "must be increasing positive epochs", milestones,
        )
        require(0 < gamma <= 1, "sched.gamma", "must be in (0, 1]", gamma)
        self.milestones, self.gamma = milestones, float(gamma)

    def check(self, main_epochs: int) -> None:
        """A milestone the run never reaches would leave the LR constant where a decay was meant."""
        after = " after the warmup" if self.active_warmup_epochs() else ""
        require(not self.milestones or self.milestones[-1] < main_epochs, "sched.milestones",
                f"must be epochs the run reaches: less than its {main_epochs} epochs{after} (train.epochs)", self.milestones)

    def decay(self, step: int, steps_per_epoch: int, total_steps: int) -> float:
        epoch = step // steps_per_epoch
        return self.gamma ** sum(epoch >= m for m in self.milestones)


class SGDR(Schedule):
    """Cosine annealing with warm restarts (Loshchilov & Hutter 2017, arXiv:1608.03983).

    Periods of `t0`, `t0 * t_mult`, `t0 * t_mult**2`, ... epochs; inside a period the factor
    anneals per step from 1 to `lr_min_factor`, and at the first step of the next period it is
    back at 1. The periods must end exactly at the end of the run (as hysts' `SGDRScheduler`
    asserts), so the last epoch ends annealed.
    """

    def __init__(
        self, t0: int = 10, t_mult: int = 1, lr_min_factor: float = 0.0, warmup: str = "none", warmup_epochs: int = 0,
    ) -> None:
        super().__init__(warmup, warmup_epochs)
        require(is_int(t0) and t0 >= 1, "sched.t0", "must be an int >= 1 (epochs)", t0)
        require(is_int(t_mult) and t_mult >= 1, "sched.t_mult", "must be an int >= 1", t_mult)
        self.t0, self.t_mult = t0, t_mult
        self.lr_min_factor = _check_floor(lr_min_factor)
        self._ends: dict[int, list[int]] = {}

    def period_ends(self, epochs: int) -> list[int]:
        """Epochs (after the warmup) at which the periods end, up to the first end >= `epochs`."""
        if epochs not in self._ends:
            ends, period = [self.t0], self.t0
            while ends[-1] < epochs:
                period *= self.t_mult
                ends.append(ends[-1] + period)
            self._ends[epochs] = ends
        return self._ends[epochs]

    def check(self, main_epochs: int) -> None:
        ends = self.period_ends(main_epochs)
        shown = ", ".join(map(str, ends if len(ends) <= 8 else [*ends[:5], "...", *ends[-2:]]))
        require(
            ends[-1] == main_epochs, "sched.t0",
            f"periods t0 * t_mult**k must end exactly at the end of the {main_epochs} epochs after warmup "
            f"(they end at epochs {shown})", self.t0,
        )

    def decay(self, step: int, steps_per_epoch: int, total_steps: int) -> float:
        epochs = max(-(-total_steps // steps_per_epoch), 1)
        start = 0
        for end in self.period_ends(epochs):
            if step < end * steps_per_epoch or end >= epochs:
                break
            start = end
        length = (end - start) * steps_per_epoch
        progress = min(step - start * steps_per_epoch, length) / length
        return self.lr_min_factor + (1 - self.lr_min_factor) * 0.5 * (1 + math.cos(math.pi * progress))
