"""`python -m cifarzoo.lr_find [overrides] [--start 1e-7 --end 10 --steps 100 --out lr_find.png --no-log]`:
the LR range test (Smith 2017, "Cyclical Learning Rates for Training Neural Networks", section 3.3),
with the conventions of fastai's `Learner.lr_find` (torch-lr-finder's where noted).

It composes the config as `run.py` does, builds the run's own parts (`cifarzoo.build.build_run`: a
fresh model from the config's seed, device-resident data, the configured augmentation, precision and
optimizer) and trains `--steps` steps with the run's real training step (`cifarzoo.steps`, eager or
CUDA graph as `train.step` chooses), cycling through the training split with a fresh permutation
whenever an epoch's batches are used up. Nothing is checkpointed and no other run's weights are
touched: a later run builds its own model from its config.

- LR: step i (0-based) of N trains at start * (end / start) ** (i / (N - 1)): `--start` at the first
  step, `--end` at the last (torch-lr-finder's exponential schedule; fastai's stops one step short
  of `end`). It replaces the configured schedule entirely, warmup included. Param groups keep their
  ratio to group 0 (each group's own LR is scaled); the LR reported is group 0's.
- Loss: the batch's training loss as the step computes it (after augmentation and mixing), smoothed
  by an exponential moving average with bias correction, beta 0.98 (fastai's Recorder;
  torch-lr-finder's `smooth_f=0.05` is the same average without the bias correction).
- Divergence (fastai's `stop_div` rule): the test stops once the smoothed loss exceeds 4x the best
  smoothed loss so far, or is not finite (torch-lr-finder's threshold is 5x).
- Suggestions, over the points without the first N // 10 and the last 5 (fastai's trim; all finite
  points when fewer than 2 are left): `steepest`, the LR where the smoothed loss falls fastest
  against log LR (argmin of `np.gradient(loss, log lr)`; torch-lr-finder's rule, whose gradient is
  over the step index: the same point for an exponential sweep), printed as `suggested lr: <value>`;
  and `min_loss/10`, the LR of the lowest smoothed loss divided by 10 (fastai's `minimum`).
- One process: a `train.distributed=true` config trains its global batch in this one process.
- AdaBound's `final_lr` follows the LR as in a run (x lr / optim.lr), so it is swept with it.

Why not torch-lr-finder (davidtvs/pytorch-lr-finder): its `range_test` runs its own step,
`criterion(model(inputs), labels)`, backward and `optimizer.step()`, on batches a DataLoader yields.
The run's step draws batches from device-resident data, augments and mixes them on the device (soft
targets, the recipe's own loss), calls SAM's closure twice, goes through the precision mode's
GradScaler, and may be one CUDA graph replay that reads the LR from a device tensor. Driving that
would mean overriding the library's private `_train_batch`, i.e. writing the loop anyway; what is
left of the library (the exponential LR, smoothing, the stop rule) is a few lines here.

Logged (unless `--no-log`) as its own MLflow run in `tracking.experiment`: tag `kind=lr_find`
(`analysis` and `python -m sweeps table` leave such runs out), the config's params as a run logs
them plus `lr_find.start/end/steps`, per-step metrics `lr`, `loss` and `smoothed_loss`, the
`suggested_lr` and `min_loss_lr` metrics, and the plot as an artifact. It carries no `config_hash`
tag (that is `lr_find.config_hash`), so a sweep never mistakes it for a finished run of the config.
"""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from cifarzoo.errors import ConfigError, is_int, is_number, require

if TYPE_CHECKING:
    from cifarzoo.build import BuiltRun

BETA = 0.98  # fastai's smoothing of the recorded loss
DIVERGE_FACTOR = 4.0  # fastai's stop rule: smoothed loss > 4 x the best so far
TRIM_END = 5  # fastai's suggestions leave out the last 5 points (and the first 10%)
PLOT_EXTENSIONS = (".png", ".svg", ".pdf")
KIND_TAG = ("kind", "lr_find")


class LRFindError(Exception):
    """The range test ran but gives no suggestion (one line)."""


@dataclass
class RangeTest:
    start: float
    end: float
    steps: int  # asked for
    lrs: list[float] = field(default_factory=list)  # group 0's LR at each step taken
    losses: list[float] = field(default_factory=list)  # each step's batch loss
    smoothed: list[float] = field(default_factory=list)
    diverged_at: int | None = None  # the step at which the stop rule fired


@dataclass(frozen=True)
class Suggestion:
    steepest: float  # the suggested LR
    min_loss_lr: float  # LR of the lowest smoothed loss / 10
    window: tuple[int, int]  # [first, last) steps the rules looked at


def check_sweep(start: float, end: float, steps: int) -> None:
    require(is_number(start) and math.isfinite(start) and start > 0, "--start", "must be a finite number > 0", start)
    require(is_number(end) and math.isfinite(end) and end > start, "--end", f"must be greater than --start {start:g}", end)
    require(is_int(steps) and steps >= 2, "--steps", "must be an int >= 2", steps)


def exponential_schedule(optimizer: torch.optim.Optimizer, start: float, end: float,
                         steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Group 0 from `start` to `end` over `steps` steps, geometrically; every other group at its
    configured ratio to group 0. Replaces whatever schedule the optimizer had."""
    groups = optimizer.param_groups
    configured = [g.get("initial_lr", g["lr"]) for g in groups]  # a schedule built on it set initial_lr
    for group, lr in zip(groups, configured):
        group["lr"] = group["initial_lr"] = start * lr / configured[0]
    ratio = end / start
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: ratio ** (min(i, steps - 1) / (steps - 1)))


class Smoother:
    """Exponential moving average with bias correction (fastai's `AvgSmoothLoss`)."""

    def __init__(self, beta: float = BETA) -> None:
        self.beta, self.average, self.count = beta, 0.0, 0

    def __call__(self, value: float) -> float:
        self.count += 1
        self.average = self.beta * self.average + (1 - self.beta) * value
        return self.average / (1 - self.beta**self.count)


def run_range_test(cfg: DictConfig, start: float, end: float, steps: int,
                   graph_on_cpu: bool = False) -> tuple[RangeTest, BuiltRun]:
    """Train the config's fresh model for up to `steps` steps at an exponentially growing LR with the
    run's own training step; returns the record and the built run (`cifarzoo.build.BuiltRun`)."""
    from cifarzoo.build import build_run, make_step

    check_sweep(start, end, steps)
    run = build_run(cfg, graph_on_cpu=graph_on_cpu)
    parts = run.parts
    parts.scheduler = exponential_schedule(parts.optimizer, start, end, steps)
    train_step = make_step(run.step, parts)  # the run's step kind, stepping the exponential schedule
    data, batch = parts.data, parts.settings.batch_size
    per_epoch = data.num_train // batch
    sums = torch.zeros(2, dtype=torch.float64, device=data.device)  # one tensor: a captured step adds to it
    record, smoother, best = RangeTest(start, end, steps), Smoother(), math.inf
    parts.model.train()
    perm = data.permutation(parts.generator)
    for i in range(steps):
        if i and i % per_epoch == 0:
            perm = data.permutation(parts.generator)
        j = i % per_epoch
        sums.zero_()
        lr = train_step(perm[j * batch : (j + 1) * batch], sums)
        loss = sums[0].item() / batch  # one host sync per step
        smoothed = smoother(loss)
        record.lrs.append(lr)
        record.losses.append(loss)
        record.smoothed.append(smoothed)
        best = min(best, smoothed)
        if not math.isfinite(smoothed) or smoothed > DIVERGE_FACTOR * best:
            record.diverged_at = i
            break
    return record, run


def suggest(record: RangeTest) -> Suggestion:
    """The steepest-descent LR and the min-loss/10 LR of the smoothed curve (see the module docstring)."""
    smoothed = np.asarray(record.smoothed, dtype=float)
    bad = np.flatnonzero(~np.isfinite(smoothed))
    finite = int(bad[0]) if bad.size else len(smoothed)  # the points before the first non-finite one
    first, last = record.steps // 10, min(finite, len(smoothed) - TRIM_END)
    if last - first < 2:
        first, last = 0, finite
    if last - first < 2:
        raise LRFindError(f"the loss diverged after {len(smoothed)} step(s), too early to suggest an LR; "
                          "lower --start or --end")
    lrs, loss = np.asarray(record.lrs[first:last], dtype=float), smoothed[first:last]
    slope = np.gradient(loss, np.log(lrs))
    return Suggestion(float(lrs[int(np.argmin(slope))]), float(lrs[int(np.argmin(loss))]) / 10, (first, last))


def plot(record: RangeTest, suggestion: Suggestion, out: Path, title: str) -> Path:
    """Smoothed loss against LR (log x), the suggestion marked; written by the file's extension."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    lrs, smoothed = np.asarray(record.lrs), np.asarray(record.smoothed)
    ax.plot(lrs, smoothed, color="tab:blue", label="smoothed loss")
    ax.plot(lrs, record.losses, color="tab:blue", alpha=0.25, linewidth=0.8, label="batch loss")
    at = int(np.argmin(np.abs(np.log(lrs) - math.log(suggestion.steepest))))
    ax.plot([suggestion.steepest], [smoothed[at]], "o", color="tab:red", label=f"steepest: {suggestion.steepest:.3g}")
    ax.axvline(suggestion.steepest, color="tab:red", linewidth=0.8)
    ax.axvline(suggestion.min_loss_lr, color="tab:green", linestyle="--", linewidth=0.8,
               label=f"min loss / 10: {suggestion.min_loss_lr:.3g}")
    if record.diverged_at is not None:
        ax.axvline(lrs[-1], color="0.5", linestyle=":", linewidth=0.8, label="stopped: diverged")
    finite, raw = smoothed[np.isfinite(smoothed)], np.asarray(record.losses)
    high = min(float(finite.max()), DIVERGE_FACTOR * float(finite.min()))  # the divergent tail would squash the curve
    low = min(float(finite.min()), float(raw[np.isfinite(raw)].min()))
    pad = 0.05 * (high - low) or 0.05 * abs(low) or 0.05
    ax.set_ylim(low - pad, high + pad)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (param group 0)")
    ax.set_ylabel("training loss")
    ax.set_title(textwrap.fill(title, 90), fontsize=8)
    ax.legend(fontsize=8)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150, bbox_inches="tight")
    return out


def log_run(cfg: DictConfig, choices: dict[str, str], overrides: Sequence[str], record: RangeTest,
            suggestion: Suggestion, figure: Path, run: BuiltRun) -> str:
    """The range test as its own MLflow run (tag kind=lr_find); returns its id."""
    from mlflow.entities import Metric

    from cifarzoo.config import config_hash, flatten
    from cifarzoo.models import count_parameters
    from cifarzoo.paths import default_tracking_uri
    from cifarzoo.provenance import provenance
    from cifarzoo.tracking import connect, log_params

    uri = cfg.tracking.uri or default_tracking_uri()
    client, experiment_id = connect(uri, cfg.tracking.experiment)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    params = {**flatten(resolved), **choices, "model.num_params": str(count_parameters(run.parts.model)),
              "lr_find.start": str(record.start), "lr_find.end": str(record.end), "lr_find.steps": str(record.steps)}
    tags = {KIND_TAG[0]: KIND_TAG[1], "overrides": " ".join(overrides), "lr_find.config_hash": config_hash(resolved),
            "train_step": run.step.kind, "train_step_reason": run.step.reason,
            "lr_find.stopped": "diverged" if record.diverged_at is not None else "steps", **provenance(run.device)}
    mlflow_run = client.create_run(experiment_id, run_name=("lr_find " + " ".join(overrides))[:250], tags=tags)
    run_id = mlflow_run.info.run_id
    log_params(client, run_id, params)
    now = int(mlflow_run.info.start_time)
    metrics = [Metric(name, value, now, i) for i, (lr, loss, smoothed) in
               enumerate(zip(record.lrs, record.losses, record.smoothed))
               for name, value in (("lr", lr), ("loss", loss), ("smoothed_loss", smoothed))]
    metrics += [Metric("suggested_lr", suggestion.steepest, now, 0), Metric("min_loss_lr", suggestion.min_loss_lr, now, 0)]
    for i in range(0, len(metrics), 1000):  # and at most 1000 metrics
        client.log_batch(run_id, metrics=metrics[i : i + 1000])
    client.log_text(run_id, OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
    client.log_artifact(run_id, str(figure))
    client.set_terminated(run_id, "FINISHED")
    return run_id


def lr_find(overrides: Sequence[str], start: float = 1e-7, end: float = 10.0, steps: int = 100,
            out: Path | str = "lr_find.png", log: bool = True, graph_on_cpu: bool = False) -> dict[str, object]:
    """Compose, run the range test, plot, log; the results as a dict (what `main` prints)."""
    from cifarzoo.compose import compose_with_choices, one_line_errors
    from cifarzoo.config import GROUPS, list_choices
    from cifarzoo.paths import default_tracking_uri
    from cifarzoo.tracking import check_reachable

    check_sweep(start, end, steps)
    out = Path(out)
    require(out.suffix.lower() in PLOT_EXTENSIONS, "--out", f"must end in {', '.join(PLOT_EXTENSIONS)}", str(out))
    with one_line_errors():
        cfg, all_choices = compose_with_choices(overrides)
        choices = {g: all_choices[g] for g in GROUPS if g in all_choices}
        choices.update(list_choices(list(overrides)))
    if log:  # an unreachable or mistyped store fails before training, not after
        check_reachable(cfg.tracking.uri or default_tracking_uri())
    record, run = run_range_test(cfg, start, end, steps, graph_on_cpu)
    suggestion = suggest(record)
    title = f"LR range test: {' '.join(overrides) or '(defaults)'}"
    figure = plot(record, suggestion, out, title)
    run_id = log_run(cfg, choices, overrides, record, suggestion, figure, run) if log else None
    return {"record": record, "suggestion": suggestion, "figure": figure, "run_id": run_id,
            "step": run.step.kind}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """Bad options, like bad overrides: one line and exit status 2."""
        print(f"cifarzoo: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(prog="python -m cifarzoo.lr_find",
                     description="LR range test (Smith 2017) with the run's own training step; see the module docstring.")
    parser.add_argument("--start", type=float, default=1e-7, help="first LR (default %(default)g)")
    parser.add_argument("--end", type=float, default=10.0, help="last LR (default %(default)g)")
    parser.add_argument("--steps", type=int, default=100, help="training steps, cycling through the data (default %(default)d)")
    parser.add_argument("--out", default="lr_find.png", help="the plot: .png, .svg or .pdf (default %(default)s)")
    parser.add_argument("--no-log", action="store_true", help="do not log an MLflow run")
    parser.add_argument("--tracking-uri", default=None, metavar="URI", help="the MLflow store (= tracking.uri=URI)")
    parser.add_argument("--experiment", default=None, metavar="NAME", help="its experiment (= tracking.experiment=NAME)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for run.py")
    args = parser.parse_intermixed_args(argv)
    from cifarzoo.cli import flags_as_words

    try:
        result = lr_find(args.overrides + flags_as_words(args.tracking_uri, args.experiment), args.start, args.end, args.steps, args.out, log=not args.no_log)
    except ConfigError as error:
        print(f"cifarzoo: error: {error}", file=sys.stderr)
        return 2
    except LRFindError as error:
        print(f"cifarzoo: error: {error}", file=sys.stderr)
        return 1
    record, suggestion = result["record"], result["suggestion"]
    taken = len(record.lrs)
    stop = (f"stopped at step {taken}/{record.steps}: the smoothed loss diverged ({record.smoothed[-1]:.4g}, "
            f"over {DIVERGE_FACTOR:g}x the best or not finite)" if record.diverged_at is not None else f"{taken} steps")
    print(f"lr range test: {record.start:g} -> {record.end:g}, {result['step']} step, {stop}")
    print(f"suggested lr: {suggestion.steepest:.3g}")
    print(f"min-loss/10 lr: {suggestion.min_loss_lr:.3g}")
    print(f"plot: {result['figure']}")
    if result["run_id"]:
        print(f"mlflow run: {result['run_id']} (tag kind=lr_find)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
