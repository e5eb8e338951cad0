"""One run: config -> build -> loop -> tracker. `run.py` calls `main`; tests call `train`."""

from __future__ import annotations

import logging
import math
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from cifarzoo import checkpoint, distill
from cifarzoo.build import build_run, resolve_device
from cifarzoo.checkpoint import CHECKPOINT_FILE, PREVIOUS_FILE, CheckpointError
from cifarzoo.config import GROUPS, choice_name, config_hash, flatten, list_choices
from cifarzoo.distributed import Ranks, RankZeroFailed, connect
from cifarzoo.errors import ConfigError
from cifarzoo.exits import BAD_CONFIG, DIVERGED, rerun_command
from cifarzoo.jobdir import FoundDir
from cifarzoo.loop import Diverged, EpochCallback, Interrupted, Parts, Requeued, Trainer
from cifarzoo.models import count_parameters
from cifarzoo.paths import default_tracking_uri
from cifarzoo.progress import Progress, progress_from_config
from cifarzoo.provenance import provenance
from cifarzoo.runlock import RunLock, RunLocked, describe, holder
from cifarzoo.sweep import Decision, decide, write_outcome
from cifarzoo.tracking import (OUTBOX_FILE, RUN_FILE, Tracker, TrackingLost, TrackingUnavailable, first_line,
                               recorded_run, sqlite_path, system_metrics_interval, wait_reachable)

log = logging.getLogger("cifarzoo")


@dataclass
class RunContext:
    """What Hydra knows about the run beyond its config."""

    output_dir: Path
    choices: dict[str, str] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    sweep: str = ""

    @classmethod
    def from_hydra(cls) -> RunContext:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
        return cls.from_hydra_config(hc, Path(hc.runtime.output_dir))

    @classmethod
    def from_hydra_config(cls, hc: DictConfig, output_dir: Path) -> RunContext:
        """From the `hydra` node of a composed config (also what tests compose)."""
        from hydra.types import RunMode

        choices = {g: choice_name(hc.runtime.choices[g]) for g in GROUPS if g in hc.runtime.choices}
        choices.update(list_choices(list(hc.overrides.task)))
        sweep = str(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else ""
        return cls(output_dir, choices, list(hc.overrides.task), sweep)


def main(cfg: DictConfig) -> float:
    """Hydra task: bad configuration exits with one line on stderr, before any training (exit 2);
    a diverged run exits 3, a stopped one 128+signal (`cifarzoo.exits`). In a multirun, a run
    that fails or diverges is recorded (MLflow FAILED + its outcome) and the sweep goes on; the
    end-of-sweep summary counts it and sets the sweep's exit code."""
    ctx = RunContext.from_hydra()
    found = FoundDir.look(ctx.output_dir)  # before this job writes there (Hydra already has)
    _pin_gpu(cfg)
    try:
        return _main(cfg, ctx, found)
    finally:
        if cfg.get("plan", False) and not ctx.sweep:  # a plan writes nothing: Hydra's fresh run dir goes
            found.leave(single_run=True)


def _main(cfg: DictConfig, ctx: RunContext, found: FoundDir) -> float:
    try:
        backend = "nccl" if resolve_device(cfg.train.device).type == "cuda" else "gloo"
        return train(cfg, ctx, connect(cfg.train.distributed, backend), found)
    except ConfigError as error:
        found.leave(single_run=not ctx.sweep)  # a refused job leaves no trace in its dir
        print(f"cifarzoo: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except Diverged:  # recorded and logged
        if ctx.sweep:
            return math.nan
        raise SystemExit(DIVERGED) from None
    except RankZeroFailed:  # rank 0 reports it
        raise SystemExit(1) from None
    except (CheckpointError, TrackingLost) as error:  # one line: what failed, where, and the way out
        if not ctx.sweep:
            print(f"cifarzoo: error: {error}", file=sys.stderr)
            raise SystemExit(1) from None
        log.error("run failed: %s; the sweep goes on", error)
        return math.nan
    except Exception:
        if not ctx.sweep:
            raise
        log.exception("run failed; the sweep goes on")
        return math.nan


def _pin_gpu(cfg: DictConfig) -> None:
    """Under `hydra/launcher=local_parallel`, job k trains on visible GPU k mod #GPUs. joblib reuses
    its worker processes, so a device index (not CUDA_VISIBLE_DEVICES, fixed once CUDA starts in a
    worker) is what can differ from job to job."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    if "joblib" not in str(hc.launcher.get("_target_", "")) or cfg.train.device not in ("auto", "cuda"):
        return
    import torch

    if torch.cuda.is_available():
        with open_dict(cfg):
            cfg.train.device = f"cuda:{hc.job.num % torch.cuda.device_count()}"


def train(cfg: DictConfig, ctx: RunContext, ranks: Ranks = Ranks(), found: FoundDir | None = None) -> float:
    """Train one configuration; return the test error (%) at the last epoch (NaN if failed before
    or only planned). A diverged run raises `Diverged` once recorded (MLflow FAILED, outcome
    `diverged`); a stop signal raises SystemExit(128+n) after a checkpoint and one line naming
    the command that resumes it. In a data-parallel run every rank calls this; rank 0 decides
    what to do and where, and alone writes the MLflow run, checkpoints and outcome. `found`: the
    job's output dir as the job found it (a job that does not train in a dir holding a run, a
    skip or a plan of that run, leaves it as found)."""
    found = found or FoundDir.look(ctx.output_dir)
    if not ranks.is_main:
        log.setLevel(logging.WARNING)  # one progress line per epoch, rank 0's
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["train"]["world_size"] = ranks.world_size  # more processes = smaller per-process BN batches
    chash = config_hash(distill.identity(resolved, distill.find_teacher(cfg)))  # a bad teacher: one line, here
    uri = cfg.tracking.uri or default_tracking_uri()
    record = write_outcome if ranks.is_main else lambda *args: None
    held: list[RunLock] = []  # rank 0's lock on the run dir, for the life of the run
    try:
        decision, run_dir, main_dir = ranks.from_main(
            lambda: _decide_where(cfg, ctx, uri, chash, ranks.world_size, held))
    except TrackingUnavailable as error:  # in a sweep: this job fails after tracking.wait_s, the sweep goes on
        if not ctx.sweep:
            raise
        log.error("run failed: %s", error)
        record(ctx.output_dir, "failed", str(error))
        return math.nan
    here = run_dir == ctx.output_dir and decision.action in ("run", "resume") and not cfg.get("plan", False)
    as_found = ranks.is_main and not here and not found.fresh  # a skip or plan of the run this dir holds
    if ranks.is_main and here:
        found.claim()
    if as_found:
        record = lambda *args: None  # noqa: E731
    try:
        return _run(cfg, ctx, ranks, decision, run_dir, main_dir, resolved, chash, uri, record)
    finally:
        for lock in held:
            lock.release()
        if as_found:
            found.put_back(logs=not decision.running_elsewhere)


def _run(cfg: DictConfig, ctx: RunContext, ranks: Ranks, decision: Decision, run_dir: Path, main_dir: Path,
         resolved: dict, chash: str, uri: str, record: Callable[..., None]) -> float:
    if ctx.output_dir != main_dir:  # torchrun: a rank's own Hydra dir (SLURM tasks share rank 0's)
        _remove_launcher_dir(ctx.output_dir)
    if decision.running_elsewhere and run_dir == ctx.output_dir:  # never write into a dir another process holds
        record = lambda *args: None  # noqa: E731
    if cfg.get("plan", False):
        action, reason = _planned(cfg, decision)
        if ranks.is_main:
            print(f"plan: {action:6s} {' '.join(ctx.overrides) or '(defaults)'}: {reason}", flush=True)
        record(ctx.output_dir, f"plan-{action}", reason)
        if action == "invalid" and not ctx.sweep:  # as a multirun plan with an invalid job exits
            raise SystemExit(BAD_CONFIG)
        return math.nan
    if decision.action == "skip":
        log.info("skipped: %s", decision.reason)
        kind = "skipped-running" if decision.running_elsewhere else "skipped-failed" if decision.failed_before else "skipped"
        record(ctx.output_dir, kind, decision.reason)
        return decision.test_error
    try:
        error = _train_in(cfg, ctx, run_dir, resolved, chash, uri, ranks)
    except Diverged as diverged:
        record(ctx.output_dir, "diverged", str(diverged))
        raise
    except Interrupted as stop:  # a stop signal after a checkpoint: rerunning resumes it
        record(ctx.output_dir, "interrupted", f"exit {128 + stop.signum}")
        if ranks.is_main:
            log.warning("%s; %s", stop, _how_to_resume(ctx, run_dir))
        raise SystemExit(128 + stop.signum) from None
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside the training loop
        record(ctx.output_dir, "interrupted", "KeyboardInterrupt")
        if ranks.is_main and checkpoint.exists(run_dir):
            log.warning("stopped at once by Ctrl-C: the steps since the last checkpoint are lost; %s",
                        _how_to_resume(ctx, run_dir))
        raise
    except SystemExit as stop:  # requeued (SLURM): the requeued job resumes it
        record(ctx.output_dir, "interrupted", f"exit {stop.code}")
        raise
    except BaseException as failure:
        record(ctx.output_dir, "failed", f"{type(failure).__name__}: {failure}")
        raise
    outcome = "failed" if math.isnan(error) else ("resumed" if decision.action == "resume" else "finished")
    record(ctx.output_dir, outcome, decision.reason)
    return error


def plan_job(cfg: DictConfig, overrides: list[str], output_dir: Path, world_size: int = 1) -> Decision:
    """What a job of a multirun would do, decided before it is launched (the sweep's callback, for
    `+plan=true` and for a rerun whose every job is skipped): as `train` decides, without a dir,
    a lock or a write. `invalid` (with the error) for a job that would be refused."""
    ctx = RunContext(output_dir, overrides=list(overrides), sweep=str(output_dir.parent))
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["train"]["world_size"] = world_size
    try:
        chash = config_hash(distill.identity(resolved, distill.find_teacher(cfg)))
        uri = cfg.tracking.uri or default_tracking_uri()
        decision = _decide(cfg, ctx, uri, chash)
        if decision.action == "resume" and not cfg.get("restart", False):
            refused = _refusal(decision.output_dir or output_dir, uri, chash, world_size)
            if refused is not None:
                return Decision("invalid", str(refused))
    except ConfigError as error:
        return Decision("invalid", str(error))
    return decision


def _how_to_resume(ctx: RunContext, run_dir: Path) -> str:
    if ctx.sweep:
        return "rerunning the sweep's command resumes it"
    return f"to resume: {rerun_command([*ctx.overrides, f'hydra.run.dir={run_dir}'])}"


def _planned(cfg: DictConfig, decision: Decision) -> tuple[str, str]:
    """What `+plan=true` reports: `invalid` and the error for a job that would not start."""
    from cifarzoo.preflight import build_on_meta

    try:
        build_on_meta(cfg)
    except ConfigError as error:
        return "invalid", str(error)
    return decision.action, decision.reason


def _decide_where(cfg: DictConfig, ctx: RunContext, uri: str, chash: str, world_size: int,
                  held: list[RunLock]) -> tuple[Decision, Path, Path]:
    """What to do, the dir the run trains in, and this job's output dir (rank 0's). A resume into
    a dir that holds another run is refused here, with the ConfigError the run would end with (a
    plan reports it as `invalid`). A run that will train takes the run dir's lock (into `held`)
    first; if another live process holds it, the job is skipped as running elsewhere."""
    wait_reachable(uri, float(cfg.tracking.get("wait_s", 120)) if ctx.sweep else 0.0)
    decision = _decide(cfg, ctx, uri, chash)
    run_dir = decision.output_dir or ctx.output_dir
    resumes = decision.action == "resume" and not cfg.get("restart", False)
    refused = _refusal(run_dir, uri, chash, world_size) if resumes else None
    if refused is not None:
        if not cfg.get("plan", False):
            raise refused
        return Decision("invalid", str(refused)), run_dir, ctx.output_dir
    if decision.action in ("run", "resume") and not cfg.get("plan", False):
        try:
            for lock in (RunLock(run_dir), *_claim(uri, cfg.tracking.experiment, chash, cfg.seed, run_dir)):
                lock.acquire()
                held.append(lock)
        except RunLocked as error:  # the run dir's lock, or the claim of another dir training this configuration
            held_dir = Path(error.record["run_dir"]) if isinstance(error.record.get("run_dir"), str) else run_dir
            return Decision("skip", str(error), output_dir=held_dir, running_elsewhere=True), held_dir, ctx.output_dir
        if decision.action == "run":  # decided before the claim: a twin may have finished meanwhile
            again = _decide(cfg, ctx, uri, chash)
            if again.action == "skip":
                return again, run_dir, ctx.output_dir
        for path in checkpoint.remove_stale_temp_files(run_dir):
            log.info("removed %s, left by a save that did not finish", path.name)
        if cfg.get("restart", False):
            _start_over(run_dir, uri)
    return decision, run_dir, ctx.output_dir


def _claim(uri: str, experiment: str, chash: str, seed: int, run_dir: Path) -> list[RunLock]:
    """The claim of this configuration and seed in a sqlite store: a lock file in the store's folder
    (`claims/`), taken before training, so two jobs started together in different dirs train it
    once (the second is skipped as running elsewhere, naming the first's dir). Other stores have no
    shared folder: there, the experiment's runs and the run dir's lock decide."""
    db = sqlite_path(uri)
    if db is None:
        return []
    folder = re.sub(r"[^\w.-]", "_", experiment)
    return [RunLock(db.parent / "claims" / folder, f"{chash}-seed{seed}.lock", run_dir=str(run_dir))]


def _start_over(run_dir: Path, uri: str) -> None:
    """`+restart=true`: set the run dir's checkpoints aside (`*.discarded`), close its MLflow run as
    FAILED, and train from scratch there as a new MLflow run."""
    for name in (CHECKPOINT_FILE, PREVIOUS_FILE):
        if (run_dir / name).exists():
            (run_dir / name).replace(run_dir / f"{name}.discarded")
    previous = _recorded_run_id(run_dir, uri)
    if previous is not None:
        from mlflow.tracking import MlflowClient

        from mlflow.exceptions import MlflowException

        client = MlflowClient(tracking_uri=uri)
        try:
            client.set_tag(previous, "failure_reason", "started over with +restart=true")
            client.set_terminated(previous, "FAILED")
        except MlflowException as error:  # deleted meanwhile: nothing to close
            log.info("+restart=true: MLflow run %s not closed (%s)", previous, first_line(error))
    (run_dir / RUN_FILE).unlink(missing_ok=True)
    (run_dir / OUTBOX_FILE).unlink(missing_ok=True)
    log.warning("+restart=true: %s starts over (old checkpoints kept as *.discarded)", run_dir)


def _recorded_run_id(run_dir: Path, uri: str) -> str | None:
    """The MLflow run that `run_dir/mlflow_run.json` names in the store at `uri`, if any."""
    record = recorded_run(run_dir)
    return record.get("run_id") if record.get("tracking_uri") == uri else None


def _remove_launcher_dir(path: Path) -> None:
    """torchrun starts every rank as its own Hydra run, each with an output dir of its own; rank 0's
    is the run's. Another rank's holds only Hydra's files (.hydra/, its log) and goes."""
    if path.is_dir() and all(p.name == ".hydra" or p.suffix == ".log" for p in path.iterdir()):
        shutil.rmtree(path, ignore_errors=True)


def _decide(cfg: DictConfig, ctx: RunContext, uri: str, chash: str) -> Decision:
    """Resume in place when the job's own dir holds a run (a rerun or a SLURM requeue); else ask
    the experiment whether this configuration and seed ran before."""
    own = ctx.output_dir
    if checkpoint.exists(own) or (own / RUN_FILE).exists():
        other = holder(own)
        if other is not None:
            return Decision("skip", describe(other), output_dir=own, running_elsewhere=True)
        finished = _finished_in(own, uri, chash)
        if finished is not None and not cfg.get("restart", False):
            return finished
        return Decision("resume", f"resumes in {own}")
    db = sqlite_path(uri)
    if db is not None and not db.exists():  # no store yet: nothing ran (and nothing is created here)
        return Decision("run", "new")
    from mlflow.tracking import MlflowClient

    return decide(MlflowClient(tracking_uri=uri), cfg.tracking.experiment, chash, cfg.seed,
                  bool(cfg.get("rerun_failed", False)))


def _finished_in(run_dir: Path, uri: str, chash: str) -> Decision | None:
    """A skip when the run recorded in `run_dir` FINISHED with this configuration: its result is never
    redone or downgraded (another configuration's dir is refused, `_refusal`)."""
    run = _recorded_mlflow_run(run_dir, uri)
    if run is None or run.info.status != "FINISHED" or run.data.tags.get("config_hash") != chash:
        return None
    return Decision("skip", f"FINISHED before in this dir as MLflow run {run.info.run_id}",
                    test_error=run.data.metrics.get("test_error", math.nan))


def _recorded_mlflow_run(run_dir: Path, uri: str) -> Any:
    """The MLflow run that `run_dir/mlflow_run.json` names in the store at `uri`, None if none is there."""
    run_id = _recorded_run_id(run_dir, uri)
    if run_id is None:
        return None
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return MlflowClient(tracking_uri=uri).get_run(run_id)
    except MlflowException:
        return None


def _refusal(run_dir: Path, uri: str, chash: str, world_size: int) -> ConfigError | None:
    """Why a resume in `run_dir` is refused (None: it is not): its newest readable checkpoint, or
    the MLflow run its `mlflow_run.json` names, is of another configuration. A dir without a
    readable checkpoint is left to the resume itself, which says so."""
    gone = _recorded_run_gone(run_dir, uri)
    if gone is not None:
        return gone
    state = checkpoint.peek(run_dir)
    if state is not None:
        mismatch = _checkpoint_mismatch(state, run_dir, chash, world_size, _recorded_run_id(run_dir, uri))
        if mismatch is not None:
            return mismatch
    run = _recorded_mlflow_run(run_dir, uri)
    if run is not None and run.data.tags.get("config_hash") not in (None, chash):
        return ConfigError("hydra.run.dir", f"holds MLflow run {run.info.run_id} of a different configuration; "
                           "use a fresh output dir", str(run_dir))
    return None


def _recorded_run_gone(run_dir: Path, uri: str) -> ConfigError | None:
    """A resume whose MLflow run cannot be continued: the dir's `mlflow_run.json` is unreadable,
    names another store, or a run that is not (or no longer) in this one. Never a new run holding
    only the remaining epochs."""
    if not (run_dir / RUN_FILE).exists():
        return None
    record = recorded_run(run_dir)
    run_id, recorded_uri = record.get("run_id"), record.get("tracking_uri")
    if not (isinstance(run_id, str) and isinstance(recorded_uri, str)):
        return ConfigError("hydra.run.dir", f"its {RUN_FILE} is unreadable, so its MLflow run cannot be resumed; "
                           "+restart=true starts the run over there", str(run_dir))
    if recorded_uri != uri:
        return ConfigError("tracking.uri", f"the run in {run_dir} is MLflow run {run_id} in {recorded_uri}; resume it "
                           f"with tracking.uri={recorded_uri} (or +restart=true starts it over in this store)", uri)
    run = _recorded_mlflow_run(run_dir, uri)
    if run is None or run.info.lifecycle_stage == "deleted":
        state = "deleted" if run is not None else "not in that store"
        return ConfigError("hydra.run.dir", f"its MLflow run {run_id} is {state}: resuming would start a new run "
                           "holding only the remaining epochs; +restart=true starts the run over", str(run_dir))
    return None


def _checkpoint_mismatch(state: dict, run_dir: Path, chash: str, world_size: int, recorded: str | None) -> ConfigError | None:
    """A checkpoint that this run cannot resume: another number of processes, another configuration,
    or another MLflow run than the dir's `mlflow_run.json` names."""
    if checkpoint.world_size(state) != world_size:  # before the hash: the likelier mistake
        return ConfigError("train.distributed", f"the checkpoint in {run_dir} was written by "
                           f"{checkpoint.world_size(state)} processes; resume it with as many", world_size)
    if state.get("config_hash") != chash:
        return ConfigError("hydra.run.dir", "holds a checkpoint of a different configuration; use a fresh output dir", str(run_dir))
    if recorded and state.get("mlflow_run_id") not in (None, recorded):
        return ConfigError("hydra.run.dir", f"holds a checkpoint of MLflow run {state.get('mlflow_run_id')}, but its "
                           f"{RUN_FILE} names run {recorded}; use a fresh output dir", str(run_dir))
    return None


def _train_in(cfg: DictConfig, ctx: RunContext, run_dir: Path, resolved: dict, chash: str, uri: str,
              ranks: Ranks) -> float:
    progress = progress_from_config(cfg.train, shown=ranks.is_main)
    run = build_run(cfg, ranks)
    parts, model = run.parts, run.parts.model
    ckpt_path = run_dir / CHECKPOINT_FILE
    state = checkpoint.load(ckpt_path)
    if state is not None:  # checked before (`_refusal`), unless only the fallback checkpoint is readable
        mismatch = _checkpoint_mismatch(state, run_dir, chash, ranks.world_size, _recorded_run_id(run_dir, uri))
        if mismatch is not None:
            raise mismatch

    if not ranks.is_main:
        return _fit(_build_trainer(parts, ckpt_path, chash, state, on_epoch=lambda epoch, metrics: None), NO_TRACKING, 0.0,
                    progress)
    num_params = count_parameters(model)
    teacher_params, teacher_tags = distill.tracking_fields(run.teacher)
    params = {**flatten(resolved), **ctx.choices, "model.num_params": str(num_params), **teacher_params}
    tracker = Tracker.open(
        uri=uri,
        experiment=cfg.tracking.experiment,
        output_dir=run_dir,
        run_name=(",".join(ctx.overrides) or "default")[:250],
        params=params,
        tags={
            "overrides": " ".join(ctx.overrides),
            "config_hash": chash,
            "sweep": ctx.sweep,
            "output_dir": str(run_dir),
            "train_step": run.step.kind,
            "train_step_reason": run.step.reason,
            **provenance(run.device),
            **teacher_tags,
        },
        config_yaml=OmegaConf.to_yaml(cfg, resolve=True),
        log_file=_job_log(ctx.output_dir),
        system_metrics_s=system_metrics_interval(cfg.tracking),
    )
    trainer = _build_trainer(parts, ckpt_path, chash, state, tracker.log_epoch, tracker.run_id)
    trainer.stepper.on_change = lambda kind, reason: _retag_step(tracker, kind, reason)
    where = f"{run.device}" if ranks.world_size == 1 else f"{ranks.world_size} processes ({run.device.type})"
    log.info(
        "%s: %s (%.2fM params), %s %d train / %d test on %s, run %s",
        run_dir, type(model).__name__, num_params / 1e6, run.dataset.name,
        run.num_train, run.num_test, where, tracker.run_id,
    )
    log.info("training step: %s (%s)", run.step.kind, run.step.reason)
    if run.teacher is not None:
        teacher = run.teacher
        log.info("distilling from teacher %s (%s on %s, MLflow run %s), T=%g, alpha=%g",
                 teacher.run_dir, teacher.config.model.get("_target_", "?").rsplit(".", 1)[-1],
                 teacher.config.data.get("_target_", "?").rsplit(".", 1)[-1], teacher.run_id or "none",
                 cfg.train.distill.temperature, cfg.train.distill.alpha)
    if cfg.train.channels_last and (note := channels_last_note(model)):
        log.warning("%s", note)
    error = _fit(trainer, tracker, float(cfg.tracking.get("wait_s", 120)), progress)
    log.info("%s", closing_summary(error, tracker, run_dir, cfg.tracking.experiment))
    return error


def closing_summary(error: float, tracker: Tracker, run_dir: Path, experiment: str) -> str:
    """The one line a finished run ends with: its final and best test error, where it is, and the
    commands that show it."""
    best = f"{tracker.best[0]:.2f}% at epoch {tracker.best[1]}" if getattr(tracker, "best", None) else "-"
    return (f"done: test error {error:.2f}% (best {best}), MLflow run {tracker.run_id}, run dir {run_dir}; "
            f"show it: python -m cifarzoo.runs --experiment {experiment}, "
            f"python -m cifarzoo.evaluate {run_dir}")


def channels_last_note(model: Any) -> str | None:
    """Why `train.channels_last=true` means nothing for this model (None: it has convolutions to speed up).
    A patch embedding (ViT's single conv) does not count."""
    import torch

    convs = sum(isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules())
    if convs > 1:
        return None
    return (f"train.channels_last=true changes nothing for {type(model).__name__}: channels_last speeds up "
            f"convolutions and it has {convs} (a patch embedding at most)")


def _retag_step(tracker: Tracker, kind: str, reason: str) -> None:
    """The step changed kind mid-run (a failed CUDA graph under train.step=auto): the tags say so."""
    try:
        for key, value in (("train_step", kind), ("train_step_reason", reason)):
            tracker.client.set_tag(tracker.run_id, key, value)
    except Exception as error:  # noqa: BLE001 - a tag must not end the run; the log line has it
        log.error("could not retag MLflow run %s: %s", tracker.run_id, first_line(error))


def _job_log(job_dir: Path) -> Path | None:
    """The log file this process writes into its job's dir (Hydra's `<job name>.log`), if any."""
    files = [Path(h.baseFilename) for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    return next((f for f in files if f.parent == job_dir), None)


def _build_trainer(parts: Parts, ckpt_path: Path, chash: str, state: dict | None, on_epoch: EpochCallback,
                   run_id: str | None = None) -> Trainer:
    trainer = Trainer(parts, checkpoint_path=ckpt_path,
                      checkpoint_extra={"config_hash": chash, "mlflow_run_id": run_id}, on_epoch=on_epoch)
    if state is not None:
        trainer.load_state_dict(state)
        log.info("resuming from %s at epoch %d, step %d", ckpt_path, trainer.epoch, trainer.step)
    return trainer


class _NoTracking:
    """What a rank other than 0 records of its run: nothing (rank 0 logs the one MLflow run)."""

    finished_before = False

    def fail(self, reason: str, **tags: str) -> None:
        pass

    def requeued(self, reason: str) -> None:
        pass

    def interrupted(self, reason: str) -> None:
        pass

    def log_final(self, train_time_s: float, step: int) -> None:
        pass

    def log_model(self, network: object, data: object, step: int) -> None:
        pass

    def finish(self, wait_s: float = 0.0) -> None:
        pass


NO_TRACKING = _NoTracking()


def _fit(trainer: Trainer, tracker: Tracker | _NoTracking, wait_s: float, progress: Progress) -> float:
    try:
        final = trainer.fit(progress)
    except Diverged as error:
        log.warning("run diverged: %s; marked FAILED", error)
        tracker.fail("diverged", diverged_epoch=str(error.epoch))
        raise
    except Requeued as error:  # SLURM: submitit requeued the job, which resumes this run: it stays RUNNING
        tracker.requeued(str(error))
        log.warning("%s; the requeued job resumes from the checkpoint", error)
        raise SystemExit(error.code) from None
    except Interrupted as error:
        tracker.interrupted(str(error))
        raise
    except KeyboardInterrupt:
        tracker.interrupted("KeyboardInterrupt")
        raise
    except CheckpointError as error:
        tracker.fail(str(error))
        raise
    except BaseException as error:
        tracker.fail(f"{type(error).__name__}: {error}")
        raise
    if not tracker.finished_before:
        tracker.log_final(final["train_time_s"], step=trainer.settings.epochs)
        tracker.log_model(trainer.model, trainer.data, step=trainer.settings.epochs)
        tracker.finish(wait_s)
    return final["test_error"]
