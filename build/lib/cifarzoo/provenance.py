"""Where and with what a run trained, as MLflow tags: the resolved device and its name, the torch /
CUDA / cuDNN versions, the host, the SLURM job, array task and node, and the git commit with
whether the tree had uncommitted changes."""

from __future__ import annotations

import os
import platform
import socket
import subprocess

import torch

from cifarzoo.paths import REPO_DIR

# SLURM's environment of a job step -> tag (array ids only exist in array jobs).
_SLURM = {"SLURM_JOB_ID": "slurm_job_id", "SLURM_ARRAY_JOB_ID": "slurm_array_job_id",
          "SLURM_ARRAY_TASK_ID": "slurm_array_task_id", "SLURMD_NODENAME": "slurm_node"}


def provenance(device: torch.device) -> dict[str, str]:
    tags = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "cudnn": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else "none",
        "python": platform.python_version(),
        "hostname": socket.gethostname(),
    }
    tags.update({tag: os.environ[var] for var, tag in _SLURM.items() if os.environ.get(var)})
    return {**tags, **_git()}


def _git() -> dict[str, str]:
    """The commit and whether tracked files differ from it (untracked files do not count)."""
    def git(*args: str) -> subprocess.CompletedProcess | None:
        try:
            return subprocess.run(["git", *args], cwd=REPO_DIR, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None

    head = git("rev-parse", "HEAD")
    if head is None or head.returncode != 0:
        return {}
    status = git("status", "--porcelain", "--untracked-files=no")
    dirty = "unknown" if status is None or status.returncode != 0 else str(bool(status.stdout.strip())).lower()
    return {"git_commit": head.stdout.strip(), "git_dirty": dirty}
