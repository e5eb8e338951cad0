"""LR schedules per step, and the optimizer options as configured."""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch

from conftest import compose_config
from cifarzoo.config import build
from cifarzoo.errors import ConfigError
from cifarzoo.paths import REPO_DIR
from cifarzoo.sched import SGDR, Constant, Cosine, Linear, MultiStep, Schedule


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


# --- every option, with and without warmup -------------------------------------------------

S = 1e-3  # warmup start factor (hysts' default)


def test_constant_stays_at_lr():
    assert lrs(Constant(), steps_per_epoch=4, epochs=3) == pytest.approx([0.1] * 12)


def test_linear_decays_per_step_and_hits_the_floor_at_the_end():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = Linear(lr_min_factor=0.2).build(opt, 5, 4)
    values = []
    for _ in range(20):
        values.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert values[0] == pytest.approx(0.1)
    assert values[10] == pytest.approx(0.1 * (1 - 0.8 * 10 / 20))
    assert values[-1] == pytest.approx(0.1 * (1 - 0.8 * 19 / 20))
    assert all(a > b for a, b in zip(values, values[1:]))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.02)  # the floor, after the last step
    assert lrs(Linear(), 5, 4)[-1] == pytest.approx(0.1 / 20)  # default floor 0


def test_sgdr_restarts_at_the_period_ends():
    # t0=1, t_mult=2: periods of 1, 2, 4 epochs -> restarts at epochs 1 and 3; 7 epochs of 4 steps
    values = lrs(SGDR(t0=1, t_mult=2, lr_min_factor=0.1), steps_per_epoch=4, epochs=7)

    def cos(progress):
        return 0.1 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    expected = [cos(i / 4) for i in range(4)] + [cos(i / 8) for i in range(8)] + [cos(i / 16) for i in range(16)]
    assert values == pytest.approx(expected)
    assert [i for i in range(1, 28) if values[i] > values[i - 1]] == [4, 12]  # the restart epochs 1 and 3
    assert values[4] == values[12] == pytest.approx(0.1)
    assert values[2] == values[8] == values[20] == pytest.approx(cos(0.5))  # half way through each period
    t_mult_1 = lrs(SGDR(t0=2, t_mult=1), steps_per_epoch=2, epochs=6)
    assert t_mult_1 == pytest.approx(t_mult_1[:4] * 3) and t_mult_1[0] == pytest.approx(0.1)


def test_linear_warmup_then_the_main_schedule_over_the_remaining_epochs():
    # 2 warmup epochs of 4 steps, then multistep with milestone 1 counted from the end of the warmup
    values = lrs(MultiStep(milestones=[1], gamma=0.5, warmup="linear", warmup_epochs=2), 4, 4)
    assert values[:8] == pytest.approx([0.1 * (S + (1 - S) * t / 8) for t in range(8)])
    assert values[0] == pytest.approx(1e-4)
    assert values[8:] == pytest.approx([0.1] * 4 + [0.05] * 4)
    # cosine compressed into the 3 epochs after a 1-epoch warmup: half way at step 4 + 6
    cosine = lrs(Cosine(warmup="linear", warmup_epochs=1), 4, 4)
    assert cosine[4] == pytest.approx(0.1) and cosine[10] == pytest.approx(0.05)
    assert cosine[-1] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 11 / 12)))


def test_exponential_warmup_is_hysts_power_ramp():
    values = lrs(Constant(warmup="exponential", warmup_epochs=1), steps_per_epoch=10, epochs=2)
    assert values[:10] == pytest.approx([0.1 * (S + (1 - S) * (t / 10) ** 4) for t in range(10)])
    assert values[5] == pytest.approx(0.1 * (S + (1 - S) * 0.0625))
    assert values[10:] == pytest.approx([0.1] * 10)
    # SGDR periods start after the warmup: warmup 1 epoch, then periods 1, 1
    sgdr = lrs(SGDR(t0=1, t_mult=1, warmup="exponential", warmup_epochs=1), 2, 3)
    assert sgdr[2:] == pytest.approx([0.1, 0.05, 0.1, 0.05])


def test_warmup_none_or_zero_epochs_is_no_warmup():
    plain = lrs(Linear(), 3, 4)
    assert lrs(Linear(warmup="none", warmup_epochs=2), 3, 4) == pytest.approx(plain)
    assert lrs(Linear(warmup="linear", warmup_epochs=0), 3, 4) == pytest.approx(plain)


def test_lr_logged_per_epoch_is_the_last_step_of_the_epoch_with_warmup():
    values = lrs(Cosine(warmup="linear", warmup_epochs=1), steps_per_epoch=5, epochs=3)
    last_of_epoch = values[4::5]
    assert last_of_epoch[0] == pytest.approx(0.1 * (S + (1 - S) * 4 / 5))


SCHED_YAMLS = sorted(p.stem for p in (REPO_DIR / "conf" / "sched").glob("*.yaml"))


@functools.cache
def _composed_sched(name: str):
    return compose_config([f"sched={name}"]).sched


def sched_node(name: str, **values):
    """The composed `sched=<name>` node (composed once per option) with `values` set on top."""
    node = copy.deepcopy(_composed_sched(name))
    for key, value in values.items():
        node[key] = value
    return node


def test_all_sched_options_are_present():
    assert SCHED_YAMLS == ["constant", "cosine", "linear", "multistep", "sgdr"]


def test_warmup_keys_from_the_command_line():
    cfg = compose_config(["sched=linear", "sched.warmup=exponential", "sched.warmup_epochs=3", "sched.lr_min_factor=0.1"])
    schedule = build(cfg.sched)
    assert isinstance(schedule, Linear)
    assert (schedule.warmup, schedule.warmup_epochs, schedule.lr_min_factor) == ("exponential", 3, 0.1)


@pytest.mark.parametrize("name", SCHED_YAMLS)
def test_every_sched_yaml_composes_and_builds(name):
    defaults = _composed_sched(name)
    assert (defaults.warmup, defaults.warmup_epochs) == ("none", 0)
    epochs = compose_config([]).train.epochs
    build(defaults).build(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1), 3, epochs)
    for warmup in ("none", "linear", "exponential"):
        schedule = build(sched_node(name, warmup=warmup, warmup_epochs=5, **({"t0": 5} if name == "sgdr" else {})))
        assert isinstance(schedule, Schedule) and schedule.warmup == warmup and schedule.warmup_epochs == 5
        values = lrs(schedule, steps_per_epoch=2, epochs=15)
        if warmup == "none":
            assert values[0] == pytest.approx(0.1)
        else:
            assert values[0] == pytest.approx(0.1 * S) and values[10] == pytest.approx(0.1)  # end of the warmup


@pytest.mark.parametrize(
    ("name", "values", "message"),
    [
        ("constant", {"warmup": "cosine"}, "sched.warmup: must be none, linear or exponential (got 'cosine')"),
        ("cosine", {"warmup": "linear", "warmup_epochs": -1}, "sched.warmup_epochs: must be an int >= 0 (got -1)"),
        ("cosine", {"warmup_epochs": 1.5}, "sched.warmup_epochs: must be an int >= 0 (got 1.5)"),
        ("cosine", {"lr_min_factor": 1.5}, "sched.lr_min_factor: must be in [0, 1] (got 1.5)"),
        ("linear", {"lr_min_factor": -0.1}, "sched.lr_min_factor: must be in [0, 1] (got -0.1)"),
        ("multistep", {"gamma": 0}, "sched.gamma: must be in (0, 1] (got 0)"),
        ("multistep", {"milestones": [0]}, "sched.milestones: must be increasing positive epochs (got [0])"),
        ("sgdr", {"t0": 0}, "sched.t0: must be an int >= 1 (epochs) (got 0)"),
        ("sgdr", {"t_mult": 1.5}, "sched.t_mult: must be an int >= 1 (got 1.5)"),
        ("sgdr", {"t_mult": 0}, "sched.t_mult: must be an int >= 1 (got 0)"),
        ("sgdr", {"lr_min_factor": 2}, "sched.lr_min_factor: must be in [0, 1] (got 2)"),
    ],
)
def test_bad_sched_values_raise_config_error(name, values, message):
    with pytest.raises(ConfigError) as info:
        build(sched_node(name, **values))
    assert str(info.value) == message
    assert info.value.key == message.split(":")[0]


def test_bad_sched_value_from_the_command_line():
    with pytest.raises(ConfigError, match=r"^sched\.warmup_epochs: must be an int >= 0 \(got 1\.5\)$"):
        build(compose_config(["sched=sgdr", "sched.warmup=linear", "sched.warmup_epochs=1.5"]).sched)


@pytest.mark.parametrize(
    ("overrides", "epochs", "message"),
    [
        (("cosine", {"warmup": "linear", "warmup_epochs": 5}), 5,
         "sched.warmup_epochs: must be less than train.epochs (5) (got 5)"),
        (("sgdr", {"t0": 10, "t_mult": 2}), 200,
         "sched.t0: periods t0 * t_mult**k must end exactly at the end of the 200 epochs after warmup "
         "(they end at epochs 10, 30, 70, 150, 310) (got 10)"),
        (("sgdr", {"t0": 10, "warmup": "linear", "warmup_epochs": 5}), 200,
         "sched.t0: periods t0 * t_mult**k must end exactly at the end of the 195 epochs after warmup"),
    ],
)
def test_bad_run_length_raises_config_error_at_build(overrides, epochs, message):
    schedule = build(sched_node(overrides[0], **overrides[1]))
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ConfigError) as info:
        schedule.build(opt, 3, epochs)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
