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
from cifarzoo.optim import split_no_weight_decay
from cifarzoo.optim.adabound import AdaBoundOptimizer, bounds
from cifarzoo.optim.lars import LARSOptimizer, trust_ratio
from cifarzoo.sched import SGDR, Constant, Cosine, Linear, MultiStep, Schedule
from cifarzoo.task import train


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
    opt = build(cfg.optim).build(torch.nn.Linear(1, 1), 128)
    assert isinstance(opt, torch.optim.SGD)
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (0.1, 0.9, True, 5e-4)
    opt = build(compose_config(["optim.nesterov=false", "optim.lr=0.2"]).optim).build(torch.nn.Linear(1, 1), 128)
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


def test_linear_from_zero_warmup_is_the_tricks_seeds_warm_cosine():
    # GradualWarmupScheduler(multiplier=1): lr * t / W from exactly 0, then the cosine over the
    # 2 epochs left after the 2-epoch warmup (4 steps per epoch)
    values = lrs(Cosine(warmup="linear_from_zero", warmup_epochs=2), steps_per_epoch=4, epochs=4)
    expected = [0.1 * t / 8 for t in range(8)] + [0.1 * 0.5 * (1 + math.cos(math.pi * t / 8)) for t in range(8)]
    assert values == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert values[0] == 0.0 and values[4] == pytest.approx(0.05) and values[8] == pytest.approx(0.1)
    # hysts' `linear` starts at 1e-3 * lr: the two modes differ by (1 - t/W) * 1e-3 * lr
    hysts = lrs(Cosine(warmup="linear", warmup_epochs=2), steps_per_epoch=4, epochs=4)
    assert [h - v for h, v in zip(hysts[:8], values[:8])] == pytest.approx([0.1 * S * (1 - t / 8) for t in range(8)])
    assert hysts[8:] == pytest.approx(values[8:])
    # a warmup mode of every option, e.g. multistep milestones still count from its end
    multistep = lrs(MultiStep(milestones=[1], gamma=0.5, warmup="linear_from_zero", warmup_epochs=1), 2, 3)
    assert multistep == pytest.approx([0.0, 0.05, 0.1, 0.1, 0.05, 0.05])


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


def _fitting(name: str) -> dict:
    """Keys that make an option fit the 10 epochs after a 5-epoch warmup of 15 (its defaults are for 200)."""
    return {"sgdr": {"t0": 5}, "multistep": {"milestones": [3, 6]}}.get(name, {})


@pytest.mark.parametrize("name", SCHED_YAMLS)
def test_every_sched_yaml_composes_and_builds(name):
    defaults = _composed_sched(name)
    assert (defaults.warmup, defaults.warmup_epochs) == ("none", 0)
    epochs = compose_config([]).train.epochs
    build(defaults).build(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1), 3, epochs)
    for warmup in ("none", "linear", "exponential", "linear_from_zero"):
        schedule = build(sched_node(name, warmup=warmup, warmup_epochs=5, **_fitting(name)))
        assert isinstance(schedule, Schedule) and schedule.warmup == warmup and schedule.warmup_epochs == 5
        values = lrs(schedule, steps_per_epoch=2, epochs=15)
        if warmup == "none":
            assert values[0] == pytest.approx(0.1)
        else:
            start = 0.0 if warmup == "linear_from_zero" else 0.1 * S
            assert values[0] == pytest.approx(start, abs=0) and values[10] == pytest.approx(0.1)  # end of the warmup


@pytest.mark.parametrize(
    ("name", "values", "message"),
    [
        ("constant", {"warmup": "cosine"}, "sched.warmup: must be none, linear, exponential or linear_from_zero (got 'cosine')"),
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


# --- optim: shared keys, every option, LARS and AdaBound by hand ------------------------------

OPTIM_YAMLS = sorted(p.stem for p in (REPO_DIR / "conf" / "optim").glob("*.yaml"))


@functools.cache
def _composed_optim(name: str):
    return compose_config([f"optim={name}"]).optim


def optim_node(name: str, **values):
    node = copy.deepcopy(_composed_optim(name))
    for key, value in values.items():
        node[key] = value
    return node


class NormZoo(torch.nn.Module):
    """Norm layers of every kind, some not named `bn`, and a non-norm layer whose name has `bn` in it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, bias=False)
        self.bn = torch.nn.BatchNorm2d(4)
        self.conv_b = torch.nn.Conv2d(4, 4, 1, bias=True)
        self.norm = torch.nn.GroupNorm(2, 4)
        self.stage = torch.nn.Sequential(torch.nn.InstanceNorm2d(4, affine=True), torch.nn.Conv2d(4, 4, 1))
        self.ln = torch.nn.LayerNorm(4)
        self.bn_proj = torch.nn.Linear(4, 4, bias=False)  # not a norm layer, despite the name
        self.fc = torch.nn.Linear(4, 10)


def test_no_weight_decay_on_bn_selects_norm_layers_and_biases_by_module_type():
    model = NormZoo()
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = split_no_weight_decay(model)
    assert {names[id(p)] for p in no_decay} == {
        "bn.weight", "bn.bias", "conv_b.bias", "norm.weight", "norm.bias", "stage.0.weight", "stage.0.bias",
        "ln.weight", "ln.bias", "stage.1.bias", "fc.bias"}
    assert {names[id(p)] for p in decay} == {"conv.weight", "conv_b.weight", "stage.1.weight", "bn_proj.weight",
                                             "fc.weight"}
    for name in OPTIM_YAMLS:
        opt = build(optim_node(name, no_weight_decay_on_bn=True, weight_decay=1e-3)).build(model, 128)
        assert [len(g["params"]) for g in opt.param_groups] == [5, 11]
        assert [g["weight_decay"] for g in opt.param_groups] == [1e-3, 0.0]
        assert {id(p) for p in opt.param_groups[1]["params"]} == {id(p) for p in no_decay}
        opt = build(optim_node(name, weight_decay=1e-3)).build(model, 128)  # default: one group, all decayed
        assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 1e-3
        assert len(opt.param_groups[0]["params"]) == 16


def test_no_weight_decay_on_bn_from_the_command_line_on_a_real_model():
    cfg = compose_config(["optim.no_weight_decay_on_bn=true", "model.depth=8"])
    model = build(cfg.model, in_channels=3, num_classes=10)
    opt = build(cfg.optim).build(model, 128)
    decayed, not_decayed = opt.param_groups
    assert decayed["weight_decay"] == 5e-4 and not_decayed["weight_decay"] == 0.0
    assert all(p.dim() > 1 for p in decayed["params"]) and all(p.dim() == 1 for p in not_decayed["params"])


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "amsgrad", "adabound", "lars"])
def test_lr_scaling_linear_scales_lr_with_the_batch_size(name):
    node = optim_node(name, lr=0.1, lr_scaling="linear")
    assert node.base_batch_size == 128
    assert build(node).build(torch.nn.Linear(2, 2), 512).param_groups[0]["lr"] == pytest.approx(0.4)
    assert build(node).build(torch.nn.Linear(2, 2), 64).param_groups[0]["lr"] == pytest.approx(0.05)
    assert build(optim_node(name, lr=0.1, lr_scaling="linear", base_batch_size=256)).build(
        torch.nn.Linear(2, 2), 512).param_groups[0]["lr"] == pytest.approx(0.2)
    plain = build(optim_node(name, lr=0.1))
    assert plain.lr_scaling == "none" and plain.build(torch.nn.Linear(2, 2), 512).param_groups[0]["lr"] == 0.1


def test_lr_scaling_from_the_command_line_scales_adabound_final_lr_too():
    cfg = compose_config(["optim=adabound", "optim.lr_scaling=linear", "train.batch_size=512"])
    group = build(cfg.optim).build(torch.nn.Linear(2, 2), cfg.train.batch_size).param_groups[0]
    assert group["lr"] == pytest.approx(4e-3) and group["final_lr"] == pytest.approx(0.4)
    assert group["base_lr"] == pytest.approx(4e-3)


def test_all_optim_options_are_present():
    from cifarzoo.optim import BASE_OPTIMIZERS

    assert OPTIM_YAMLS == ["adabound", "adam", "adamw", "amsgrad", "asam", "lars", "sam", "sgd"]
    assert sorted(BASE_OPTIMIZERS) == [n for n in OPTIM_YAMLS if n not in ("sam", "asam")]  # SAM can wrap each


@pytest.mark.parametrize(
    ("name", "cls", "expected"),
    [
        ("sgd", torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}),
        ("adam", torch.optim.Adam, {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 5e-4,
                                    "amsgrad": False}),
        ("amsgrad", torch.optim.Adam, {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 5e-4,
                                       "amsgrad": True}),
        ("adamw", torch.optim.AdamW, {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 5e-2,
                                      "amsgrad": False}),
        ("adabound", AdaBoundOptimizer, {"lr": 1e-3, "betas": (0.9, 0.999), "final_lr": 0.1, "gamma": 1e-3,
                                         "eps": 1e-8, "weight_decay": 5e-4}),
        ("lars", LARSOptimizer, {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "eps": 1e-9, "thresh": 1e-2}),
    ],
)
def test_every_optim_yaml_composes_and_builds_its_optimizer(name, cls, expected):
    node = _composed_optim(name)
    assert (node.no_weight_decay_on_bn, node.lr_scaling, node.base_batch_size) == (False, "none", 128)
    opt = build(node).build(torch.nn.Linear(3, 2), 128)
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert {k: (tuple(group[k]) if k == "betas" else group[k]) for k in expected} == expected
    # the option's own keys from the command line
    key, value = {"sgd": ("momentum", 0.5), "adam": ("eps", 1e-6), "amsgrad": ("eps", 1e-6),
                  "adamw": ("weight_decay", 0.1), "adabound": ("gamma", 0.01), "lars": ("thresh", 0.5)}[name]
    cfg = compose_config([f"optim={name}", f"optim.{key}={value}", "optim.lr=0.3"])
    group = build(cfg.optim).build(torch.nn.Linear(3, 2), 128).param_groups[0]
    assert group[key] == value and group["lr"] == 0.3


def lars_step_by_hand(w, g, buf, lr, momentum, wd, eps=1e-9):
    trust = w.norm() / (g.norm() + wd * w.norm() + eps)
    buf = momentum * buf + lr * trust * (g + wd * w)
    return w - buf, buf, trust


def test_lars_trust_ratio_and_update_match_the_formula():
    w0, g = torch.tensor([3.0, 4.0]), torch.tensor([0.6, 0.8])  # ||w|| = 5, ||g|| = 1
    assert float(trust_ratio(w0, g, 0.1, 1e-9, 1e-2)) == pytest.approx(5 / (1 + 0.1 * 5))
    param = torch.nn.Parameter(w0.clone())
    opt = LARSOptimizer([param], lr=0.1, momentum=0.9, weight_decay=0.1)
    param.grad = g.clone()
    opt.step()
    # trust 10/3; d = g + 0.1 w = [0.9, 1.2]; buf = 0.1 * 10/3 * d = [0.3, 0.4]
    assert param.detach().tolist() == pytest.approx([2.7, 3.6])
    param.grad = g.clone()
    opt.step()
    w1, buf1, trust1 = lars_step_by_hand(torch.tensor([2.7, 3.6]), g, torch.tensor([0.3, 0.4]), 0.1, 0.9, 0.1)
    assert float(trust1) == pytest.approx(4.5 / 1.45)
    assert param.detach().tolist() == pytest.approx(w1.tolist())
    assert opt.state[param]["momentum_buffer"].tolist() == pytest.approx(buf1.tolist())


def test_lars_trust_ratio_is_one_for_small_weights_or_zero_gradients():
    assert float(trust_ratio(torch.zeros(3), torch.ones(3), 0.1, 1e-9, 1e-2)) == 1.0
    assert float(trust_ratio(torch.full((4,), 1e-3), torch.ones(4), 0.0, 1e-9, 1e-2)) == 1.0  # ||w|| < thresh
    assert float(trust_ratio(torch.ones(3), torch.zeros(3), 0.1, 1e-9, 1e-2)) == 1.0
    # a zero bias with lr 0.1 takes a plain SGD step
    param = torch.nn.Parameter(torch.zeros(2))
    opt = LARSOptimizer([param], lr=0.1, momentum=0.9, weight_decay=0.0)
    param.grad = torch.tensor([1.0, -2.0])
    opt.step()
    assert param.detach().tolist() == pytest.approx([-0.1, 0.2])


def adabound_step(grad: float, gamma: float = 0.1, final_lr: float = 0.1, lr: float = 1e-3):
    """One AdaBound step from w = 0 (float64) with `grad`: (update, m)."""
    param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = AdaBoundOptimizer([param], lr=lr, final_lr=final_lr, gamma=gamma)
    param.grad = torch.tensor([grad], dtype=torch.float64)
    opt.step()
    return -param.item(), opt.state[param]["exp_avg"].item()


def test_adabound_first_step_is_clipped_into_its_bounds():
    # step 1, gamma 0.1, final_lr 0.1: lower = 0.1 * (1 - 1/1.1) = 1/110, upper = 0.1 * (1 + 1/0.1) = 1.1
    lower, upper = bounds(0.1, 0.1, 1)
    assert (lower, upper) == pytest.approx((0.1 / 11, 1.1))
    # Adam's step size at t=1: lr * sqrt(1 - beta2) / (1 - beta1) / (sqrt(v) + eps), v = (1 - beta2) g^2
    # tiny gradient: sqrt(v) ~ 3e-8 -> raw step size ~ 7600, clipped to the upper bound 1.1; m = 0.1 g
    update, m = adabound_step(1e-6)
    assert m == pytest.approx(1e-7) and update == pytest.approx(1.1 * 1e-7, rel=1e-5)
    # huge gradient: raw step size ~ 1e-8, clipped up to the lower bound 1/110
    update, m = adabound_step(1e6)
    assert m == pytest.approx(1e5) and update == pytest.approx(1e5 / 110, rel=1e-5)
    # in between: raw step size 0.01 lies inside [1/110, 1.1], the step is Adam's (lr * sign(g) at t=1)
    update, _ = adabound_step(1.0)
    adam_param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    adam = torch.optim.Adam([adam_param], lr=1e-3)
    adam_param.grad = torch.tensor([1.0], dtype=torch.float64)
    adam.step()
    assert update == pytest.approx(-adam_param.item(), rel=1e-5) and update == pytest.approx(1e-3, rel=1e-5)


def test_adabound_bounds_converge_so_it_ends_as_sgd_at_final_lr():
    lower, upper = bounds(0.1, 1e-3, 10**7)
    assert lower < 0.1 < upper and upper - lower < 2.1e-5  # 0.1 * (1/(gamma t) + 1/(gamma t + 1)), gamma t = 1e4
    assert all(bounds(0.1, 1e-3, t)[0] < bounds(0.1, 1e-3, t + 1)[0] for t in range(1, 100))
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.randn(50, dtype=torch.float64))
    opt = AdaBoundOptimizer([param], lr=1e-3, final_lr=0.1, gamma=0.5)
    for _ in range(2000):
        before = param.detach().clone()
        param.grad = torch.randn(50, dtype=torch.float64) * torch.logspace(-4, 4, 50, dtype=torch.float64)  # scales Adam would treat very differently
        opt.step()
    eta = (before - param.detach()) / opt.state[param]["exp_avg"]  # the per-element step sizes at t = 2000
    lo, hi = bounds(0.1, 0.5, 2000)
    assert hi - lo < 2.1e-4
    assert bool(((eta >= lo * (1 - 1e-5)) & (eta <= hi * (1 + 1e-5))).all())
    assert eta.tolist() == pytest.approx([0.1] * 50, rel=1.1e-3)  # SGD (with momentum m) at final_lr


def test_adabound_final_lr_follows_the_schedule_and_survives_a_state_dict_round_trip():
    param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = AdaBoundOptimizer([param], lr=1e-3, final_lr=0.1, gamma=0.1)
    opt.param_groups[0]["lr"] = 5e-4  # a schedule halved the lr: the bounds are halved too
    param.grad = torch.tensor([1e-6], dtype=torch.float64)
    opt.step()
    assert -param.item() == pytest.approx(0.55 * 1e-7, rel=1e-5)  # upper bound 0.05 * 11
    fresh = AdaBoundOptimizer([torch.nn.Parameter(torch.ones(1))], lr=1e-3, final_lr=0.1, gamma=0.1)
    fresh.load_state_dict(opt.state_dict())
    assert fresh.param_groups[0]["base_lr"] == 1e-3 and fresh.param_groups[0]["lr"] == 5e-4


@pytest.mark.parametrize(
    ("name", "values", "message"),
    [
        ("sgd", {"lr": 0}, "optim.lr: must be > 0 (got 0)"),
        ("adamw", {"lr": -1.0}, "optim.lr: must be > 0 (got -1.0)"),
        ("sgd", {"weight_decay": -1.0}, "optim.weight_decay: must be >= 0 (got -1.0)"),
        ("adam", {"no_weight_decay_on_bn": "yes"}, "optim.no_weight_decay_on_bn: must be true or false (got 'yes')"),
        ("lars", {"lr_scaling": "sqrt"}, "optim.lr_scaling: must be none or linear (got 'sqrt')"),
        ("amsgrad", {"base_batch_size": 0}, "optim.base_batch_size: must be a positive int (got 0)"),
        ("sgd", {"momentum": 1}, "optim.momentum: must be in [0, 1) (got 1)"),
        ("sgd", {"momentum": 0}, "optim.nesterov: needs optim.momentum > 0 (got True)"),
        ("adam", {"betas": [0.9, 1.0]}, "optim.betas: must be two numbers in [0, 1) (got [0.9, 1.0])"),
        ("adamw", {"eps": 0}, "optim.eps: must be > 0 (got 0)"),
        ("adabound", {"final_lr": 0}, "optim.final_lr: must be > 0 (got 0)"),
        ("adabound", {"gamma": 1}, "optim.gamma: must be in (0, 1) (got 1)"),
        ("lars", {"momentum": -0.1}, "optim.momentum: must be in [0, 1) (got -0.1)"),
        ("lars", {"thresh": -1.0}, "optim.thresh: must be >= 0 (got -1.0)"),
    ],
)
def test_bad_optim_values_raise_config_error(name, values, message):
    with pytest.raises(ConfigError) as info:
        build(optim_node(name, **values))
    assert str(info.value) == message
    assert info.value.key == message.split(":")[0]


def test_bad_optim_value_from_the_command_line():
    with pytest.raises(ConfigError, match=r"^optim\.gamma: must be in \(0, 1\) \(got 0\)$"):
        build(compose_config(["optim=adabound", "optim.gamma=0"]).optim)


@pytest.mark.parametrize("option", OPTIM_YAMLS)
def test_every_optim_option_trains_an_epoch_and_is_logged(option, make_run, client):
    cfg, ctx = make_run("model.depth=8", "train.epochs=1", f"optim={option}", "optim.no_weight_decay_on_bn=true")
    error = train(cfg, ctx)
    exp = client.get_experiment_by_name("test")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["optim"] == option and run.data.params["optim.no_weight_decay_on_bn"] == "True"
    losses = [m.value for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert len(losses) == 1 and math.isfinite(losses[0]) and math.isfinite(error)


# -- gradient clipping (optim.grad_clip) -----------------------------------------------------------


@pytest.mark.parametrize("precision", ["FP32", "AmpFP16"])
def test_grad_clip_bounds_the_global_gradient_norm(precision):
    import cifarzoo.precision as precisions

    def grad_norm_after_step(grad_clip):
        torch.manual_seed(0)
        model = torch.nn.Linear(8, 4)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the step leaves the gradients readable
        mode = getattr(precisions, precision)()
        mode.setup(torch.device("cpu"))
        x = torch.randn(16, 8)

        def closure():
            optimizer.zero_grad()
            with mode.autocast():
                loss = model(x).float().pow(2).mean() * 1e-3  # small: no fp16 overflow when scaled
            mode.backward(loss, optimizer, grad_clip)
            return loss

        mode.step(optimizer, closure)
        return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])).item()

    unclipped = grad_norm_after_step(None)
    assert unclipped > 1e-4
    assert grad_norm_after_step(unclipped / 4) == pytest.approx(unclipped / 4, rel=5e-3)  # clip_grad_norm_ adds 1e-6


def test_grad_clip_is_a_shared_optim_key():
    for option in ("sgd", "adam", "lars", "adabound"):
        factory = build(compose_config([f"optim={option}", "optim.grad_clip=2.5"]).optim)
        assert factory.grad_clip == 2.5
    assert build(compose_config([]).optim).grad_clip is None
    with pytest.raises(ConfigError, match=r"^optim.grad_clip: must be null or > 0 \(got 0\)"):
        build(compose_config(["optim.grad_clip=0"]).optim)
