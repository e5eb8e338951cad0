"""SAM / ASAM: two passes per step, the ascent step's norm, BN statistics, config and errors."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from conftest import QUICK, compose_config
from cifarzoo.build import build_run
from cifarzoo.config import build
from cifarzoo.errors import ConfigError
from cifarzoo.optim import SAM, SharpnessAware


def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5)).double()


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 3, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 5, (16,), generator=g)


def grads_at(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    return [p.grad.clone() for p in model.parameters()]


def sam(model: torch.nn.Module, rho: float, adaptive: bool = False) -> SharpnessAware:
    factory = SAM(base="sgd", rho=rho, adaptive=adaptive, lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0)
    return factory.build(model, 128)


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_steps_with_the_gradient_at_the_ascent_point_after_two_passes(adaptive):
    model, (x, y) = small_model(), batch()
    reference = copy.deepcopy(model)
    optimizer = sam(model, rho=0.05, adaptive=adaptive)
    calls = []

    def closure():
        calls.append(1)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    assert len(calls) == 2  # two forward/backward passes per step

    # By hand: e from the gradient at w, the gradient at w + e, then plain SGD from w.
    g = grads_at(reference, x, y)
    params = list(reference.parameters())
    biases = {id(m.bias) for m in reference.modules() if getattr(m, "bias", None) is not None}
    scale = [p.detach().abs() + 0.01 if adaptive and id(p) not in biases else torch.ones_like(p) for p in params]
    norm = torch.sqrt(sum(((t * gi) ** 2).sum() for t, gi in zip(scale, g)))
    e = [0.05 * t * t * gi / norm for t, gi in zip(scale, g)]
    with torch.no_grad():
        for p, ei in zip(params, e):
            p.add_(ei)
    g_at_e = grads_at(reference, x, y)
    with torch.no_grad():
        for p, ei in zip(params, e):
            p.sub_(ei)
    for (name, p), p0, ge in zip(model.named_parameters(), small_model().parameters(), g_at_e):
        assert torch.allclose(p, p0 - 0.1 * ge, atol=1e-10), name


@pytest.mark.parametrize("adaptive", [False, True])
def test_the_ascent_step_has_norm_rho(adaptive):
    model, (x, y) = small_model(), batch()
    optimizer = sam(model, rho=0.3, adaptive=adaptive)
    before = [p.detach().clone() for p in model.parameters()]
    grads_at(model, x, y)
    moves = optimizer.ascent()
    assert all(torch.equal(p.detach(), b + e) for (p, e), b in zip(moves, before))
    biases = {id(m.bias) for m in model.modules() if getattr(m, "bias", None) is not None}
    if adaptive:  # ASAM: ||T^-1 e|| = rho with T = |w| + eta on weights, 1 on biases
        scaled = [e / (b.abs() + 0.01) if id(p) not in biases else e for (p, e), b in zip(moves, before)]
    else:
        scaled = [e for _, e in moves]
    norm = torch.sqrt(sum((s ** 2).sum() for s in scaled))
    assert norm.item() == pytest.approx(0.3, rel=1e-6)


def test_batchnorm_statistics_come_from_the_first_pass_only():
    model, (x, y) = small_model(), batch()
    reference = copy.deepcopy(model)
    optimizer = sam(model, rho=0.5)

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    reference(x)  # one ordinary training forward at w
    bn, ref_bn = model[1], reference[1]
    assert torch.allclose(bn.running_mean, ref_bn.running_mean) and torch.allclose(bn.running_var, ref_bn.running_var)
    assert bn.momentum == 0.1  # restored after the second pass


def test_the_schedule_drives_the_base_optimizer_and_state_round_trips():
    model = small_model()
    optimizer = sam(model, rho=0.05)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5)
    assert optimizer.base.param_groups[0]["lr"] == pytest.approx(0.05)
    state = copy.deepcopy(optimizer.state_dict())
    other = sam(small_model(), rho=0.05)
    other.load_state_dict(state)
    assert other.param_groups is other.base.param_groups and other.param_groups[0]["lr"] == pytest.approx(0.05)
    del scheduler


def test_sam_and_asam_compose_around_sgd_and_other_bases():
    sam_cfg = compose_config(["optim=sam"]).optim
    assert (sam_cfg.base, sam_cfg.rho, sam_cfg.adaptive, sam_cfg.lr, sam_cfg.momentum) == ("sgd", 0.05, False, 0.1, 0.9)
    asam = build(compose_config(["optim=asam"]).optim)
    assert asam.adaptive and asam.rho == 0.5
    adam = build(compose_config(["optim=sam", "optim.base=adam", "~optim.momentum", "~optim.nesterov",
                                 "optim.lr=1e-3"]).optim)
    opt = adam.build(torch.nn.Linear(2, 2), 128)
    assert type(opt.base).__name__ == "Adam" and opt.param_groups[0]["lr"] == 1e-3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim=sam", "optim.base=adam"], "optim.momentum: is not a key of optim.base=adam; remove it with ~optim.momentum"),
        (["optim=sam", "optim.base=rmsprop"], "optim.base: must be one of sgd, adam, adamw, amsgrad, adabound, lars"),
        (["optim=sam", "optim.rho=0"], "optim.rho: must be > 0 (got 0)"),
    ],
)
def test_bad_sam_settings_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError) as e:
        build(compose_config(overrides).optim)
    assert str(e.value).startswith(message)


def test_sam_under_amp_fp16_is_refused_before_training():
    with pytest.raises(ConfigError, match=r"^precision: AmpFP16's GradScaler cannot step optim=SAM"):
        build_run(compose_config([*QUICK, "optim=sam", "precision=amp_fp16"]))
