"""Training throughput: cifarzoo's device-resident pipeline, with its eager and its graph step,
against the classic per-image one.

    python -m cifarzoo.bench [--steps N] [--warmup N] [--workers N] [--json] [--out FILE] [hydra overrides]
    python -m cifarzoo.bench model.depth=20 train.batch_size=128 precision=amp_bf16 train.device=cuda

The config is composed as `run.py` composes it (`data=fake` unless a `data=` override is
given) and everything is built as a run builds it. Both pipelines train the same architecture
on the same uint8 images, in this process, one after the other:

- cifarzoo: the run's model (channels-last on CUDA), optimizer, schedule, precision and
  augmentation recipe, stepped by `cifarzoo.loop.Trainer` over `DeviceData`, once with the eager
  step (`train.step=eager`) and once with the graph step (`train.step=graph`: the whole step in
  one CUDA graph) where the run can use it; `train.step` overrides are replaced by these two;
- classic: the seeds' pipeline (hysts' pytorch_image_classification): a Dataset returning PIL
  images, torchvision transforms per image (RandomCrop(size, padding=4), RandomHorizontalFlip,
  ToTensor, Normalize), a DataLoader (shuffle, drop_last, `--workers`, pinned memory on
  CUDA), fp32, a freshly built model of the same architecture, and the same SGD step and
  schedule. Its transforms and precision are fixed: the `aug` and `precision` overrides
  apply to the cifarzoo pipeline only. It gets every benefit: no per-step host sync (the
  seeds read `loss.item()` every step) and non-blocking copies from pinned memory.

Each pipeline runs `--warmup` steps, then `--steps` timed steps (the device synchronised
before each clock reading); images/s = steps * batch size / seconds. Progress goes to stderr,
the table (or with `--json` one JSON object) to stdout; `--out FILE` also writes the JSON object there.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from PIL import Image
from torchvision import transforms

import cifarzoo  # noqa: F401  (registers the config resolvers)
from cifarzoo.build import BuiltRun, build_run
from cifarzoo.compose import compose_with_choices, one_line_errors
from cifarzoo.config import build, build_model
from cifarzoo.data import ImageDataset
from cifarzoo.errors import ConfigError
from cifarzoo.loop import Trainer
from cifarzoo.models import count_parameters

DEFAULT_DATA = "data=fake"
CLASSIC_PADDING = 4
CLASSIC_PRECISION = "fp32"
_DATA_CHOICE = re.compile(r"^\+{0,2}data=")


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# -- configuration ---------------------------------------------------------------------------
def compose_config(overrides: Sequence[str]) -> tuple[DictConfig, dict[str, str]]:
    """The run's config (with `data=fake` unless overridden) and its group choices."""
    overrides = list(overrides)
    if not any(_DATA_CHOICE.match(o) for o in overrides):
        overrides.insert(0, DEFAULT_DATA)
    return compose_with_choices(overrides)


# -- what both pipelines share -------------------------------------------------------------------
@dataclass
class Options:
    steps: int
    warmup: int
    workers: int


@dataclass
class Setup:
    """The run's parts, built from the config as a run builds them, before anything is timed: with the
    eager step (`run`) and with the graph step (`graph_run`, None where `graph_reason` says why not)."""

    cfg: DictConfig
    choices: dict[str, str]
    options: Options
    run: BuiltRun
    graph_run: BuiltRun | None = None
    graph_reason: str = ""

    @classmethod
    def build(cls, cfg: DictConfig, choices: dict[str, str], options: Options) -> Setup:
        runs: dict[str, BuiltRun | None] = {}
        reason = ""
        for step in ("eager", "graph"):
            step_cfg = cfg.copy()
            step_cfg.train.step = step
            try:
                runs[step] = build_run(step_cfg)
            except ConfigError as error:
                if step == "eager" or error.key != "train.step":
                    raise
                runs[step], reason = None, str(error)
        return cls(cfg, choices, options, runs["eager"], runs["graph"], reason)

    @property
    def batch_size(self) -> int:
        return self.run.parts.settings.batch_size

    @property
    def model_name(self) -> str:
        m = self.cfg.model
        name = self.choices.get("model", type(self.run.parts.model).__name__)
        if "depth" in m:
            name += f"-{m.depth}"
        if m.get("widen", 1) != 1:
            name += f"x{m.widen}"
        if m.get("block", "basic") != "basic":
            name += f"-{m.block}"
        return name

    def fresh_model(self) -> torch.nn.Module:
        """The same architecture, initialised as a run initialises it (same seed)."""
        torch.manual_seed(self.cfg.seed)
        dataset = self.run.dataset
        return build_model(self.cfg.model, dataset.channels, dataset.num_classes)


@dataclass
class Measurement:
    pipeline: str
    precision: str
    seconds: float
    images: int
    step: str = "-"  # cifarzoo's training step: eager | graph

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], None], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


# -- cifarzoo's pipeline ---------------------------------------------------------------------
def bench_cifarzoo(s: Setup, run: BuiltRun) -> Measurement:
    """The run's own training step (`Trainer.train_step`) over batches of one permutation. The graph
    step's warm-up steps and its capture happen in the untimed warm-up."""
    trainer = Trainer(run.parts, checkpoint_path=Path("unused"), checkpoint_extra={}, on_epoch=lambda e, m: None)
    bs, steps_per_epoch = s.batch_size, trainer.steps_per_epoch
    step_kind = run.step.kind

    def steps(start: int, n: int) -> None:
        perm = run.parts.data.permutation(trainer.generator)
        for step in range(start, start + n):
            i = step % steps_per_epoch
            trainer.train_step(perm[i * bs : (i + 1) * bs])

    name = s.choices.get("precision", type(run.parts.precision).__name__)
    progress(f"cifarzoo ({step_kind} step): warm-up, {s.options.warmup} steps")
    _timed(lambda: steps(0, s.options.warmup), run.device)
    progress(f"cifarzoo ({step_kind} step): measuring {s.options.steps} steps")
    seconds = _timed(lambda: steps(s.options.warmup, s.options.steps), run.device)
    return Measurement("cifarzoo", name, seconds, s.options.steps * bs, step_kind)


# -- the classic pipeline ----------------------------------------------------------------------
class PILImages(torch.utils.data.Dataset):
    """torchvision-style dataset: HWC uint8 array, a PIL image per item, then the transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable[[Image.Image], Any]) -> None:
        x = images.permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
        self.data = np.ascontiguousarray(x[..., 0] if x.shape[-1] == 1 else x)
        self.targets = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        return self.transform(Image.fromarray(self.data[i])), self.targets[i]


def classic_transform(dataset: ImageDataset) -> transforms.Compose:
    return transforms.Compose([
        transforms.RandomCrop(dataset.image_size, padding=CLASSIC_PADDING),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(dataset.mean, dataset.std),
    ])


def _endless(loader: torch.utils.data.DataLoader) -> Any:
    while True:  # a small training split is gone through again
        yield from loader


def bench_classic(s: Setup) -> Measurement:
    bs, device, data = s.batch_size, s.run.device, s.run.parts.data
    pin = device.type == "cuda"
    loader = torch.utils.data.DataLoader(
        PILImages(data.train_x.cpu(), data.train_y.cpu(), classic_transform(s.run.dataset)),
        batch_size=bs, shuffle=True, drop_last=True, num_workers=s.options.workers, pin_memory=pin,
        generator=torch.Generator().manual_seed(s.cfg.seed),
    )
    model = s.fresh_model().to(device)
    optimizer = build(s.cfg.optim).build(model, bs)
    scheduler = build(s.cfg.sched).build(optimizer, data.num_train // bs, s.run.parts.settings.epochs)
    model.train()
    batches = _endless(loader)

    def steps(n: int) -> None:
        for _ in range(n):
            images, labels = next(batches)
            images, labels = images.to(device, non_blocking=pin), labels.to(device, non_blocking=pin)
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
            scheduler.step()

    progress(f"classic: warm-up, {s.options.warmup} steps ({s.options.workers} workers)")
    _timed(lambda: steps(s.options.warmup), device)
    progress(f"classic: measuring {s.options.steps} steps")
    seconds = _timed(lambda: steps(s.options.steps), device)
    batches.close()  # ends the loader iteration and its workers
    return Measurement("classic", CLASSIC_PRECISION, seconds, s.options.steps * bs)


# -- report ------------------------------------------------------------------------------------
def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "cpu"


def report(s: Setup, results: list[Measurement]) -> dict[str, Any]:
    speed = {("classic" if r.pipeline == "classic" else r.step): r.images_per_s for r in results}
    ratios = {f"{a}/{b}": speed[a] / speed[b] for a, b in (("eager", "classic"), ("graph", "classic"), ("graph", "eager"))
              if a in speed and b in speed}
    rows = [
        {
            "pipeline": r.pipeline,
            "step": r.step,
            "device": str(s.run.device),
            "model": s.model_name,
            "batch_size": s.batch_size,
            "precision": r.precision,
            "images_per_s": r.images_per_s,
            "seconds": r.seconds,
        }
        for r in results
    ]
    return {
        "pipelines": rows,
        # cifarzoo/classic with the step `train.step=auto` takes here: graph where it could be measured.
        "ratio": speed["graph" if "graph" in speed else "eager"] / speed["classic"],
        "ratios": ratios,
        "graph_not_measured": s.graph_reason,
        "device": str(s.run.device),
        "device_name": device_name(s.run.device),
        "cpu_threads": torch.get_num_threads(),
        "model": s.model_name,
        "num_params": count_parameters(s.run.parts.model),
        "batch_size": s.batch_size,
        "data": s.choices.get("data", ""),
        "steps": s.options.steps,
        "warmup": s.options.warmup,
        "workers": s.options.workers,
        "torch": torch.__version__,
    }


def format_table(result: dict[str, Any]) -> str:
    header = ("pipeline", "step", "device", "model", "batch size", "precision", "images/s")
    rows = [
        (r["pipeline"], r["step"], r["device"], r["model"], str(r["batch_size"]), r["precision"],
         f"{r['images_per_s']:.0f}")
        for r in result["pipelines"]
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) if i == 6 else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
             for row in (header, *rows)]
    ratios = ", ".join(f"{name} {value:.2f}x" for name, value in result["ratios"].items())
    lines.append(f"ratio cifarzoo/classic: {result['ratio']:.2f}x  ({ratios})")
    if result["graph_not_measured"]:
        lines.append(f"graph step not measured: {result['graph_not_measured']}")
    lines.append(
        f"({result['steps']} steps after {result['warmup']} warm-up; classic with {result['workers']} workers; "
        f"{result['device_name']}, torch {result['torch']})"
    )
    return "\n".join(lines)


# -- command line ------------------------------------------------------------------------------
def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an int: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum} (got {value})")
        return value

    return parse


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        """Bad options, like bad overrides: one line and exit status 2."""
        print(f"cifarzoo: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _Parser(
        prog="python -m cifarzoo.bench",
        description="Training images/s of cifarzoo's pipeline against the classic per-image DataLoader pipeline.",
    )
    parser.add_argument("--steps", type=_count(1), default=50, help="timed steps per pipeline (default 50)")
    parser.add_argument("--warmup", type=_count(0), default=10, help="untimed steps before them (default 10)")
    parser.add_argument("--workers", type=_count(0), default=2, help="classic DataLoader workers (default 2)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--out", type=Path, help="also write the JSON object to this file")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for run.py (default data=fake)")
    return parser.parse_intermixed_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    options = Options(args.steps, args.warmup, args.workers)
    try:
        with one_line_errors():
            cfg, choices = compose_config(args.overrides)
            setup = Setup.build(cfg, choices, options)
        progress(
            f"built {setup.model_name} ({count_parameters(setup.run.parts.model) / 1e6:.2f}M params), "
            f"data {choices.get('data', '')} ({setup.run.parts.data.num_train} images), batch {setup.batch_size}, "
            f"{choices.get('precision', '')}, on {setup.run.device}"
        )
        if setup.graph_run is None:
            progress(f"graph step not measured: {setup.graph_reason}")
        results = []
        for run in (setup.run, setup.graph_run):
            if run is not None:
                results.append(bench_cifarzoo(setup, run))
                progress(f"cifarzoo ({run.step.kind} step): {results[-1].images_per_s:.0f} images/s "
                         f"({results[-1].seconds:.2f} s)")
        results.append(bench_classic(setup))
        progress(f"classic: {results[-1].images_per_s:.0f} images/s ({results[-1].seconds:.2f} s)")
    except ConfigError as error:
        print(f"cifarzoo: error: {error}", file=sys.stderr)
        return 2
    result = report(setup, results)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result) if args.json else format_table(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
