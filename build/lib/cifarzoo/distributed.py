"""Data-parallel runs (`train.distributed=true`): this process's place in the run's process group
and the few collectives the loop needs. One process is rank 0 of 1 and every collective is a no-op.

The processes come from a launcher: `torchrun --nproc_per_node N run.py ...` (RANK, WORLD_SIZE,
MASTER_ADDR/PORT in the environment) or a SLURM job with `hydra.launcher.tasks_per_node=N`
(submitit's job environment, exported the same way). GPUs use NCCL, CPUs gloo."""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from cifarzoo.errors import ConfigError, require

log = logging.getLogger("cifarzoo")

T = TypeVar("T")

LAUNCHERS = "torchrun --nproc_per_node N run.py ..., or hydra/launcher=slurm hydra.launcher.tasks_per_node=N"


class RankZeroFailed(Exception):
    """Raised on the other ranks when rank 0 failed in a step they all wait on (its error is rank 0's to report)."""


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # index among this node's processes: picks the GPU

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs to MLflow and writes checkpoints."""
        return self.rank == 0

    def cuda_device(self) -> torch.device:
        return torch.device("cuda", self.local_rank % torch.cuda.device_count())

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over ranks, in place."""
        if self.world_size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def max_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Maximum of `tensor` over ranks, in place."""
        if self.world_size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's `obj` (picklable, CPU tensors) on rank 0, in rank order; None elsewhere."""
        if self.world_size == 1:
            return [obj]
        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def broadcast_buffers(self, model: torch.nn.Module) -> None:
        """Rank 0's buffers (BN running statistics) on every rank: evaluation then measures the
        model rank 0 checkpoints, whatever batches the other ranks' statistics last saw."""
        if self.world_size > 1:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    def from_main(self, work: Callable[[], T]) -> T:
        """Run `work` on rank 0 only and hand its result to every rank. If it raises, rank 0
        re-raises and the others raise `RankZeroFailed`, instead of waiting forever."""
        if self.world_size == 1:
            return work()
        box: list[Any] = [None]
        failure: BaseException | None = None
        if self.is_main:
            try:
                box[0] = ("ok", work())
            except BaseException as error:  # noqa: BLE001 (re-raised below, after the others know)
                failure, box[0] = error, ("failed", f"{type(error).__name__}: {error}")
        dist.broadcast_object_list(box, src=0)
        if failure is not None:
            raise failure
        status, value = box[0]
        if status == "failed":
            raise RankZeroFailed(value)
        return value


def connect(distributed: bool, backend: str) -> Ranks:
    """This process's `Ranks`, joining the launcher's process group when `distributed` (once per
    process: the jobs of a sweep reuse it). A launcher without `distributed`, or `distributed`
    without a launcher, is a one-line configuration error."""
    require(isinstance(distributed, bool), "train.distributed", "must be true or false", distributed)
    if not distributed:
        world_size = _launched_processes()
        require(world_size == 1, "train.distributed",
                f"is false but this process is one of {world_size} a launcher started; set train.distributed=true")
        return Ranks()
    if "RANK" not in os.environ and _submitit_job() is not None:
        from submitit.helpers import TorchDistributedEnvironment

        # CUDA_VISIBLE_DEVICES is left alone: the rank picks its GPU by local rank.
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    if "RANK" not in os.environ:
        raise ConfigError("train.distributed", f"needs processes from a launcher: {LAUNCHERS}")
    ranks = Ranks(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0")))
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    require(backend != "nccl" or torch.cuda.device_count() >= local, "train.distributed",
            f"{local} processes on this node but {torch.cuda.device_count()} visible GPUs: NCCL needs a GPU per "
            "process (fewer processes, or train.device=cpu for gloo)")
    if not dist.is_initialized():
        if backend == "nccl":
            torch.cuda.set_device(ranks.cuda_device())
        dist.init_process_group(backend, rank=ranks.rank, world_size=ranks.world_size)
        atexit.register(leave)
        log.info("rank %d of %d joined the process group (%s)", ranks.rank, ranks.world_size, backend)
    return ranks


def leave() -> None:
    """Leave the process group (at exit). No barrier first: after a SLURM requeue the job's
    processes must go at once (submitit ignores SIGTERM), or the requeued job finds rank 0's
    port still taken."""
    if dist.is_initialized():
        dist.destroy_process_group()


def _submitit_job() -> Any:
    """submitit's JobEnvironment in a job submitit started (hydra/launcher=slurm), else None: a
    hand-written sbatch script may ask for tasks it starts no processes for."""
    if "SUBMITIT_EXECUTOR" not in os.environ:
        return None
    try:
        from submitit import JobEnvironment

        return JobEnvironment()  # raises outside a submitit job
    except (ImportError, RuntimeError):
        return None


def _launched_processes() -> int:
    """How many processes the launcher started for this run: torchrun's WORLD_SIZE, or the tasks
    of a submitit job (`hydra.launcher.tasks_per_node`)."""
    if "WORLD_SIZE" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    job = _submitit_job()
    return 1 if job is None else job.num_tasks
