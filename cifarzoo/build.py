"""Config -> the parts of a run, validated: every ConfigError is raised here, before training."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from cifarzoo.config import build
from cifarzoo.data import DeviceData, ImageDataset
from cifarzoo.errors import require
from cifarzoo.loop import LoopSettings, Parts


@dataclass
class BuiltRun:
    parts: Parts
    dataset: ImageDataset
    device: torch.device


def loop_settings(cfg: DictConfig) -> LoopSettings:
    t = cfg.train
    for key in ("epochs", "batch_size", "eval_every", "eval_batch_size", "checkpoint_every"):
        value = t[key]
        require(isinstance(value, int) and not isinstance(value, bool) and value > 0, f"train.{key}", "must be a positive int", value)
    require(isinstance(cfg.seed, int), "seed", "must be an int", cfg.seed)
    return LoopSettings(t.epochs, t.batch_size, t.eval_every, t.eval_batch_size, t.checkpoint_every)


def resolve_device(name: str) -> torch.device:
    require(name in ("auto", "cpu", "cuda") or str(name).startswith("cuda:"), "train.device", "must be auto, cpu or cuda", name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    require(name == "cpu" or torch.cuda.is_available(), "train.device", "asks for CUDA but no CUDA device is visible", name)
    return torch.device(name)


def build_run(cfg: DictConfig) -> BuiltRun:
    """Seed, build and validate every part; load the data onto the training device."""
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

    data = DeviceData(splits, dataset.mean, dataset.std, device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    model = model.to(device)
    precision.setup(device)
    optimizer = optimizer_factory.build(model, settings.batch_size)
    scheduler = schedule.build(optimizer, n // settings.batch_size, settings.epochs)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    parts = Parts(settings, model, data, aug, optimizer, scheduler, precision, generator, optimizer_factory.grad_clip)
    return BuiltRun(parts, dataset, device)
