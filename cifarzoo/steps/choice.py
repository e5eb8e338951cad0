"""`train.step: auto | graph | eager`: which step a run trains with, and why.

Each option that a captured graph cannot run says so in a `graph_unsupported` class attribute (the
reason, one phrase), models and their layers included (an `nn.Module` part is asked through all of
its modules); `obstacles` collects them from the run's parts, and `choose` turns the request
into the step kind and a reason for the log and the run's `train_step_reason` tag."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from cifarzoo.errors import ConfigError, require

STEP_KINDS = ("auto", "graph", "eager")


@dataclass(frozen=True)
class StepChoice:
    kind: str  # graph | eager
    reason: str
    fallback: bool = False  # graph chosen by auto: a failed capture falls back to the eager step


def check_request(requested: object) -> str:
    require(requested in STEP_KINDS, "train.step", "must be auto, graph or eager", requested)
    return str(requested)


def graph_unsupported(part: object) -> str | None:
    """The part's reason not to be captured, or None. A network (or a distillation teacher) is asked
    through each of its modules, so a layer that holds a host-side decision declares it once for
    every model that uses it."""
    if isinstance(part, torch.nn.Module):
        reasons = dict.fromkeys(r for m in part.modules() if (r := getattr(m, "graph_unsupported", None)))
        return "; ".join(reasons) or None
    return getattr(part, "graph_unsupported", None)


def obstacles(train: Any, named_parts: Iterable[tuple[str, object]]) -> list[str]:
    """Why the run's step cannot be captured, one entry per obstacle ('' parts: none).
    `train` is the `train` config node; `named_parts` the (config key, built option) pairs."""
    found = [f"{key}: {reason}" for key, part in named_parts if (reason := graph_unsupported(part))]
    if train.compile:
        found.append("train.compile: the compiled model brings its own graphs and guards (compile and capture are "
                     "alternatives; train.compile=false captures the plain model)")
    if train.distributed:
        found.append("train.distributed: DDP's bucketed gradient all-reduce runs from autograd hooks between the "
                     "backward kernels; data-parallel runs keep the eager step")
    return found


def choose(requested: str, device: torch.device, blocking: list[str], allow_cpu: bool = False) -> StepChoice:
    """The step for a run on `device` whose parts have the obstacles `blocking`. ConfigError when
    `train.step=graph` cannot be honoured. `allow_cpu` (tests): graph on CPU, as its eager graph-safe form."""
    if requested == "eager":
        return StepChoice("eager", "train.step=eager")
    cannot = blocking[0] if blocking else (None if device.type == "cuda" or allow_cpu else
                                           f"train.device: a CUDA graph needs a CUDA device (the run is on {device})")
    if requested == "graph":
        if cannot:
            raise ConfigError("train.step", f"graph cannot be used: {cannot}", requested)
        return StepChoice("graph", "train.step=graph")
    if cannot:
        return StepChoice("eager", f"train.step=auto: eager because {cannot}")
    return StepChoice("graph", "train.step=auto: on CUDA, and every part of the run can be captured", fallback=True)
