"""Batched augmentation: per-image randomness, exact crop/flip semantics, recipes from config."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from conftest import compose_config
from cifarzoo.aug import RandomCrop, RandomHorizontalFlip, Recipe
from cifarzoo.config import build


def batch(n: int = 64, c: int = 3, s: int = 32) -> torch.Tensor:
    return torch.randint(1, 256, (n, c, s, s), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_random_crop_is_a_window_of_the_zero_padded_image_with_per_image_offsets():
    x = batch()
    out = RandomCrop(padding=4)(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = F.pad(x, (4, 4, 4, 4))
    offsets = []
    for i in range(len(x)):
        matches = [(t, l) for t in range(9) for l in range(9) if torch.equal(padded[i, :, t:t + 32, l:l + 32], out[i])]
        assert len(matches) == 1
        offsets.append(matches[0])
    assert len(set(offsets)) > 20  # each image its own offset, not one per batch
    assert {t for t, _ in offsets} | {l for _, l in offsets} >= {0, 8}  # full range reached


def test_random_crop_on_mnist_shaped_batches_keeps_28x28():
    x = batch(c=1, s=28)
    out = RandomCrop(padding=4)(x, torch.Generator().manual_seed(2))
    assert out.shape == (64, 1, 28, 28)
    assert (out == 0).any()  # some padding came in


def test_flip_flips_a_random_subset_of_images():
    x = batch()
    out = RandomHorizontalFlip(prob=0.5)(x, torch.Generator().manual_seed(3))
    flipped = [torch.equal(out[i], x[i].flip(2)) for i in range(len(x))]
    kept = [torch.equal(out[i], x[i]) for i in range(len(x))]
    assert all(f != k for f, k in zip(flipped, kept))
    assert 15 < sum(flipped) < 49
    assert torch.equal(RandomHorizontalFlip(prob=0.0)(x, torch.Generator()), x)
    assert torch.equal(RandomHorizontalFlip(prob=1.0)(x, torch.Generator()), x.flip(3))


def test_same_generator_state_gives_the_same_augmentation():
    x = batch()
    recipe = Recipe(crop=RandomCrop(4), flip=RandomHorizontalFlip(0.5))
    a = recipe(x, torch.Generator().manual_seed(9))
    b = recipe(x, torch.Generator().manual_seed(9))
    c = recipe(x, torch.Generator().manual_seed(10))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_standard_and_none_recipes_from_config():
    standard = build(compose_config(["aug=standard"]).aug)
    assert isinstance(standard, Recipe)
    assert [type(b) for b in standard.blocks.values()] == [RandomCrop, RandomHorizontalFlip]
    assert standard.blocks["crop"].padding == 4 and standard.blocks["flip"].prob == 0.5
    x = batch()
    assert not torch.equal(standard(x, torch.Generator().manual_seed(0)), x)
    none = build(compose_config(["aug=none"]).aug)
    assert none.blocks == {} and torch.equal(none(x, torch.Generator()), x)
