"""Atomic checkpoint files and the RNG state that makes a resumed run bit-identical on CPU."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FILE = "checkpoint.pt"  # in the run's output dir


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Write to a temp file in the same directory, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Python's, torch's and `generator`'s random state, plus the default CUDA generator of
    `generator`'s GPU (only that one: a data-parallel rank must not touch the other GPUs)."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state(), "data": generator.get_state()}
    if generator.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(generator.device)
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    generator.set_state(state["data"])
    if "cuda" in state and generator.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], generator.device)


def rank_states(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Each rank's random state, permutation and sums (checkpoints from before data-parallel runs
    kept the one process's at the top level)."""
    return state["ranks"] if "ranks" in state else [state]


def world_size(state: dict[str, Any]) -> int:
    """How many processes trained the run that wrote `state`."""
    return len(rank_states(state))
