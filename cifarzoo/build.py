"""Config -> the parts of a run, validated: every ConfigError is raised here, before training."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from cifarzoo.config import build
from cifarzoo.data import DeviceData, ImageDataset
from cifarzoo.errors import require
from cifarzoo.loop import LoopSettings, Parts
from cifarzoo.models.ghost_bn import check_ghost_batch_size, use_ghost_batch_norm


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
    t = cfg.train
    require(t.channels_last in (None, True, False), "train.channels_last", "must be true, false or null", t.channels_last)
    require(isinstance(t.compile, bool), "train.compile", "must be true or false", t.compile)
    require(precision.supports_closure_optimizers or not optimizer_factory.needs_closure, "precision",
            f"{type(precision).__name__}'s GradScaler cannot step optim={type(optimizer_factory).__name__}, which "
            "evaluates the loss twice per step; use amp_bf16, fp16 or fp32")
    if t.ghost_batch_size is not None:
        check_ghost_batch_size(t.ghost_batch_size, settings.batch_size)
        model = use_ghost_batch_norm(model, t.ghost_batch_size)
    splits = dataset.load()
    n = len(splits.train_x)
    require(settings.batch_size <= n, "train.batch_size", f"must be at most the training-set size {n}", settings.batch_size)

    channels_last = device.type == "cuda" if t.channels_last is None else t.channels_last
    data = DeviceData(splits, dataset.mean, dataset.std, device, dataset.num_classes, channels_last)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = precision.prepare(model.to(device))
    precision.setup(device)
    optimizer = optimizer_factory.build(model, settings.batch_size)
    scheduler = schedule.build(optimizer, n // settings.batch_size, settings.epochs)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    forward = torch.compile(model) if t.compile else None
    parts = Parts(settings, model, data, aug, optimizer, scheduler, precision, generator, optimizer_factory.grad_clip,
                  forward)
    return BuiltRun(parts, dataset, device)
