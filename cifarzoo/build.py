"""Config -> the parts of a run, validated: every ConfigError is raised here, before training."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig
from torch.nn.parallel import DistributedDataParallel

from cifarzoo.aug import Recipe
from cifarzoo.config import build, build_model, check_top_level_keys
from cifarzoo.data import DeviceData, ImageDataset
from cifarzoo.distill import Distillation, find_teacher
from cifarzoo.distributed import Ranks
from cifarzoo.errors import is_int, require
from cifarzoo.loop import LoopSettings, Parts
from cifarzoo.models.ghost_bn import check_ghost_batch_size, use_ghost_batch_norm
from cifarzoo.precision import Precision
from cifarzoo.steps import EagerStep, GraphStep, StepChoice, TrainStep, check_request, choose, obstacles
from cifarzoo.trained import TrainedRun, load_model


@dataclass
class BuiltRun:
    parts: Parts
    dataset: ImageDataset
    device: torch.device
    num_train: int  # images trained on per epoch, over all ranks
    num_test: int
    step: StepChoice  # the training step (`train.step`) and why
    teacher: TrainedRun | None = None  # `train.distill.teacher`, found


def loop_settings(cfg: DictConfig) -> LoopSettings:
    t = cfg.train
    for key in ("epochs", "batch_size", "eval_every", "eval_batch_size", "checkpoint_every"):
        value = t[key]
        require(is_int(value) and value > 0, f"train.{key}", "must be a positive int", value)
    require(isinstance(cfg.seed, int), "seed", "must be an int", cfg.seed)
    return LoopSettings(t.epochs, t.batch_size, t.eval_every, t.eval_batch_size, t.checkpoint_every)


def resolve_device(name: str, ranks: Ranks = Ranks()) -> torch.device:
    """`train.device` as a torch device; in a data-parallel run on GPUs, the rank's own GPU."""
    require(name in ("auto", "cpu", "cuda") or str(name).startswith("cuda:"), "train.device", "must be auto, cpu or cuda", name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    require(name == "cpu" or torch.cuda.is_available(), "train.device", "asks for CUDA but no CUDA device is visible", name)
    if ranks.world_size > 1 and name != "cpu":
        require(name == "cuda", "train.device", "must be auto or cuda in a data-parallel run (each rank takes "
                "the GPU of its local rank)", name)
        return ranks.cuda_device()
    return torch.device(name)


def rank_seed(seed: int, rank: int) -> int:
    """Rank 0 keeps the run's seed (a one-process run is unchanged); other ranks draw their own
    augmentation and dropout randomness from a hash of (seed, rank), kept to 32 bits because
    torch's CPU generator ignores the higher ones."""
    if rank == 0:
        return seed
    return int.from_bytes(hashlib.sha256(f"{seed}:{rank}".encode()).digest()[:4], "little")


@dataclass
class Components:
    """Every part of a run built from its config, before any data is loaded."""

    settings: LoopSettings
    dataset: ImageDataset
    model: torch.nn.Module
    aug: Recipe
    optimizer_factory: Any
    schedule: Any
    precision: Precision
    step_request: str  # train.step
    step_obstacles: list[str]  # why the step cannot be captured ([]: it can, on CUDA)
    teacher: TrainedRun | None = None  # `train.distill.teacher`, found and checked (its weights not read)


def build_components(cfg: DictConfig, ranks: Ranks = Ranks()) -> Components:
    """Build and validate every part that needs no data (each ConfigError a run can raise, but
    for the sizes of the data and the device): also what `python -m sweeps check` runs."""
    check_top_level_keys(cfg)
    settings = loop_settings(cfg)
    world = ranks.world_size
    require(settings.batch_size % world == 0, "train.batch_size",
            f"must be divisible by the number of processes {world} (it is the global batch size)", settings.batch_size)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    dataset = build(cfg.data)
    model = build_model(cfg.model, dataset.channels, dataset.num_classes)
    if ranks.rank > 0:  # rank 0 goes on with the stream after the initial weights, as a one-process run
        torch.manual_seed(rank_seed(cfg.seed, ranks.rank))
    aug, optimizer_factory, schedule = build(cfg.aug), build(cfg.optim), build(cfg.sched)
    aug.check_image_size(dataset.image_size, dataset.image_size)
    aug.use_normalization(dataset.mean, dataset.std)
    precision = build(cfg.precision)
    aug.compute_loss_in(precision.loss_dtype)
    t = cfg.train
    require(t.channels_last in (None, True, False), "train.channels_last", "must be true, false or null", t.channels_last)
    require(isinstance(t.compile, bool), "train.compile", "must be true or false", t.compile)
    require(isinstance(t.distributed, bool), "train.distributed", "must be true or false", t.distributed)
    require(precision.supports_closure_optimizers or not optimizer_factory.needs_closure, "precision",
            f"{type(precision).__name__}'s GradScaler cannot step optim={type(optimizer_factory).__name__}, which "
            "evaluates the loss twice per step; use amp_bf16, fp16 or fp32")
    if t.ghost_batch_size is not None:
        check_ghost_batch_size(t.ghost_batch_size, settings.batch_size // world,
                               "train.batch_size" if world == 1 else f"the per-process batch train.batch_size/{world}")
        model = use_ghost_batch_norm(model, t.ghost_batch_size)
    step_request = check_request(t.step)
    teacher = find_teacher(cfg, dataset)
    named_parts = [("model", model), ("optim", optimizer_factory), ("precision", precision),
                   *((f"aug.{k}", b) for k, b in aug.blocks.items())]
    if teacher is not None:
        named_parts.append(("train.distill.teacher", teacher_network(teacher, dataset)))
    blocking = obstacles(t, named_parts)
    if step_request == "graph" and blocking:  # the device is checked when the run is built on it
        choose(step_request, torch.device("cuda"), blocking)
    return Components(settings, dataset, model, aug, optimizer_factory, schedule, precision, step_request, blocking,
                      teacher)


def teacher_network(teacher: TrainedRun, dataset: ImageDataset) -> torch.nn.Module:
    """The teacher's network on the meta device (no weights, no memory), to ask it for graph obstacles."""
    with torch.device("meta"), torch.random.fork_rng(devices=[]):
        return build_model(teacher.config.model, dataset.channels, dataset.num_classes)


def build_run(cfg: DictConfig, ranks: Ranks = Ranks(), graph_on_cpu: bool = False) -> BuiltRun:
    """Seed, build and validate every part; load the rank's share of the data onto its device.
    `graph_on_cpu` (tests): `train.step=graph` on CPU runs the graph step's graph-safe form eagerly."""
    device = resolve_device(cfg.train.device, ranks)
    c = build_components(cfg, ranks)
    step = choose(c.step_request, device, c.step_obstacles, allow_cpu=graph_on_cpu)
    settings, dataset, model, precision = c.settings, c.dataset, c.model, c.precision
    aug, optimizer_factory, schedule = c.aug, c.optimizer_factory, c.schedule
    t, world = cfg.train, ranks.world_size
    local_batch = settings.batch_size // world
    splits = dataset.load()
    n = len(splits.train_x)
    require(settings.batch_size <= n // world * world, "train.batch_size",
            f"must be at most the training-set size {n // world * world}", settings.batch_size)
    num_test = len(splits.test_x)
    splits = splits.shard(ranks.rank, world)

    require(not (t.channels_last and device.type == "cpu"), "train.channels_last",
            "must be false or null on CPU: this torch's CPU backward of a channels_last 1x1 stride-2 convolution "
            "crashes the process (SIGSEGV)", t.channels_last)
    channels_last = device.type == "cuda" if t.channels_last is None else t.channels_last
    data = DeviceData(splits, dataset.mean, dataset.std, device, dataset.num_classes, channels_last)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = precision.prepare(model.to(device))
    precision.setup(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fastest convolution algorithms, timed on the first steps (not bitwise reproducible)
    if c.teacher is not None:
        aug = distillation(cfg, aug, c.teacher, device, precision, channels_last)
    optimizer = (optimizer_factory.build(model, settings.batch_size, fused=True) if step.kind == "graph"
                 else optimizer_factory.build(model, settings.batch_size))
    scheduler = schedule.build(optimizer, data.num_train // local_batch, settings.epochs)
    generator = torch.Generator(device=device).manual_seed(rank_seed(cfg.seed, ranks.rank))
    forward = torch.compile(model) if t.compile else None
    # DDP around the (compiled) model, for training only: evaluation runs each rank's plain model on
    # its test shard, where DDP's per-forward buffer broadcast would need equal shards.
    train_forward = None
    if world > 1:
        device_ids = [device] if device.type == "cuda" else None
        train_forward = DistributedDataParallel(model if forward is None else forward, device_ids=device_ids)
    parts = Parts(settings, model, data, aug, optimizer, scheduler, precision, generator, optimizer_factory.grad_clip,
                  forward, ranks, train_forward)
    parts.train_step = make_step(step, parts)
    return BuiltRun(parts, dataset, device, data.num_train * world, num_test, step, c.teacher)


def distillation(cfg: DictConfig, recipe: Recipe, teacher: TrainedRun, device: torch.device, precision: Precision,
                 channels_last: bool) -> Distillation:
    """The recipe with the teacher's soft targets (`cifarzoo.distill`); the teacher on the run's device, in
    the run's precision and memory format."""
    model = load_model(teacher, device, "train.distill.teacher").model
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    d = cfg.train.distill
    return Distillation(recipe, precision.prepare(model), d.temperature, d.alpha)


def make_step(step: StepChoice, parts: Parts) -> TrainStep:
    if step.kind == "graph":
        return GraphStep(parts, capture=parts.data.device.type == "cuda", fallback=step.fallback)
    return EagerStep(parts)
