"""Capture legality of the graph step, checked on CPU: one graph-safe step (after warm-up) of every
covered recipe and of every model option runs under `CaptureGuard` (tests/capture_guard.py), which
fails on host syncs, on random draws from generators a replay would not advance, and on
host-to-device copies. An option that cannot pass must declare itself eager-only
(`graph_unsupported`): the run then takes the eager step (`train.step=auto`) or refuses
(`train.step=graph`). Select with `pytest tests -k "capture or graph_safe"`."""

from __future__ import annotations

import re

import pytest
import torch
from capture_guard import CaptureGuard, NotCapturable
from conftest import CONF_DIR, compose_config
from test_model_zoo import SMALL

from cifarzoo.build import build_run
from cifarzoo.distill import Distillation
from cifarzoo.errors import ConfigError
from cifarzoo.steps import GraphStep
from cifarzoo.steps.graph import WARMUP_STEPS
from cifarzoo.trained import TrainedRun

TINY = ["data=fake", "data.num_train=64", "data.num_test=16", "train.batch_size=8", "train.epochs=1",
        "train.device=cpu", "train.step=graph", "train.channels_last=false"]
SMALL_PREACT = ["model.depth=8", "model.base_channels=4"]

# Every recipe the graph step covers (options with `graph_unsupported` are tested to fall back in
# tests/test_steps.py), on the small ResNet-preact.
RECIPES = {
    "sgd-standard-fp32": [],
    "adam-amp_bf16": ["optim=adam", "precision=amp_bf16"],
    "adamw-amp_fp16-grad_clip": ["optim=adamw", "precision=amp_fp16", "optim.grad_clip=0.5"],
    "amsgrad-no_wd_on_bn": ["optim=amsgrad", "optim.no_weight_decay_on_bn=true"],
    "ghost_bn": ["train.ghost_batch_size=4"],
    "cutout-label_smoothing": ["aug=[cutout,label_smoothing]"],
    "random_erasing-hysts": ["aug=random_erasing"],
    "random_erasing-black-log_uniform": ["aug=random_erasing", "aug.random_erasing.fill=black",
                                         "aug.random_erasing.aspect_sampling=log_uniform"],
    "random_erasing-random": ["aug=random_erasing", "aug.random_erasing.fill=random"],
    "random_erasing-zero": ["aug=random_erasing", "aug.random_erasing.fill=zero"],
    "mixup": ["aug=mixup"],
    "cutmix": ["aug=cutmix"],
    "ricap": ["aug=ricap"],
    "random_resized_crop": ["aug=random_resized_crop"],
    "none-sgdr-warmup": ["aug=none", "sched=sgdr", "sched.t0=1", "sched.warmup=linear", "sched.warmup_epochs=1",
                         "train.epochs=2"],
    "distill": [],  # the recipe wrapped by Distillation, below
}
MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
# Model settings beyond the zoo's small ones: the scan must see the random parts switched on.
# The slowest ones on a smaller batch (their BN layers see >= 2 values per channel).
MODEL_EXTRA = {
    "stochastic_depth_resnet": ["model.survival_prob_last=0.5", "data.image_size=16", "train.batch_size=4"],
    "swin": ["model.drop_path_rate=0.1"],
    **{slow: ["train.batch_size=2"] for slow in ("inception_v3", "inception_v4", "inception_resnet_v2")},
    **{slow: ["train.batch_size=4"] for slow in ("spp_resnet", "coatnet", "regnet")},
}


def scan(overrides: list[str], distill: bool = False, warmup: int = WARMUP_STEPS) -> int:
    """Build the run with the graph step's CPU form, warm up (as on CUDA: `WARMUP_STEPS`; one step
    creates every lazy state) with no host-to-device copy, then run one step under the whole guard. Returns the number of random
    draws the step made."""
    run = build_run(compose_config([*TINY, *overrides]), graph_on_cpu=True)
    parts = run.parts
    if distill:
        teacher = build_run(compose_config([*TINY, *SMALL_PREACT]), graph_on_cpu=True).parts.model
        parts.aug = Distillation(parts.aug, teacher.eval().requires_grad_(False), 4.0, 0.9)
        parts.train_step = GraphStep(parts, capture=False)
    step = parts.train_step
    assert isinstance(step, GraphStep)
    sums = torch.zeros(2, dtype=torch.float64)
    b = parts.settings.batch_size
    perm = parts.data.permutation(parts.generator)
    for i in range(warmup):  # warm-up may sync, but copies no host data to the device either
        with CaptureGuard(parts.generator, copies_only=True):
            step(perm[i * b:(i + 1) * b], sums)
    index = perm[warmup * b:(warmup + 1) * b]
    with CaptureGuard(parts.generator) as guard:
        step(index, sums)
    assert torch.isfinite(sums).all()
    return guard.random_ops


@pytest.mark.parametrize("recipe", RECIPES)
def test_graph_safe_step_of_every_recipe(recipe, one_thread):
    draws = scan([*SMALL_PREACT, *RECIPES[recipe]], distill=recipe == "distill")
    assert draws > 0 or recipe.startswith("none")  # the guard saw the augmentation's draws


@pytest.mark.parametrize("option", MODELS)
def test_graph_safe_step_of_every_model(option, one_thread):
    overrides = [f"model={option}", *SMALL[option], *MODEL_EXTRA.get(option, [])]
    try:
        run = build_run(compose_config([*TINY, *overrides, "train.step=auto"]), graph_on_cpu=True)
    except ConfigError as error:
        pytest.fail(f"model={option} does not build: {error}")
    if run.step.kind == "eager":  # declared eager-only: auto falls back, graph refuses
        assert "model: " in run.step.reason, run.step.reason
        with pytest.raises(ConfigError, match=r"^train.step: graph cannot be used: model: "):
            build_run(compose_config([*TINY, *overrides]), graph_on_cpu=True)
        return
    scan(overrides, warmup=1)


def test_the_guard_catches_what_a_capture_cannot_take(one_thread):
    """Each kind of obstacle, in a model's forward, fails the scan."""
    generator = torch.Generator().manual_seed(0)
    x = torch.ones(4)
    other = torch.Generator().manual_seed(1)
    cases = {
        ".item()": lambda: x.sum().item(),
        "bool(tensor)": lambda: bool(x.sum() > 0),
        "aten.nonzero": lambda: torch.nonzero(x),
        "boolean mask": lambda: x[x > 0],
        "neither the run's nor the default": lambda: torch.rand(4, generator=other),
        "copied to the device": lambda: torch.zeros(()).to(x.device),
        "torch.tensor(host data)": lambda: torch.tensor([1.0, 2.0], device=x.device),
    }
    for what, op in cases.items():
        with pytest.raises(NotCapturable, match=re.escape(what)), CaptureGuard(generator):
            op()
    with CaptureGuard(generator) as guard:  # what a captured step may do
        torch.rand(4, device=x.device, generator=generator) + torch.rand(4, device=x.device) * torch.zeros_like(x)
        torch.nn.functional.one_hot(torch.arange(4, device=x.device), 5)  # CPU-only sync, allowed by name
        x[0] = 1  # a Python number assigned: a fill on CUDA
    assert guard.random_ops == 2


def test_graph_safe_ghost_bn_with_cumulative_momentum():
    """momentum=None: the fold reads the step count on the device, not with .item()."""
    from cifarzoo.models.ghost_bn import GhostBatchNorm2d

    ghost = GhostBatchNorm2d(3, momentum=None, ghost_batch_size=2)
    x = torch.randn(8, 3, 4, 4)
    ghost(x)
    with CaptureGuard(torch.Generator()):
        ghost(x)
    assert ghost.num_batches_tracked.item() == 8


def test_model_and_teacher_are_asked_for_graph_obstacles(monkeypatch, tmp_path):
    """A layer that declares `graph_unsupported` makes its model (and a teacher built of it) eager-only."""
    from cifarzoo import build as build_module
    from cifarzoo.models.resnet_preact import ResNetPreAct

    monkeypatch.setattr(ResNetPreAct, "graph_unsupported", "resnet_preact: a host-side decision", raising=False)
    run = build_run(compose_config([*TINY, *SMALL_PREACT, "train.step=auto"]), graph_on_cpu=True)
    assert run.step.kind == "eager"
    assert run.step.reason == "train.step=auto: eager because model: resnet_preact: a host-side decision"
    with pytest.raises(ConfigError, match=r"^train.step: graph cannot be used: model: resnet_preact: a host-side"):
        build_run(compose_config([*TINY, *SMALL_PREACT]), graph_on_cpu=True)

    # The teacher: a run trained with ResNet-preact (its config; find_teacher's checks are tests/test_distill.py's).
    teacher = TrainedRun(tmp_path, tmp_path / "checkpoint.pt", compose_config([*TINY, *SMALL_PREACT]))
    network = build_module.teacher_network(teacher, teacher.dataset())
    assert isinstance(network, ResNetPreAct) and next(network.parameters()).is_meta
    student = ["model=lenet"]
    monkeypatch.setattr(build_module, "find_teacher", lambda cfg, dataset: teacher)
    with pytest.raises(ConfigError, match=r"^train.step: graph cannot be used: train.distill.teacher: resnet_preact"):
        build_module.build_components(compose_config([*TINY, *student]))
