"""sbatch refusing a sweep's job array (an unknown partition, GPUs on a partition without any, more
CPUs or memory than a node has): one line naming the launcher field and sbatch's words, exit 2,
instead of submitit's traceback. `hydra_plugins/cifarzoo_slurm` holds the launcher that uses it
(Hydra takes launchers only from the `hydra_plugins` package)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cifarzoo.errors import ConfigError
from cifarzoo.jobdir import remove_with_empty_parent
from cifarzoo.paths import outputs_dir

# (a word of sbatch's message, the launcher field that asked for it, the way out); the first match wins
_FIELDS = (
    ("account", "account", ""),
    ("qos", "qos", ""),
    ("partition", "partition", "`sinfo` lists the partitions"),
    ("gres", "gpus_per_node", "a partition without GPUs takes hydra.launcher.gpus_per_node=0"),
    ("time limit", "timeout_min", ""),
)
_RESOURCES = ("nodes", "tasks_per_node", "cpus_per_task", "mem_gb", "gpus_per_node")


def remove_unsubmitted(sweep_dir: Path) -> None:
    """The sweep dir of a refused array holds Hydra's multirun.yaml and submitit's pickles and
    script, nothing that ran: it goes. A reused sweep dir (job dirs, job folders in .submitit/) stays."""
    entries = list(sweep_dir.iterdir()) if sweep_dir.is_dir() else []
    submitit = sweep_dir / ".submitit"
    if any(p.name not in ("multirun.yaml", ".submitit") for p in entries) or (
            submitit.is_dir() and any(p.is_dir() for p in submitit.iterdir())):
        return
    remove_with_empty_parent(sweep_dir, outputs_dir() / "multirun")


def sbatch_refusal(stderr: str, params: dict[str, Any]) -> ConfigError:
    """The ConfigError for sbatch's `stderr`, given the launcher's fields `params`."""
    lines = [line.strip().removeprefix("sbatch: error:").strip() for line in stderr.strip().splitlines()]
    said = "; ".join(dict.fromkeys(line for line in lines if line))
    for word, name, way_out in _FIELDS:
        if word in said.lower():
            rule = f"sbatch refused the job array ({said})" + (f"; {way_out}" if way_out else "")
            return ConfigError(f"hydra.launcher.{name}", rule, params.get(name))
    asked = ", ".join(f"{name}={params.get(name)}" for name in _RESOURCES)
    return ConfigError("hydra.launcher", f"sbatch refused the job array ({said}); asked per job: {asked}")
