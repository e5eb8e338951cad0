"""Training throughput: cifarzoo's device-resident pipeline against the classic per-image one.

    python -m cifarzoo.bench [--steps N] [--warmup N] [--workers N] [--json] [hydra overrides]
    python -m cifarzoo.bench model.depth=20 train.batch_size=128 precision=amp_bf16 train.device=cuda

The config is composed as `run.py` composes it (`data=fake` unless a `data=` override is
given) and everything is built as a run builds it. Both pipelines train the same architecture
on the same uint8 images, in this process, one after the other:

- cifarzoo: the run's model (channels-last on CUDA), optimizer, schedule, precision and
  augmentation recipe, stepped by `cifarzoo.loop.Trainer` over `DeviceData`;
- classic: the seeds' pipeline (hysts' pytorch_image_classification): a Dataset returning PIL
  images, torchvision transforms per image (RandomCrop(size, padding=4), RandomHorizontalFlip,
  ToTensor, Normalize), a DataLoader (shuffle, drop_last, `--workers`, pinned memory on
  CUDA), fp32, a freshly built model of the same architecture, and the same SGD step.

Each pipeline runs `--warmup` steps, then `--steps` timed steps (the device synchronised
before each clock reading); images/s = steps * batch size / seconds. Progress goes to stderr,
the table (or with `--json` one JSON object) to stdout.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, open_dict
from omegaconf.errors import OmegaConfBaseException
from PIL import Image
from torchvision import transforms

import cifarzoo  # noqa: F401  (registers the config resolvers)
from cifarzoo.config import build, choice_name
from cifarzoo.data import DeviceData, ImageDataset, Splits
from cifarzoo.errors import ConfigError, require
from cifarzoo.loop import LoopSettings, StopSignals, Trainer
from cifarzoo.models import count_parameters
from cifarzoo.paths import REPO_DIR
from cifarzoo.task import loop_settings, resolve_device

CONF_DIR = REPO_DIR / "conf"
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
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    choices = {k: choice_name(v) for k, v in cfg.hydra.runtime.choices.items() if not k.startswith("hydra/")}
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


def one_line(message: str) -> str:
    """Hydra's multi-line composition errors as one line (without the config search path)."""
    parts: list[str] = []
    for line in message.splitlines():
        if line.startswith("Config search path"):
            break
        if not line.strip() or line.startswith("See https://hydra.cc"):
            continue
        raw_tab = line.startswith("\t")
        line = line.strip()
        if raw_tab and parts:  # an option list under "Available options in ...:"
            parts[-1] += (" " if parts[-1].endswith(":") else ", ") + line
        elif parts and parts[-1].endswith((".", ":")):
            parts[-1] += " " + line
        else:
            parts.append(line)
    return "; ".join(parts)


# -- what both pipelines share -------------------------------------------------------------------
@dataclass
class Options:
    steps: int
    warmup: int
    workers: int


@dataclass
class Setup:
    """The run's pieces, built from the config before anything is timed."""

    cfg: DictConfig
    choices: dict[str, str]
    options: Options
    settings: LoopSettings
    device: torch.device
    dataset: ImageDataset
    model: torch.nn.Module
    aug: Any
    optimizer_factory: Any
    schedule: Any
    precision: Any
    train_size: int  # images in the configured training split (sets the schedule's length)
    images: torch.Tensor  # uint8 (N, C, H, W): exactly (warmup + steps) batches, CPU
    labels: torch.Tensor

    @property
    def model_name(self) -> str:
        m = self.cfg.model
        name = self.choices.get("model", type(self.model).__name__)
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
        return build(self.cfg.model, in_channels=self.dataset.channels, num_classes=self.dataset.num_classes)


def build_setup(cfg: DictConfig, choices: dict[str, str], options: Options) -> Setup:
    """Build everything as `cifarzoo.task.train` does, so a bad config fails here, untimed."""
    settings = loop_settings(cfg)
    device = resolve_device(cfg.train.device)
    torch.manual_seed(cfg.seed)
    dataset = build(cfg.data)
    model = build(cfg.model, in_channels=dataset.channels, num_classes=dataset.num_classes)
    aug, optimizer_factory, schedule = build(cfg.aug), build(cfg.optim), build(cfg.sched)
    precision = build(cfg.precision)
    splits = dataset.load()
    n = len(splits.train_x)
    require(settings.batch_size <= n, "train.batch_size", f"must be at most the training-set size {n}", settings.batch_size)
    # Exactly the batches the bench needs; a small training split is cycled through.
    index = torch.arange((options.warmup + options.steps) * settings.batch_size) % n
    return Setup(
        cfg, choices, options, settings, device, dataset, model, aug, optimizer_factory, schedule, precision,
        n, splits.train_x[index], splits.train_y[index],
    )


@dataclass
class Measurement:
    pipeline: str
    precision: str
    seconds: float
    images: int

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
def bench_cifarzoo(s: Setup) -> Measurement:
    """The run's Trainer, one epoch over the warm-up batches, then one over the timed ones."""
    settings = replace(s.settings, epochs=1)
    bs, warmup_images = settings.batch_size, s.options.warmup * settings.batch_size
    model = s.model
    if s.device.type == "cuda":
        model = model.to(s.device, memory_format=torch.channels_last)
    model = model.to(s.device)
    s.precision.setup(s.device)
    optimizer = s.optimizer_factory.build(model.parameters())
    scheduler = s.schedule.build(optimizer, s.train_size // bs, s.settings.epochs)
    generator = torch.Generator(device=s.device).manual_seed(s.cfg.seed)
    unused_checkpoint = Path(tempfile.gettempdir()) / "cifarzoo-bench-unused.pt"  # only written on a stop signal
    no_stop = StopSignals()  # not entered: no handler installed, never set

    def trainer(images: torch.Tensor, labels: torch.Tensor) -> Trainer:
        empty = images[:0]
        data = DeviceData(Splits(images, labels, empty, labels[:0]), s.dataset.mean, s.dataset.std, s.device)
        return Trainer(
            model, data, s.aug, optimizer, scheduler, s.precision, settings, generator,
            checkpoint_path=unused_checkpoint, checkpoint_extra={}, on_epoch=lambda epoch, metrics: None,
        )

    warm = trainer(s.images[:warmup_images], s.labels[:warmup_images])
    timed = trainer(s.images[warmup_images:], s.labels[warmup_images:])
    name = s.choices.get("precision", type(s.precision).__name__)
    if s.options.warmup:
        progress(f"cifarzoo: warm-up, {s.options.warmup} steps")
        _timed(lambda: warm._train(no_stop), s.device)
    progress(f"cifarzoo: measuring {s.options.steps} steps")
    seconds = _timed(lambda: timed._train(no_stop), s.device)
    return Measurement("cifarzoo", name, seconds, s.options.steps * bs)


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


def bench_classic(s: Setup) -> Measurement:
    bs, device = s.settings.batch_size, s.device
    pin = device.type == "cuda"
    loader = torch.utils.data.DataLoader(
        PILImages(s.images, s.labels, classic_transform(s.dataset)),
        batch_size=bs, shuffle=True, drop_last=True, num_workers=s.options.workers, pin_memory=pin,
        generator=torch.Generator().manual_seed(s.cfg.seed),
    )
    model = s.fresh_model().to(device)
    optimizer = s.optimizer_factory.build(model.parameters())
    scheduler = s.schedule.build(optimizer, s.train_size // bs, s.settings.epochs)
    model.train()
    batches = iter(loader)  # starts the workers: part of the warm-up, not timed

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
    del batches  # stops the workers
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
    by_name = {r.pipeline: r for r in results}
    rows = [
        {
            "pipeline": r.pipeline,
            "device": str(s.device),
            "model": s.model_name,
            "batch_size": s.settings.batch_size,
            "precision": r.precision,
            "images_per_s": r.images_per_s,
            "seconds": r.seconds,
        }
        for r in results
    ]
    return {
        "pipelines": rows,
        "ratio": by_name["cifarzoo"].images_per_s / by_name["classic"].images_per_s,
        "device": str(s.device),
        "device_name": device_name(s.device),
        "cpu_threads": torch.get_num_threads(),
        "model": s.model_name,
        "num_params": count_parameters(s.model),
        "batch_size": s.settings.batch_size,
        "data": s.choices.get("data", ""),
        "steps": s.options.steps,
        "warmup": s.options.warmup,
        "workers": s.options.workers,
        "torch": torch.__version__,
    }


def format_table(result: dict[str, Any]) -> str:
    header = ("pipeline", "device", "model", "batch size", "precision", "images/s")
    rows = [
        (r["pipeline"], r["device"], r["model"], str(r["batch_size"]), r["precision"], f"{r['images_per_s']:.0f}")
        for r in result["pipelines"]
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) if i == 5 else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
             for row in (header, *rows)]
    lines.append(
        f"ratio cifarzoo/classic: {result['ratio']:.2f}x  "
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
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for run.py (default data=fake)")
    return parser.parse_intermixed_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    options = Options(args.steps, args.warmup, args.workers)
    try:
        try:
            cfg, choices = compose_config(args.overrides)
            setup = build_setup(cfg, choices, options)
        except (HydraException, OmegaConfBaseException) as error:
            raise ConfigError("overrides", one_line(str(error))) from None
        progress(
            f"built {setup.model_name} ({count_parameters(setup.model) / 1e6:.2f}M params), "
            f"data {choices.get('data', '')} ({len(setup.images)} images used), batch {setup.settings.batch_size}, "
            f"{choices.get('precision', '')}, on {setup.device}"
        )
        results = [bench_cifarzoo(setup)]
        progress(f"cifarzoo: {results[0].images_per_s:.0f} images/s ({results[0].seconds:.2f} s)")
        results.append(bench_classic(setup))
        progress(f"classic: {results[1].images_per_s:.0f} images/s ({results[1].seconds:.2f} s)")
    except ConfigError as error:
        print(f"cifarzoo: error: {error}", file=sys.stderr)
        return 2
    result = report(setup, results)
    print(json.dumps(result) if args.json else format_table(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
