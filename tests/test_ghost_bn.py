"""Ghost batch normalization (`cifarzoo.models.ghost_bn`): one pass with GhostBatchNorm2d gives
the outputs, gradients and running statistics of the seeds' subdivided step (chunks processed
one after the other with loss / num_chunks); ghost size = batch size and eval mode are plain BN."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cifarzoo.errors import ConfigError
from cifarzoo.models.ghost_bn import GhostBatchNorm2d, check_ghost_batch_size, use_ghost_batch_norm
from cifarzoo.models.resnet_preact import ResNetPreAct

BATCH, GHOST = 32, 8


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def small_model(**options) -> nn.Module:
    torch.manual_seed(0)
    model = ResNetPreAct(3, 10, depth=8, base_channels=4, add_last_bn=True, **options).double()
    return model.train()


def batch(n: int = BATCH, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 10, (n,), generator=g)


def bn_layers(model: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def perturb_bn(model: nn.Module) -> None:
    """Non-trivial affine parameters and running statistics, so a wrong fold would show."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for bn in bn_layers(model):
            bn.weight.copy_(1 + 0.3 * torch.randn(bn.weight.shape, generator=g, dtype=bn.weight.dtype))
            bn.bias.copy_(0.3 * torch.randn(bn.bias.shape, generator=g, dtype=bn.bias.dtype))
            bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=g, dtype=bn.running_mean.dtype))
            bn.running_var.copy_(0.5 + torch.rand(bn.running_var.shape, generator=g, dtype=bn.running_var.dtype))
            bn.num_batches_tracked.fill_(3)


def sequential_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ghost: int) -> torch.Tensor:
    """The seeds' subdivision: forward + backward per chunk with loss / chunks; the concatenated logits."""
    chunks = x.shape[0] // ghost
    logits = []
    for xc, yc in zip(x.split(ghost), y.split(ghost)):
        out = model(xc)
        (F.cross_entropy(out, yc) / chunks).backward()
        logits.append(out.detach())
    return torch.cat(logits)


def assert_same_state(a: nn.Module, b: nn.Module, **tol) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], msg=key, **tol)


def assert_same_grads(a: nn.Module, b: nn.Module, **tol) -> None:
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert pa.grad is not None and pb.grad is not None, name
        torch.testing.assert_close(pa.grad, pb.grad, msg=name, **tol)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_one_pass_equals_sequential_chunks_with_gradient_accumulation(momentum):
    reference = small_model()
    for bn in bn_layers(reference):
        bn.momentum = momentum
    perturb_bn(reference)
    ghost = use_ghost_batch_norm(copy.deepcopy(reference), GHOST)
    x, y = batch()

    expected = sequential_step(reference, x, y, GHOST)
    out = ghost(x)
    F.cross_entropy(out, y).backward()

    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    assert_same_grads(ghost, reference, rtol=1e-9, atol=1e-11)
    assert_same_state(ghost, reference, rtol=1e-10, atol=1e-12)
    assert all(int(bn.num_batches_tracked) == 3 + BATCH // GHOST for bn in bn_layers(ghost))
    # and it really is per-chunk: plain BN on the full batch gives other outputs
    assert not torch.allclose(copy.deepcopy(reference)(x), out, atol=1e-4)


def test_two_steps_and_channels_last_input():
    reference = small_model()
    perturb_bn(reference)
    ghost = use_ghost_batch_norm(copy.deepcopy(reference), GHOST)
    for seed in (1, 2):
        x, y = batch(seed=seed)
        expected = sequential_step(reference, x, y, GHOST)
        out = ghost(x.contiguous(memory_format=torch.channels_last))
        F.cross_entropy(out, y).backward()
        torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    assert_same_grads(ghost, reference, rtol=1e-9, atol=1e-11)
    assert_same_state(ghost, reference, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("affine", "track"), [(False, True), (True, False), (False, False)])
def test_layer_options_match_sequential_chunks(affine, track):
    torch.manual_seed(3)
    plain = nn.BatchNorm2d(5, affine=affine, track_running_stats=track, momentum=0.3).double()
    ghost = GhostBatchNorm2d.from_batch_norm(copy.deepcopy(plain), 4)
    x = torch.randn(12, 5, 3, 3, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    weights = torch.randn(12, 5, 3, 3, dtype=torch.float64)

    expected = torch.cat([plain(chunk) for chunk in x_ref.split(4)])
    out = ghost(x)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    (out * weights).sum().backward()
    (expected * weights).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-10, atol=1e-12)
    assert_same_state(ghost, plain, rtol=1e-12, atol=1e-14)
    if track:
        assert int(ghost.num_batches_tracked) == 3


def test_ghost_size_equal_to_batch_size_is_plain_batch_norm():
    reference = small_model()
    perturb_bn(reference)
    ghost = use_ghost_batch_norm(copy.deepcopy(reference), BATCH)
    x, y = batch()
    expected, out = reference(x), ghost(x)
    F.cross_entropy(expected, y).backward()
    F.cross_entropy(out, y).backward()
    assert torch.equal(out, expected)
    assert_same_grads(ghost, reference, rtol=0, atol=0)
    assert_same_state(ghost, reference, rtol=0, atol=0)


def test_eval_mode_is_plain_batch_norm_with_running_stats():
    reference = small_model()
    perturb_bn(reference)
    ghost = use_ghost_batch_norm(copy.deepcopy(reference), GHOST)
    reference.eval(), ghost.eval()
    x, _ = batch(n=12)  # not a multiple of the ghost size: fine in eval mode
    with torch.no_grad():
        assert torch.equal(ghost(x), reference(x))
    assert_same_state(ghost, reference, rtol=0, atol=0)


def test_conversion_keeps_keys_tensors_and_batch_norm_type():
    model = small_model()
    params_before = dict(model.named_parameters())
    buffers_before = dict(model.named_buffers())
    keys = list(model.state_dict())
    count = len(bn_layers(model))

    assert use_ghost_batch_norm(model, GHOST) is model
    layers = bn_layers(model)
    assert len(layers) == count and all(type(m) is GhostBatchNorm2d and m.ghost_batch_size == GHOST for m in layers)
    assert all(isinstance(m, nn.BatchNorm2d) for m in layers)
    assert list(model.state_dict()) == keys
    # the very same tensors: device, dtype and an optimizer built before the conversion are kept
    assert all(p is params_before[n] for n, p in model.named_parameters())
    assert all(b is buffers_before[n] for n, b in model.named_buffers())
    # checkpoints load both ways
    plain = small_model()
    plain.load_state_dict(model.state_dict())
    model.load_state_dict(plain.state_dict())
    # converting again only changes the ghost size; a bare layer is returned converted
    use_ghost_batch_norm(model, 4)
    assert all(m.ghost_batch_size == 4 for m in bn_layers(model))
    assert type(use_ghost_batch_norm(nn.BatchNorm2d(3), 2)) is GhostBatchNorm2d
    assert "ghost_batch_size=4" in repr(layers[0])


def test_batch_not_divisible_by_ghost_size_raises():
    model = use_ghost_batch_norm(small_model(), GHOST)
    x, _ = batch(n=12)
    with pytest.raises(ValueError, match=r"batch size \(12\) must be a multiple of ghost_batch_size \(8\)"):
        model(x)
    with pytest.raises(ValueError, match="ghost_batch_size"):
        use_ghost_batch_norm(model, 0)


def test_check_ghost_batch_size_config_rule():
    check_ghost_batch_size(32, 128)
    check_ghost_batch_size(128, 128)
    for bad in (0, -8, 3.0, True, "8", 48):
        with pytest.raises(ConfigError, match=r"^train\.ghost_batch_size: "):
            check_ghost_batch_size(bad, 128)
