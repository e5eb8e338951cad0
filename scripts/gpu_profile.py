"""torch.profiler over replays of the CUDA-graph train step (default: ResNet-preact-20, fp32, batch 128,
fake data): the top kernels by device time, so a throughput below target says where the time goes.

    python scripts/gpu_profile.py [--replays 20] [--rows 25] [hydra overrides]

The run is built as `python -m cifarzoo.bench` builds it, with train.step=graph; the warm-up steps
and the capture run before the profiler starts. On a machine without CUDA (gpu-check's dry run) the
graph step's CPU form runs instead and the table sorts by CPU time."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from cifarzoo.bench import compose_config, device_name
from cifarzoo.build import build_run
from cifarzoo.loop import Trainer
from cifarzoo.steps.graph import WARMUP_STEPS

DEFAULTS = ["model=resnet_preact", "model.depth=20", "train.batch_size=128", "precision=fp32"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/gpu_profile.py", description=__doc__.splitlines()[0])
    parser.add_argument("--replays", type=int, default=20)
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    cfg, _ = compose_config([*DEFAULTS, *args.overrides, "train.step=graph"])
    cuda = torch.cuda.is_available() and cfg.train.device != "cpu"
    run = build_run(cfg, graph_on_cpu=not cuda)
    trainer = Trainer(run.parts, Path("unused"), {}, on_epoch=lambda epoch, metrics: None)
    b, per_epoch = trainer.local_batch, trainer.steps_per_epoch
    perm = run.parts.data.permutation(trainer.generator)

    def steps(start: int, n: int) -> None:
        for i in range(start, start + n):
            trainer.train_step(perm[i % per_epoch * b:(i % per_epoch + 1) * b])

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(run.device)

    steps(0, WARMUP_STEPS + 1)  # warm-up, capture and first replay
    sync()
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        steps(WARMUP_STEPS + 1, args.replays)
        sync()
        seconds = time.perf_counter() - start
    print(f"profile: {args.replays} steps ({trainer.stepper.kind} step) of {type(run.parts.model).__name__}, "
          f"batch {b}, {cfg.precision._target_.rsplit('.', 1)[-1]}, on {device_name(run.device)}, torch {torch.__version__}")
    print(f"profile: {seconds / args.replays * 1e3:.3f} ms per step under the profiler "
          f"({args.replays * b / seconds:.0f} images/s, the profiler's overhead included)")
    sort = "self_device_time_total" if cuda else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=args.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
