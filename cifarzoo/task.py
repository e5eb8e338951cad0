"""One run: config -> build -> loop -> tracker. `run.py` calls `main`; tests call `train`."""

from __future__ import annotations

import logging
import math
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cifarzoo import checkpoint
from cifarzoo.build import build_run
from cifarzoo.config import GROUPS, choice_name, config_hash, flatten, list_choices
from cifarzoo.errors import ConfigError
from cifarzoo.loop import Diverged, Interrupted, Trainer
from cifarzoo.models import count_parameters
from cifarzoo.paths import REPO_DIR, default_tracking_uri
from cifarzoo.tracking import Tracker

log = logging.getLogger("cifarzoo")

CHECKPOINT_FILE = "checkpoint.pt"


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
    """Hydra task: bad configuration exits with one line on stderr, before any training."""
    try:
        return train(cfg, RunContext.from_hydra())
    except ConfigError as error:
        print(f"cifarzoo: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def train(cfg: DictConfig, ctx: RunContext) -> float:
    """Train one configuration; return the test error (%) at the last epoch (NaN if diverged)."""
    run = build_run(cfg)
    parts, model = run.parts, run.parts.model
    resolved = OmegaConf.to_container(cfg, resolve=True)
    chash = config_hash(resolved)
    ckpt_path = ctx.output_dir / CHECKPOINT_FILE
    state = checkpoint.load(ckpt_path)
    if state is not None and state.get("config_hash") != chash:
        raise ConfigError("hydra.run.dir", "holds a checkpoint of a different configuration; use a fresh output dir", str(ctx.output_dir))

    num_params = count_parameters(model)
    params = {**flatten(resolved), **ctx.choices, "model.num_params": str(num_params)}
    tracker = Tracker.open(
        uri=cfg.tracking.uri or default_tracking_uri(),
        experiment=cfg.tracking.experiment,
        output_dir=ctx.output_dir,
        run_name=(",".join(ctx.overrides) or "default")[:250],
        params=params,
        tags={
            "overrides": " ".join(ctx.overrides),
            "config_hash": chash,
            "sweep": ctx.sweep,
            "output_dir": str(ctx.output_dir),
            **_git_commit(),
        },
        config_yaml=OmegaConf.to_yaml(cfg, resolve=True),
    )
    trainer = Trainer(
        parts,
        checkpoint_path=ckpt_path,
        checkpoint_extra={"config_hash": chash, "mlflow_run_id": tracker.run_id},
        on_epoch=tracker.log_epoch,
    )
    if state is not None:
        trainer.load_state_dict(state)
        log.info("resuming from %s at epoch %d, step %d", ckpt_path, trainer.epoch, trainer.step)
    log.info(
        "%s: %s (%.2fM params), %s %d train / %d test on %s, run %s",
        ctx.output_dir, type(model).__name__, num_params / 1e6, run.dataset.name,
        parts.data.num_train, len(parts.data.test_x), run.device, tracker.run_id,
    )
    return _fit(trainer, tracker)


def _fit(trainer: Trainer, tracker: Tracker) -> float:
    try:
        final = trainer.fit()
    except Diverged as error:
        log.warning("run diverged: %s; marked FAILED", error)
        tracker.fail("diverged", diverged_epoch=str(error.epoch))
        return math.nan
    except Interrupted as error:
        tracker.interrupted(str(error))
        log.warning("%s; rerun with the same output dir to resume", error)
        raise SystemExit(128 + error.signum) from None
    except KeyboardInterrupt:
        tracker.interrupted("KeyboardInterrupt")
        raise
    except BaseException as error:
        tracker.fail(f"{type(error).__name__}: {error}")
        raise
    if not tracker.finished_before:
        tracker.log_metric("train_time_s", final["train_time_s"], step=trainer.settings.epochs)
        tracker.finish()
    return final["test_error"]


def _git_commit() -> dict[str, str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_DIR, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {"git_commit": out.stdout.strip()} if out.returncode == 0 else {}
