"""Rank processes for tests/test_distributed.py: each joins a real gloo process group on CPU, as
torchrun's workers do (RANK, WORLD_SIZE, MASTER_ADDR/PORT in the environment), and runs the task
or one training step in-process. Results come back as files, one per rank."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import torch
import torch.multiprocessing as mp
from conftest import free_port


def spawn(target, world_size: int, *args) -> None:
    """Start `world_size` ranks of `target(rank, world_size, port, *args)` and wait for them."""
    mp.spawn(target, args=(world_size, free_port(), *args), nprocs=world_size, join=True)


def _join(rank: int, world_size: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)


def _leave_together() -> None:
    """Both ranks tear gloo down at the same time: a spawned child exits (os._exit) right after, and
    a rank that tore its connections down while the other was still closing has aborted once under load."""
    import datetime

    import torch.distributed as dist

    from cifarzoo.distributed import leave

    dist.monitored_barrier(timeout=datetime.timedelta(seconds=60))
    leave()


def train_rank(rank: int, world_size: int, port: int, overrides: list[str], output_dirs: list[str],
               results: str, stop_rank1_after_steps: int | None = None) -> None:
    """`cifarzoo.task.train` on this rank, with its own output dir (as torchrun + Hydra give it).
    `stop_rank1_after_steps`: rank 1 sends itself SIGTERM after that many training steps."""
    _join(rank, world_size, port)
    from conftest import compose_run

    from cifarzoo.distributed import connect
    from cifarzoo.loop import Trainer
    from cifarzoo.task import train

    if stop_rank1_after_steps is not None and rank == 1:
        original, steps = Trainer.train_step, [0]

        def step_then_signal(self, index):
            original(self, index)
            steps[0] += 1
            if steps[0] == stop_rank1_after_steps:
                os.kill(os.getpid(), signal.SIGTERM)

        Trainer.train_step = step_then_signal
    cfg, ctx = compose_run(overrides, Path(output_dirs[rank]))
    outcome: dict[str, object] = {}
    try:
        outcome["test_error"] = train(cfg, ctx, connect(True, "gloo"))
    except SystemExit as stop:
        outcome["exit"] = stop.code
    finally:
        Path(results, f"rank{rank}.json").write_text(json.dumps(outcome))
        _leave_together()


def step_rank(rank: int, world_size: int, port: int, overrides: list[str], results: str) -> None:
    """Build the run on this rank, take one training step on the first local batch of its shard,
    and save the model's parameters."""
    _join(rank, world_size, port)
    from conftest import compose_config

    from cifarzoo.build import build_run
    from cifarzoo.distributed import connect
    from cifarzoo.loop import Trainer

    ranks = connect(True, "gloo")
    parts = build_run(compose_config(overrides), ranks).parts
    trainer = Trainer(parts, Path(results, "unused.pt"), {}, on_epoch=lambda epoch, metrics: None)
    trainer.train_step(torch.arange(trainer.local_batch))
    torch.save({"params": dict(parts.model.named_parameters()), "shard_size": parts.data.num_train,
                "local_batch": trainer.local_batch}, Path(results, f"rank{rank}.pt"))
    _leave_together()
