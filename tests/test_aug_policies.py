"""AutoAugment / RandAugment: every batched op equals torchvision's, image by image; the policies
draw per image from torchvision's tables and apply what they drew as torchvision would."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF
from torchvision.transforms.v2 import AutoAugmentPolicy, InterpolationMode

from conftest import compose_config
from cifarzoo.aug import RandomCrop, RandomHorizontalFlip, Recipe, ops
from cifarzoo.aug.policies import CIFAR10_POLICY, SIGNED, AutoAugment, Plan, RandAugment, magnitude_bins
from cifarzoo.config import build
from cifarzoo.errors import ConfigError

NEAREST = InterpolationMode.NEAREST
TV_AUTOAUGMENT = T.AutoAugment(AutoAugmentPolicy.CIFAR10)
TV_RANDAUGMENT = T.RandAugment()

# Geometric ops pick the nearest source pixel by rounding a float32 coordinate. Where the exact
# coordinate is a tie (x.5, e.g. shear 0.1 on row 4), a 1-ulp difference in how the batched grid is
# computed (another BLAS/cuBLAS kernel for the batched matmul) can pick the neighbour instead. On CPU
# we see no mismatch at all; the tolerance allows 0.1% of pixels, far below what any wrong matrix
# (sign, centre, units) gives. Every other op must match exactly.
GEOMETRIC = {"shear_x", "shear_y", "translate_x", "translate_y", "rotate"}
GEOMETRIC_TOLERANCE = 1e-3


def images(n: int, c: int = 3, s: int = 32, seed: int = 0) -> torch.Tensor:
    """Noise, narrow-range noise, smooth ramps, flat images and two-level images, in turn: the cases
    auto_contrast, equalize and the enhance ops treat differently."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randint(0, 256, (n, c, s, s), generator=g)
    narrow = 60 + noise // 4
    ramp = torch.arange(s * s).view(s, s) * 200 // (s * s) + torch.randint(0, 50, (n, c, 1, 1), generator=g)
    flat = torch.randint(0, 256, (n, c, 1, 1), generator=g).expand(n, c, s, s)
    two_level = torch.where(noise < 128, 40, 170)
    kind = (torch.arange(n) % 5).view(n, 1, 1, 1)
    out = noise
    for k, variant in enumerate([narrow, ramp, flat, two_level], start=1):
        out = torch.where(kind == k, variant, out)
    return out.to(torch.uint8)


def signed_bins(op: str, top: float, seed: int) -> torch.Tensor:
    """torchvision's bins (10 and 31 of them) with random signs, then random values in [-top, top]."""
    g = torch.Generator().manual_seed(seed)
    bins = torch.cat([torch.linspace(0.0, top, 10), torch.linspace(0.0, top, 31)]).double()
    bins = torch.where(torch.rand(len(bins), generator=g) < 0.5, -bins, bins)
    return torch.cat([bins, (torch.rand(40, generator=g, dtype=torch.float64) * 2 - 1) * top])


def _magnitudes(name: str) -> torch.Tensor | None:
    """Per-image parameters for the op test, in the op's own units."""
    g = torch.Generator().manual_seed(1)
    if name in ("shear_x", "shear_y"):
        return signed_bins(name, 0.3, 2)
    if name in ("translate_x", "translate_y"):
        pixels = signed_bins(name, 150 / 331 * 32, 3)
        return torch.cat([pixels.trunc(), pixels[:20]])  # whole pixels as the policies use, and fractions
    if name == "rotate":
        return torch.cat([signed_bins(name, 30.0, 4), torch.tensor([90.0, -90.0, 180.0, 270.0, 360.0, -135.0], dtype=torch.float64)])
    if name in ("brightness", "color", "contrast", "sharpness"):
        return 1 + signed_bins(name, 0.9, 5)
    if name == "posterize":
        return torch.arange(9).repeat(9)
    if name == "solarize":
        fractions = torch.cat([torch.linspace(1.0, 0.0, 10), torch.linspace(1.0, 0.0, 31)]).double()
        return torch.cat([255 * fractions, 255 * torch.rand(40, generator=g, dtype=torch.float64)])
    return None


def _reference(name: str, image: torch.Tensor, m: float) -> torch.Tensor:
    """torchvision.transforms.v2.functional on one image, as torchvision's AutoAugment calls it."""
    if name == "shear_x":
        return TF.affine(image, angle=0.0, translate=[0, 0], scale=1.0, shear=[math.degrees(math.atan(m)), 0.0], interpolation=NEAREST, center=[0, 0])
    if name == "shear_y":
        return TF.affine(image, angle=0.0, translate=[0, 0], scale=1.0, shear=[0.0, math.degrees(math.atan(m))], interpolation=NEAREST, center=[0, 0])
    if name == "translate_x":
        return TF.affine(image, angle=0.0, translate=[m, 0], scale=1.0, shear=[0.0, 0.0], interpolation=NEAREST)
    if name == "translate_y":
        return TF.affine(image, angle=0.0, translate=[0, m], scale=1.0, shear=[0.0, 0.0], interpolation=NEAREST)
    calls = {
        "rotate": lambda: TF.rotate(image, m, interpolation=NEAREST),
        "brightness": lambda: TF.adjust_brightness(image, m),
        "color": lambda: TF.adjust_saturation(image, m),
        "contrast": lambda: TF.adjust_contrast(image, m),
        "sharpness": lambda: TF.adjust_sharpness(image, m),
        "posterize": lambda: TF.posterize(image, int(m)),
        "solarize": lambda: TF.solarize(image, m),
        "auto_contrast": lambda: TF.autocontrast(image),
        "equalize": lambda: TF.equalize(image),
        "invert": lambda: TF.invert(image),
    }
    return calls[name]()


def assert_matches(out: torch.Tensor, expected: torch.Tensor, geometric: bool) -> None:
    assert out.shape == expected.shape and out.dtype == torch.uint8
    mismatched = (out != expected).float().mean().item()
    assert mismatched <= (GEOMETRIC_TOLERANCE if geometric else 0.0), f"{mismatched:.4%} of pixels differ"


OP_NAMES = ["shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color", "contrast",
            "sharpness", "posterize", "solarize", "auto_contrast", "equalize", "invert"]


@pytest.mark.parametrize("shape", [(3, 32), (1, 28)], ids=["rgb32", "gray28"])
@pytest.mark.parametrize("name", OP_NAMES)
def test_batched_op_matches_torchvision_image_by_image(name, shape):
    magnitudes = _magnitudes(name)
    n = 100 if magnitudes is None else len(magnitudes)
    x = images(n, *shape)
    op = getattr(ops, name)
    out = op(x) if magnitudes is None else op(x, magnitudes)
    expected = torch.stack([_reference(name, x[i], 0.0 if magnitudes is None else float(magnitudes[i])) for i in range(n)])
    assert_matches(out, expected, name in GEOMETRIC)
    if name != "color" or shape[0] == 3:
        assert not torch.equal(out, x)  # the comparison is not vacuous
    assert torch.equal(ops.identity(x), x)


def test_cifar10_policy_table_is_torchvisions():
    assert len(CIFAR10_POLICY) == 25
    assert [tuple(pair) for pair in TV_AUTOAUGMENT._policies] == list(CIFAR10_POLICY)


@pytest.mark.parametrize(("tv", "num_bins", "size"), [(TV_AUTOAUGMENT, 10, 32), (TV_RANDAUGMENT, 31, 32), (TV_RANDAUGMENT, 31, 28)])
def test_magnitude_bins_and_signs_are_torchvisions(tv, num_bins, size):
    for op, (bins_fn, signed) in tv._AUGMENTATION_SPACE.items():
        expected = bins_fn(num_bins, size, size)
        ours = magnitude_bins(op, num_bins, size, size)
        if expected is None:
            assert torch.equal(ours, torch.zeros(num_bins, dtype=torch.float64))
        else:
            assert torch.equal(ours, expected.double())
        assert (op in SIGNED) == signed


def torchvision_apply(tv: T.Transform, policy, x: torch.Tensor, plan: Plan) -> torch.Tensor:
    """Apply `plan` image by image with torchvision's own op dispatch."""
    out = []
    for i in range(len(x)):
        image = x[i]
        for slot in range(len(plan.ops)):
            if plan.applied[slot, i]:
                name = policy.op_names[plan.ops[slot, i]]
                image = tv._apply_image_or_video_transform(image, name, float(plan.magnitudes[slot, i]), interpolation=NEAREST, fill=tv._fill)
        out.append(image)
    return torch.stack(out)


@pytest.mark.parametrize("shape", [(3, 32), (1, 28)], ids=["rgb32", "gray28"])
def test_autoaugment_applies_each_images_draw_as_torchvision_would(shape):
    policy, x = AutoAugment(), images(200, *shape, seed=3)
    plan = policy.sample(x, torch.Generator().manual_seed(0))
    table_ops = {op for pair in CIFAR10_POLICY for op, _, _ in pair}
    assert {policy.op_names[i] for i in plan.ops[plan.applied].tolist()} == table_ops  # every op exercised
    out = policy.apply(x, plan)
    expected = torchvision_apply(TV_AUTOAUGMENT, policy, x, plan)
    assert_matches(out, expected, geometric=True)
    assert torch.equal(policy(x, torch.Generator().manual_seed(0)), out)  # __call__ = sample + apply


@pytest.mark.parametrize(("num_ops", "magnitude", "shape"), [(2, 9, (3, 32)), (3, 30, (1, 28)), (1, 0, (3, 32))])
def test_randaugment_applies_each_images_draw_as_torchvision_would(num_ops, magnitude, shape):
    policy, x = RandAugment(num_ops=num_ops, magnitude=magnitude), images(150, *shape, seed=4)
    plan = policy.sample(x, torch.Generator().manual_seed(1))
    assert plan.ops.shape == (num_ops, 150) and plan.applied.all()
    out = policy.apply(x, plan)
    assert_matches(out, torchvision_apply(TV_RANDAUGMENT, policy, x, plan), geometric=True)


def test_autoaugment_draws_sub_policies_probabilities_and_signs_per_image():
    policy, n = AutoAugment(), 20000
    plan = policy.sample(torch.zeros(n, 3, 32, 32, dtype=torch.uint8), torch.Generator().manual_seed(2))
    bins = {op: magnitude_bins(op, 10, 32, 32) for op in policy.op_names}
    # Sub-policies as (op, unsigned magnitude) pairs; a few pairs occur in more than one row.
    probabilities: dict[tuple, list[tuple[float, float]]] = {}
    for pair in CIFAR10_POLICY:
        key = tuple((op, 0.0 if b is None else float(bins[op][b])) for op, _, b in pair)
        probabilities.setdefault(key, []).append(tuple(p for _, p, _ in pair))
    drawn = [tuple((policy.op_names[plan.ops[s, i]], abs(float(plan.magnitudes[s, i]))) for s in range(2)) for i in range(n)]
    assert set(drawn) == set(probabilities)  # every image drew a row of the table, every row was drawn
    for key, rows in probabilities.items():
        mine = torch.tensor([d == key for d in drawn])
        assert abs(mine.float().mean().item() - len(rows) / 25) < 4 * math.sqrt(len(rows) / 25 / n)
        for s in range(2):  # each slot runs with its row's probability
            expected = sum(row[s] for row in rows) / len(rows)
            assert abs(plan.applied[s, mine].float().mean().item() - expected) < 4 * math.sqrt(0.25 / mine.sum().item())
    signed = torch.tensor([[name in SIGNED for name in (policy.op_names[i] for i in row)] for row in plan.ops.tolist()])
    signed &= plan.magnitudes != 0
    assert abs((plan.magnitudes[signed] < 0).float().mean().item() - 0.5) < 0.03
    assert (plan.magnitudes[~signed] >= 0).all()


def test_randaugment_draws_ops_uniformly_per_image_at_the_set_magnitude():
    policy, n = RandAugment(num_ops=2, magnitude=9), 14000
    plan = policy.sample(torch.zeros(n, 3, 32, 32, dtype=torch.uint8), torch.Generator().manual_seed(3))
    counts = torch.bincount(plan.ops.flatten(), minlength=14)
    assert (counts - 2 * n / 14).abs().max() < 4 * math.sqrt(2 * n / 14)
    for index, op in enumerate(policy.op_names):
        drawn = plan.magnitudes[plan.ops == index]
        bin_value = float(magnitude_bins(op, 31, 32, 32)[9])
        assert set(drawn.abs().tolist()) == {bin_value}
        if op in SIGNED:
            assert 0.4 < (drawn < 0).float().mean().item() < 0.6
        else:
            assert (drawn >= 0).all()


@pytest.mark.parametrize("policy", [AutoAugment(), RandAugment()], ids=["autoaugment", "randaugment"])
def test_identical_images_in_a_batch_get_different_augmentations(policy):
    x = images(1, seed=5).expand(256, -1, -1, -1).contiguous()
    out = policy(x, torch.Generator().manual_seed(6))
    assert len({bytes(image.numpy()) for image in out}) > 30  # one draw per batch would give 1


def test_autoaugment_leaves_the_expected_fraction_of_images_unchanged():
    # Narrow-range noise (30..225): every op in the table changes it when run, except Color at bin 0
    # (factor 1); so an image is unchanged exactly when none of its sub-policy's changing ops ran.
    g = torch.Generator().manual_seed(7)
    n = 4000
    x = torch.randint(30, 226, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    out = AutoAugment()(x, g)
    unchanged = (out == x).flatten(1).all(1).float().mean().item()
    expected = sum(
        math.prod(1 - p for op, p, b in pair if not (op == "Color" and b == 0)) for pair in CIFAR10_POLICY
    ) / len(CIFAR10_POLICY)
    assert abs(unchanged - expected) < 4 * math.sqrt(expected * (1 - expected) / n)


def test_randaugment_leaves_only_identity_draws_unchanged():
    g = torch.Generator().manual_seed(8)
    n = 4000
    x = torch.randint(30, 226, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    policy = RandAugment(num_ops=2, magnitude=9)
    plan = policy.sample(x, g)
    unchanged = (policy.apply(x, plan) == x).flatten(1).all(1)
    both_identity = (plan.ops == policy.op_names.index("Identity")).all(0)
    assert torch.equal(unchanged, both_identity)
    assert 0 < both_identity.sum() < 3 * n / 14**2


@pytest.mark.parametrize("policy", [AutoAugment(), RandAugment()], ids=["autoaugment", "randaugment"])
def test_same_generator_state_gives_the_same_output(policy):
    x = images(64, seed=9)
    a = policy(x, torch.Generator().manual_seed(10))
    b = policy(x, torch.Generator().manual_seed(10))
    c = policy(x, torch.Generator().manual_seed(11))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(x, images(64, seed=9))  # the input is left alone


@pytest.mark.parametrize("policy", [AutoAugment(), RandAugment(), RandAugment(num_ops=4, magnitude=30)], ids=["aa", "ra", "ra4"])
@pytest.mark.parametrize("shape", [(16, 3, 32, 32), (16, 1, 28, 28)], ids=["cifar", "mnist"])
def test_shape_and_dtype_are_preserved(policy, shape):
    x = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(12))
    out = policy(x, torch.Generator().manual_seed(13))
    assert out.shape == shape and out.dtype == torch.uint8
    assert not torch.equal(out, x)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_ops": 0}, "aug.randaugment.num_ops: must be an int >= 1 (got 0)"),
        ({"num_ops": 1.5}, "aug.randaugment.num_ops: must be an int >= 1"),
        ({"magnitude": 31}, "aug.randaugment.magnitude: must be an int in [0, num_magnitude_bins - 1 = 30] (got 31)"),
        ({"magnitude": -1}, "aug.randaugment.magnitude: must be an int in [0,"),
        ({"magnitude": 5, "num_magnitude_bins": 5}, "aug.randaugment.magnitude: must be an int in [0, num_magnitude_bins - 1 = 4]"),
        ({"num_magnitude_bins": 1, "magnitude": 0}, "aug.randaugment.num_magnitude_bins: must be an int >= 2 (got 1)"),
    ],
)
def test_randaugment_rejects_bad_arguments_naming_the_key(kwargs, message):
    with pytest.raises(ConfigError) as info:
        RandAugment(**kwargs)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


@pytest.mark.parametrize(("option", "policy_type"), [("autoaugment", AutoAugment), ("randaugment", RandAugment)])
def test_recipes_from_config_are_crop_flip_then_the_policy(option, policy_type):
    recipe = build(compose_config([f"aug={option}"]).aug)
    assert isinstance(recipe, Recipe)
    assert [type(b) for b in recipe.blocks.values()] == [RandomCrop, RandomHorizontalFlip, policy_type]
    assert recipe.image_blocks[-1] is recipe.blocks[option]  # runs on the uint8 batch, after crop and flip
    assert recipe.blocks["crop"].padding == 4 and recipe.blocks["flip"].prob == 0.5
    if policy_type is RandAugment:
        assert (recipe.blocks[option].num_ops, recipe.blocks[option].magnitude, recipe.blocks[option].num_bins) == (2, 9, 31)
    x = images(32, seed=14)
    assert recipe(x, torch.Generator().manual_seed(0)).shape == x.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("policy", [AutoAugment(), RandAugment()], ids=["autoaugment", "randaugment"])
def test_cuda_batches_with_a_cuda_generator_match_the_cpu(policy):
    x = images(256, seed=15)
    generator = torch.Generator(device="cuda").manual_seed(0)
    out = policy(x.cuda(), generator)
    assert out.device.type == "cuda" and out.shape == x.shape and out.dtype == torch.uint8
    plan = policy.sample(x.cuda(), torch.Generator(device="cuda").manual_seed(1))
    on_cuda = policy.apply(x.cuda(), plan).cpu()
    on_cpu = policy.apply(x, Plan(*(t.cpu() for t in plan)))
    # Same tolerance as the geometric ops: ties at nearest-neighbour boundaries; blends may round
    # differently only if CUDA does not fuse the multiply-add the way the CPU kernel does.
    assert (on_cuda != on_cpu).float().mean().item() <= GEOMETRIC_TOLERANCE
