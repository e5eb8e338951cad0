"""Where the project lives on disk, and the OmegaConf resolvers that point there."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

REPO_DIR = Path(__file__).resolve().parent.parent
# conf/config.yaml's tracking.experiment, for the tools that read a store without composing a config
# (not `default`: MLflow's own experiment `Default` would sit beside it in the UI)
DEFAULT_EXPERIMENT = "cifarzoo"


def outputs_dir() -> Path:
    """Hydra run/sweep dirs and the default MLflow store live here (`$CIFARZOO_OUTPUTS` overrides)."""
    return Path(os.environ.get("CIFARZOO_OUTPUTS", REPO_DIR / "outputs")).resolve()


def default_tracking_uri() -> str:
    """`$MLFLOW_TRACKING_URI`, else the embedded sqlite store in `outputs/` (CWD-independent)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{outputs_dir() / 'mlflow.db'}"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("cifarzoo_repo"):
        OmegaConf.register_new_resolver("cifarzoo_repo", lambda: str(REPO_DIR))
    if not OmegaConf.has_resolver("cifarzoo_outputs"):
        OmegaConf.register_new_resolver("cifarzoo_outputs", lambda: str(outputs_dir()))
