"""LR schedules per step, and the optimizer options as configured."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import compose_config
from cifarzoo.config import build
from cifarzoo.sched import Cosine, MultiStep


def lrs(schedule, steps_per_epoch: int, epochs: int, lr: float = 0.1) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = schedule.build(opt, steps_per_epoch, epochs)
    out = []
    for _ in range(steps_per_epoch * epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_anneals_per_step_from_lr_to_floor():
    values = lrs(Cosine(lr_min_factor=0.0), steps_per_epoch=10, epochs=5)
    assert values[0] == pytest.approx(0.1)
    assert values[25] == pytest.approx(0.05)  # half way
    assert values[-1] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 49 / 50)))
    assert all(a > b for a, b in zip(values, values[1:]))  # changes every step, not per epoch
    floored = lrs(Cosine(lr_min_factor=0.1), steps_per_epoch=10, epochs=5)
    assert min(floored) > 0.01


def test_multistep_drops_at_the_milestone_epochs():
    values = lrs(MultiStep(milestones=[2, 4], gamma=0.1), steps_per_epoch=3, epochs=5)
    assert values == pytest.approx([0.1] * 6 + [0.01] * 6 + [0.001] * 3)


def test_sgd_option_builds_nesterov_sgd_with_the_seed_defaults():
    cfg = compose_config([])
    opt = build(cfg.optim).build([torch.nn.Parameter(torch.zeros(1))])
    assert isinstance(opt, torch.optim.SGD)
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (0.1, 0.9, True, 5e-4)
    opt = build(compose_config(["optim.nesterov=false", "optim.lr=0.2"]).optim).build([torch.nn.Parameter(torch.zeros(1))])
    assert opt.param_groups[0]["nesterov"] is False and opt.param_groups[0]["lr"] == 0.2


def test_sched_options_from_config():
    assert isinstance(build(compose_config(["sched=cosine"]).sched), Cosine)
    multistep = build(compose_config(["sched=multistep", "sched.milestones=[3,6]"]).sched)
    assert isinstance(multistep, MultiStep) and multistep.milestones == [3, 6]
