"""Shake-Shake (Gastaldi 2017): the paper's parameter counts, both input shapes, the
forward/backward coefficient semantics of the seed's Table 1, eval-time averaging, the
ResNeXt-style CIFAR-100 variant and the one-line errors for bad hyper-parameters."""

from __future__ import annotations

import pytest
import torch

from conftest import compose_config
from cifarzoo.config import build
from cifarzoo.errors import ConfigError
from cifarzoo.models import count_parameters
from cifarzoo.models.shake_shake import ShakeBlock, ShakeMixer, ShakeShake, TwoPathShortcut, shake_coefficients, \
    shake_shake

SMALL = ["model.depth=8", "model.base_channels=4"]
SMALL_BOTTLENECK = ["model.branch=bottleneck", "model.depth=11", "model.cardinality=2", "model.base_channels=4"]
# The seed's Table 1 rows (forward, backward, level); "n/a" level of Even-Even is any level.
TABLE_1 = [
    ("even", "even", "batch"), ("even", "shake", "batch"), ("shake", "keep", "batch"),
    ("shake", "even", "batch"), ("shake", "shake", "batch"), ("even", "shake", "image"),
    ("shake", "keep", "image"), ("shake", "even", "image"), ("shake", "shake", "image"),
]


def model_from_config(*overrides: str, channels: int = 3, classes: int = 10) -> torch.nn.Module:
    cfg = compose_config(["model=shake_shake", *overrides])
    return build(cfg.model, in_channels=channels, num_classes=classes)


def shake_overrides(forward: str, backward: str, level: str) -> list[str]:
    return [f"model.shake_forward={forward}", f"model.shake_backward={backward}", f"model.shake_level={level}"]


# --- architecture -------------------------------------------------------------------------

@pytest.mark.parametrize(("width", "exact", "millions"), [
    (32, 2_923_162, 2.9),  # Gastaldi 2017, table 2: 26 2x32d 2.9M, 2x64d 11.7M, 2x96d 26.2M
    (64, 11_653_978, 11.7),
    (96, 26_192_922, 26.2),
])
def test_parameter_counts_match_the_paper(width, exact, millions):
    count = count_parameters(model_from_config("model.depth=26", f"model.base_channels={width}"))
    assert count == exact
    assert round(count / 1e6, 1) == millions


def test_default_is_shake_shake_26_2x32d_ssi():
    model = model_from_config()
    assert isinstance(model, ShakeShake)
    assert count_parameters(model) == 2_923_162
    mixer = model.stages[0][0].mixer
    assert (mixer.forward_mode, mixer.backward_mode, mixer.level) == ("shake", "shake", "image")
    assert [len(stage) for stage in model.stages] == [4, 4, 4]


def test_resnext_variant_29_2x4x64d_has_the_resnext_29_8x64d_budget():
    # Two branches of 4 groups of width 64 = the convolutions of ResNeXt-29 8x64d (34.4M); the
    # second branch adds one BN (2 x out channels) per block.
    model = model_from_config("model.branch=bottleneck", "model.depth=29", "model.cardinality=4",
                              "model.base_channels=64")
    resnext = build(compose_config(["model=resnext"]).model, in_channels=3, num_classes=10)
    assert count_parameters(model) - count_parameters(resnext) == 2 * 3 * (256 + 512 + 1024)
    assert round(count_parameters(model) / 1e6, 1) == 34.4
    block = model.stages[1][0]
    assert block.branch1[3].groups == 4 and block.branch1[3].out_channels == 4 * 128
    assert block.relu_after_add and isinstance(block.shortcut[0], torch.nn.Conv2d)


@pytest.mark.parametrize("overrides", [SMALL, SMALL_BOTTLENECK])
@pytest.mark.parametrize(("channels", "size"), [(3, 32), (1, 28)])
def test_forward_backward_on_cifar_and_mnist_shapes(overrides, channels, size):
    model = model_from_config(*overrides, channels=channels)
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_two_path_shortcut_sees_the_input_shifted_by_one_pixel():
    skip = TwoPathShortcut(1, 2, stride=2).eval()
    with torch.no_grad():
        skip.conv1.weight.fill_(1.0)
        skip.conv2.weight.fill_(1.0)
    x = torch.arange(1.0, 17.0).view(1, 1, 4, 4)  # positive: the leading ReLU keeps it
    y = skip(x) * (1 + skip.bn.eps) ** 0.5  # undo BN's eval scaling (running var 1, mean 0)
    assert torch.allclose(y[0, 0], x[0, 0, ::2, ::2])  # pixels (0, 0), (0, 2), (2, 0), (2, 2)
    # path 2 samples the pixel one up and left of each: (-1, -1), (-1, 1), (1, -1) are zero padding
    assert torch.allclose(y[0, 1], torch.tensor([[0.0, 0.0], [0.0, x[0, 0, 1, 1].item()]]))


# --- the autograd Function and the coefficients -------------------------------------------

def test_function_mixes_forward_with_alpha_and_backward_with_beta():
    x1 = torch.randn(3, 2, 4, 4, requires_grad=True)
    x2 = torch.randn(3, 2, 4, 4, requires_grad=True)
    alpha = torch.tensor([0.2, 0.5, 0.9]).view(3, 1, 1, 1)
    beta = torch.tensor([0.7, 0.1, 0.4]).view(3, 1, 1, 1)
    y = shake_shake(x1, x2, alpha, beta)
    assert torch.allclose(y, alpha * x1 + (1 - alpha) * x2)
    g = torch.randn_like(y)
    y.backward(g)
    assert torch.allclose(x1.grad, beta * g)
    assert torch.allclose(x2.grad, (1 - beta) * g)


@pytest.mark.parametrize("level", ["batch", "image"])
def test_keep_reuses_the_forward_coefficients_in_the_backward_pass(level):
    torch.manual_seed(0)
    alpha, beta = shake_coefficients(5, "shake", "keep", level)
    assert torch.equal(alpha, beta)
    assert not torch.allclose(alpha, torch.full_like(alpha, 0.5))


@pytest.mark.parametrize("level", ["batch", "image"])
def test_even_is_one_half_in_both_passes(level):
    alpha, beta = shake_coefficients(5, "even", "even", level)
    assert torch.equal(alpha, torch.full_like(alpha, 0.5)) and torch.equal(beta, torch.full_like(beta, 0.5))
    alpha, beta = shake_coefficients(5, "shake", "even", level)
    assert torch.equal(beta, torch.full_like(beta, 0.5)) and not torch.equal(alpha, beta)
    alpha, beta = shake_coefficients(5, "even", "shake", level)
    assert torch.equal(alpha, torch.full_like(alpha, 0.5)) and not torch.equal(alpha, beta)


def test_shake_draws_different_forward_and_backward_coefficients():
    torch.manual_seed(0)
    alpha, beta = shake_coefficients(8, "shake", "shake", "image")
    assert not torch.allclose(alpha, beta)
    assert ((alpha > 0) & (alpha < 1)).all() and ((beta > 0) & (beta < 1)).all()
    torch.manual_seed(0)
    again = shake_coefficients(8, "shake", "shake", "image")
    assert torch.equal(alpha, again[0]) and torch.equal(beta, again[1])  # a fixed seed reproduces them


def test_image_level_draws_one_coefficient_per_image_batch_level_one_per_batch():
    torch.manual_seed(0)
    alpha, beta = shake_coefficients(8, "shake", "shake", "image")
    assert alpha.shape == beta.shape == (8, 1, 1, 1)
    assert alpha.unique().numel() == 8 and beta.unique().numel() == 8
    alpha, beta = shake_coefficients(8, "shake", "shake", "batch")
    assert alpha.shape == beta.shape == (1, 1, 1, 1)


@pytest.mark.parametrize(("forward", "backward", "level"), TABLE_1)
def test_mixer_applies_the_table_1_semantics(forward, backward, level):
    mixer = ShakeMixer(forward, backward, level).train()
    x1 = torch.randn(4, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(4, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(1)
    y = mixer(x1, x2)
    torch.manual_seed(1)
    alpha, beta = shake_coefficients(4, forward, backward, level, dtype=torch.float64)  # the same draws
    assert torch.allclose(y, alpha * x1 + (1 - alpha) * x2)
    y.sum().backward()
    assert torch.allclose(x1.grad, beta.expand_as(x1)) and torch.allclose(x2.grad, (1 - beta).expand_as(x2))


# --- through a model ----------------------------------------------------------------------

def observed_coefficients(model: ShakeShake, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, beta) per image of the first block, recovered from its branch outputs and the
    gradients reaching them: mixed = alpha*b1 + (1-alpha)*b2, grad b1 = beta*g, grad b2 = (1-beta)*g."""
    block = model.stages[0][0]
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(module, inputs, output):
            output.retain_grad()
            seen[name] = output
        return hook

    handles = [block.branch1.register_forward_hook(keep("b1")), block.branch2.register_forward_hook(keep("b2")),
               block.mixer.register_forward_hook(keep("mixed"))]
    model(x).sum().backward()
    for handle in handles:
        handle.remove()
    b1, b2, mixed = seen["b1"].flatten(1), seen["b2"].flatten(1), seen["mixed"].flatten(1)
    alpha = ((mixed - b2) * (b1 - b2)).sum(1) / ((b1 - b2) ** 2).sum(1)
    g = seen["mixed"].grad.flatten(1)
    beta = (seen["b1"].grad.flatten(1) * g).sum(1) / (g**2).sum(1)
    assert torch.allclose(seen["b2"].grad.flatten(1), (1 - beta[:, None]) * g)
    return alpha, beta


@pytest.mark.parametrize(("forward", "backward", "level"), [
    ("shake", "keep", "image"), ("shake", "keep", "batch"), ("even", "even", "batch"),
    ("shake", "shake", "image"), ("shake", "shake", "batch"), ("even", "shake", "image"),
])
def test_model_blocks_use_the_configured_coefficients(forward, backward, level):
    torch.manual_seed(0)
    model = model_from_config(*SMALL, *shake_overrides(forward, backward, level)).double().train()
    alpha, beta = observed_coefficients(model, torch.randn(4, 3, 16, 16, dtype=torch.float64))
    half = torch.full_like(alpha, 0.5)
    if backward == "keep":
        assert torch.allclose(alpha, beta)
    if forward == "even":
        assert torch.allclose(alpha, half)
    if backward == "even":
        assert torch.allclose(beta, half)
    if forward == "shake":
        assert not torch.allclose(alpha, half)
    if backward == "shake":
        assert not torch.allclose(alpha, beta)
    for coefficient, mode in ((alpha, forward), (beta, backward)):
        if mode != "even":
            distinct = (coefficient - coefficient[0]).abs().max() > 1e-6
            assert distinct == (level == "image")  # image: one per image; batch: one for all


@pytest.mark.parametrize("overrides", [SMALL, SMALL_BOTTLENECK])
def test_eval_output_is_the_average_of_the_branches_plus_the_shortcut(overrides):
    torch.manual_seed(0)
    model = model_from_config(*overrides).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        h = model.stem(x)
        for stage in model.stages:
            for block in stage:
                assert isinstance(block, ShakeBlock)
                expected = 0.5 * (block.branch1(h) + block.branch2(h)) + block.shortcut(h)
                if block.relu_after_add:
                    expected = torch.relu(expected)
                h_next = block(h)
                assert torch.allclose(h_next, expected, atol=1e-6)
                h = h_next
        # the same weights give the same eval output whatever the training-time shake settings
        even = model_from_config(*overrides, *shake_overrides("even", "even", "batch")).eval()
        even.load_state_dict(model.state_dict())
        assert torch.allclose(model(x), even(x), atol=1e-6)
        assert torch.equal(model(x), model(x))


@pytest.mark.parametrize(("forward", "backward", "level"), TABLE_1)
def test_every_table_1_combination_is_expressible(forward, backward, level):
    model = model_from_config(*SMALL, *shake_overrides(forward, backward, level)).train()
    out = model(torch.randn(2, 3, 16, 16))
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


# --- errors -------------------------------------------------------------------------------

@pytest.mark.parametrize(("overrides", "message"), [
    (["model.depth=27"], "model.depth: shake-shake with basic branches needs depth = 6n+2, n >= 1 (got 27)"),
    (["model.branch=bottleneck", "model.depth=26"], "model.depth: ResNeXt needs depth = 9n+2, n >= 1 (got 26)"),
    (["model.base_channels=33"], "model.base_channels: must be an even int >= 2"),
    (["model.shake_forward=keep"], "model.shake_forward: must be shake or even (got 'keep')"),
    (["model.shake_backward=random"], "model.shake_backward: must be shake, even or keep (got 'random')"),
    (["model.shake_level=pixel"], "model.shake_level: must be batch or image (got 'pixel')"),
    (["model.branch=wide"], "model.branch: must be basic or bottleneck (got 'wide')"),
    (["model.cardinality=4"], "model.cardinality: basic branches have no groups; must be 1"),
    (["model.branch=bottleneck", "model.depth=29", "model.cardinality=0"], "model.cardinality: must be an int >= 1"),
])
def test_invalid_hyper_parameters_fail_with_the_rule(overrides, message):
    with pytest.raises(ConfigError) as error:
        model_from_config(*overrides)
    assert str(error.value).startswith(message)
