"""Semantics of every augmentation method: the images and soft targets each one produces."""

from __future__ import annotations

import pytest
import scipy.stats
import torch
import torch.nn.functional as F

from conftest import compose_config
from cifarzoo.aug import (
    RICAP, CutMix, Cutout, DualCutout, LabelSmoothing, Mixup, RandomCrop, RandomErasing, Recipe,
)
from cifarzoo.aug.base import Criterion
from cifarzoo.config import build
from cifarzoo.errors import ConfigError

K = 10


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def labelled_batch(n: int = 32, s: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images whose pixels say where they come from: channel 0 = image index, 1 = row, 2 = column."""
    index = torch.arange(n, dtype=torch.float32)[:, None, None].expand(n, s, s)
    rows = torch.arange(s, dtype=torch.float32)[None, :, None].expand(n, s, s)
    cols = torch.arange(s, dtype=torch.float32)[None, None, :].expand(n, s, s)
    labels = torch.arange(n) % K
    return torch.stack([index, rows, cols], 1), labels, F.one_hot(labels, K).float()


# -- Mixup -----------------------------------------------------------------------------------

def test_mixup_mixes_images_and_targets_with_one_beta_lambda_per_batch():
    n = 32
    x = torch.randn(n, 3, 8, 8, generator=gen(0))
    labels = torch.arange(n) % K
    targets = F.one_hot(labels, K).float()
    flat = x.flatten(1)
    lambdas = []
    g = gen(1)
    for _ in range(300):
        mixed, soft = Mixup(alpha=0.4)(x, targets, g)
        assert torch.allclose(soft.sum(1), torch.ones(n)) and (soft >= 0).all()
        # For every image k find the partner j and lam with mixed_k = lam x_k + (1 - lam) x_j.
        d = flat[:, None, :] - flat[None, :, :]  # d[k, j] = x_k - x_j
        r = mixed.flatten(1)[:, None, :] - flat[None, :, :]  # mixed_k - x_j
        lam = (r * d).sum(-1) / (d * d).sum(-1).clamp_min(1e-12)
        residual = (r - lam[..., None] * d).norm(dim=-1)
        residual.diagonal().fill_(float("inf"))
        self_paired = (mixed - x).flatten(1).norm(dim=1) < 1e-5  # the permutation's fixed points
        partner = torch.where(self_paired, torch.arange(n), residual.argmin(1))
        paired = ~self_paired
        assert paired.sum() > n // 2
        batch_lam = lam[torch.arange(n), partner][paired]
        assert residual[torch.arange(n), partner][paired].max() < 1e-3
        assert torch.allclose(batch_lam, batch_lam[0].expand_as(batch_lam), atol=1e-4)  # one lambda per batch
        lam_all = torch.full((n, 1), batch_lam[0].item())
        expected = lam_all * targets + (1 - lam_all) * targets[partner]
        assert torch.allclose(soft, expected, atol=1e-4)  # targets mixed with the images' weights
        lambdas.append(batch_lam[0].item())
    assert scipy.stats.kstest(lambdas, scipy.stats.beta(0.4, 0.4).cdf).pvalue > 1e-3  # lam ~ Beta(alpha, alpha)
    assert scipy.stats.kstest(lambdas, scipy.stats.beta(2.0, 2.0).cdf).pvalue < 1e-3  # and not another alpha


def test_mixup_alpha_is_validated():
    with pytest.raises(ConfigError, match=r"^aug\.mixup\.alpha: must be a number > 0 \(got 0\)$"):
        Mixup(alpha=0)


# -- CutMix ----------------------------------------------------------------------------------

def test_cutmix_pastes_one_box_from_the_partner_and_weights_targets_by_its_area():
    x, labels, targets = labelled_batch()
    g = gen(2)
    areas = []
    for _ in range(50):
        mixed, soft = CutMix(alpha=1.0)(x, targets, g)
        source = mixed[:, 0].long()  # (B, H, W): which image each pixel came from
        own = source == torch.arange(len(x))[:, None, None]
        pasted = ~own
        assert torch.equal(mixed[:, 1:], x[:, 1:])  # pixels keep their position: a box, not a crop
        box = pasted.any(0)  # the same box in every image
        rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
        if len(rows):
            assert box[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # a rectangle
            assert box.sum() == len(rows) * len(cols)
        area = box.float().mean().item()
        areas.append(area)
        for b in range(len(x)):
            partner = source[b][box].unique() if area else torch.tensor([], dtype=torch.long)
            assert len(partner) <= 1
            if len(partner) and partner.item() != b:
                expected = (1 - area) * targets[b] + area * targets[partner.item()]
                assert torch.allclose(soft[b], expected, atol=1e-5)
        assert torch.allclose(soft.sum(1), torch.ones(len(x)))
    assert 0.2 < sum(areas) / len(areas) < 0.8  # E[1 - lam] = 0.5 under Beta(1, 1), before clipping


# -- RICAP -----------------------------------------------------------------------------------

def test_ricap_tiles_each_image_with_four_crops_and_weights_targets_by_area():
    x, labels, targets = labelled_batch()
    g = gen(3)
    seen_w0 = set()
    for _ in range(30):
        mixed, soft = RICAP(beta=0.3)(x, targets, g)
        source, rows, cols = mixed[:, 0].long(), mixed[:, 1].long(), mixed[:, 2].long()
        # the boundary point: where the source image changes along the first row / column of image 0
        for b in range(len(x)):
            expected = torch.zeros(K)
            # recover the four patches by grouping pixels by (source image, row offset, col offset)
            offsets = torch.stack([source[b], rows[b] - torch.arange(32)[:, None], cols[b] - torch.arange(32)[None, :]], -1)
            keys, counts = offsets.reshape(-1, 3).unique(dim=0, return_counts=True)
            assert 1 <= len(keys) <= 4
            assert counts.sum() == 32 * 32
            for (src, _, _), count in zip(keys.tolist(), counts.tolist()):
                expected[labels[src]] += count / 1024
            # same source + same offset inside a patch means each patch is an unscaled crop
            assert torch.allclose(soft[b], expected, atol=1e-5)
            assert ((rows[b] >= 0) & (rows[b] < 32) & (cols[b] >= 0) & (cols[b] < 32)).all()
        first_row = source[0, 0]
        seen_w0.add(int((first_row != first_row[0]).long().argmax()))
    assert len(seen_w0) > 3  # the boundary moves from batch to batch


def test_ricap_patches_come_from_four_independent_pairings():
    x, labels, targets = labelled_batch(n=64)
    mixed, _ = RICAP(beta=1.0)(x, targets, gen(4))
    corners = mixed[:, 0][:, [0, 0, -1, -1], [0, -1, 0, -1]].long()  # (B, 4) source per corner
    for patch in range(4):
        assert sorted(corners[:, patch].tolist()) == list(range(64))  # every image is used once per patch
    assert not all(torch.equal(corners[:, 0], corners[:, p]) for p in range(1, 4))


# -- Cutout / Random Erasing -------------------------------------------------------------------

def _boxes(mask: torch.Tensor) -> list[tuple[int, int]]:
    """(height, width) of the single rectangle set in each image's (H, W) mask; (0, 0) if none."""
    out = []
    for m in mask:
        rows, cols = m.any(1).nonzero().flatten(), m.any(0).nonzero().flatten()
        if len(rows) == 0:
            out.append((0, 0))
            continue
        assert m[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
        assert m.sum() == len(rows) * len(cols)
        out.append((len(rows), len(cols)))
    return out


def test_cutout_sets_a_size_square_to_mask_color_partly_outside_unless_cut_inside():
    x = torch.ones(256, 3, 32, 32)
    out = Cutout(size=16, prob=1.0, cut_inside=False, mask_color=0.0)(x, gen(5))
    boxes = _boxes((out == 0).all(1))
    assert all(h <= 16 and w <= 16 and h * w > 0 for h, w in boxes)
    assert sum(b == (16, 16) for b in boxes) > 50 and sum(b != (16, 16) for b in boxes) > 50  # clipped at the border
    assert min(h for h, _ in boxes) <= 9  # the centre reaches the border (h = 8 + 1 at the far edge)
    inside = Cutout(size=16, prob=1.0, cut_inside=True, mask_color=-2.0)(x, gen(5))
    assert all(b == (16, 16) for b in _boxes((inside == -2).all(1)))
    assert ((inside == 1) | (inside == -2)).all()


def test_cutout_prob_applies_it_to_a_random_subset():
    out = Cutout(size=8, prob=0.5)(torch.ones(200, 1, 28, 28), gen(6))
    hit = (out == 0).flatten(1).any(1).float().mean()
    assert 0.35 < hit < 0.65


def test_random_erasing_rectangles_respect_area_and_aspect_bounds():
    x = torch.full((512, 3, 32, 32), 5.0)
    out = RandomErasing(prob=1.0, area_ratio_range=(0.02, 0.4), min_aspect_ratio=0.3)(x, gen(7))
    erased = (out != 5).all(1)
    boxes = _boxes(erased)
    values = out[:, 0][erased.any(-1).any(-1)].flatten()
    assert ((values >= 0) & (values <= 1) | (values == 5)).all()  # filled with one uniform(0, 1) value
    areas = [h * w / 1024 for h, w in boxes if h]
    assert len(areas) > 480  # nearly every image finds a fitting rectangle in 20 attempts
    assert max(areas) <= 0.4 and min(areas) >= 0.02 * 0.5  # floor() of the sides shrinks the area a little
    aspects = [h / w for h, w in boxes if h]
    assert min(aspects) >= 0.3 * 0.7 and max(aspects) <= (1 / 0.3) / 0.7
    assert min(aspects) < 0.6 and max(aspects) > 1.7  # the whole range is used
    half = RandomErasing(prob=0.5)(x, gen(8))
    assert 0.35 < (half != 5).flatten(1).any(1).float().mean() < 0.65


def test_random_erasing_fills_and_aspect_sampling():
    """zero: the rectangle is 0 (the mean colour); random: per-pixel N(0, 1) values; log_uniform
    draws as many aspect ratios below 1 as above it (uniform over [0.3, 3.33]: about 23% below)."""
    x = torch.full((512, 3, 32, 32), 5.0)
    zero = RandomErasing(prob=1.0, fill="zero")(x, gen(10))
    assert set(zero.unique().tolist()) == {0.0, 5.0}
    noisy = RandomErasing(prob=1.0, fill="random")(x, gen(11))
    values = noisy[noisy != 5]
    assert values.unique().numel() > 0.9 * values.numel()  # a value per pixel and channel
    assert abs(values.mean()) < 0.05 and abs(values.std() - 1) < 0.05

    def share_below_one(sampling: str) -> float:
        out = RandomErasing(prob=1.0, aspect_sampling=sampling, area_ratio_range=(0.1, 0.1))(x, gen(12))
        aspects = [h / w for h, w in _boxes((out != 5).all(1)) if h]
        return sum(a < 1 for a in aspects) / len(aspects)

    assert 0.4 < share_below_one("log_uniform") < 0.6
    assert 0.15 < share_below_one("uniform") < 0.32
    with pytest.raises(ConfigError, match=r"^aug.random_erasing.fill: must be one of hysts, zero, random"):
        RandomErasing(fill="mean")


# -- losses ---------------------------------------------------------------------------------

def test_label_smoothing_loss_equals_its_formula():
    logits = torch.randn(16, K, generator=gen(9))
    _, _, targets = labelled_batch(16)
    eps = 0.1
    smoothed = (1 - eps) * targets + eps / K
    expected = -(smoothed * logits.log_softmax(1)).sum(1).mean()
    assert torch.allclose(LabelSmoothing(epsilon=eps)(logits, targets), expected, atol=1e-6)
    assert not torch.allclose(Criterion()(logits, targets), expected, atol=1e-3)


def test_dual_cutout_loss_is_mean_cross_entropy_plus_alpha_times_logit_mse():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, K))
    x = torch.randn(8, 3, 32, 32, generator=gen(10))
    _, _, targets = labelled_batch(8)
    dual = DualCutout(alpha=0.1, size=16)
    views = dual.views(x, gen(11))
    assert not torch.equal(views[0], views[1])  # two different cutouts of the same images
    assert ((views[0] == 0) | (views[0] == x)).all()
    loss, logits = dual(model, views, targets, Criterion())
    a, b = model(views[0]), model(views[1])
    ce = (F.cross_entropy(a, targets) + F.cross_entropy(b, targets)) / 2
    assert torch.allclose(loss, ce + 0.1 * ((a - b) ** 2).mean(), atol=1e-6)
    assert torch.allclose(logits, (a + b) / 2, atol=1e-6)
    assert (loss - ce).item() > 1e-4  # the consistency term is really there


# -- recipes from config ------------------------------------------------------------------------

AUG_BLOCKS = {
    "cutout": (Cutout,), "random_erasing": (RandomErasing,), "mixup": (Mixup,), "cutmix": (CutMix,),
    "dual_cutout": (DualCutout,), "label_smoothing": (LabelSmoothing,),
}


@pytest.mark.parametrize("name", sorted(AUG_BLOCKS))
def test_each_method_recipe_is_standard_crop_and_flip_plus_the_method(name):
    recipe = build(compose_config([f"aug={name}"]).aug)
    assert list(recipe.blocks) == ["crop", "flip", name]
    assert isinstance(recipe.blocks[name], AUG_BLOCKS[name])


def test_ricap_drops_the_random_crop_unless_asked():
    assert list(build(compose_config(["aug=ricap"]).aug).blocks) == ["flip", "ricap"]
    assert list(build(compose_config(["aug=ricap", "aug.random_crop=true"]).aug).blocks) == ["crop", "flip", "ricap"]
    assert list(build(compose_config(["aug=[cutout,ricap]"]).aug).blocks) == ["flip", "cutout", "ricap"]


def test_a_list_merges_recipes_with_shared_blocks_once():
    recipe = build(compose_config(["aug=[cutout,mixup]"]).aug)
    assert list(recipe.blocks) == ["crop", "flip", "cutout", "mixup"]
    assert recipe.float_blocks == [recipe.blocks["cutout"]] and recipe.mixer is recipe.blocks["mixup"]
    assert build(compose_config(["aug=[mixup,label_smoothing]"]).aug).criterion.epsilon == 0.1


@pytest.mark.parametrize(
    ("aug", "message"),
    [
        ("[mixup,cutmix]", "aug: combines mixup and cutmix, but a recipe takes one batch-mixing method"),
        ("[ricap,mixup]", "aug: combines ricap and mixup, but a recipe takes one batch-mixing method"),
        ("[cutout,dual_cutout]", "aug: combines cutout and dual_cutout, but dual_cutout already applies cutout"),
    ],
)
def test_combinations_that_make_no_sense_fail_with_one_line(aug, message):
    with pytest.raises(ConfigError) as e:
        build(compose_config([f"aug={aug}"]).aug)
    assert str(e.value) == message


def test_recipe_batch_runs_the_stages_in_order_and_returns_soft_targets():
    recipe = Recipe(crop=RandomCrop(4), cutout=Cutout(size=8), mixup=Mixup(1.0))
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=gen(12))
    labels = torch.arange(16) % K
    views, targets = recipe.batch(images, labels, K, lambda u: u.float() / 255, gen(13))
    assert views.dtype == torch.float32 and views.shape == (16, 3, 32, 32)
    assert targets.shape == (16, K) and torch.allclose(targets.sum(1), torch.ones(16))
    again, again_targets = recipe.batch(images, labels, K, lambda u: u.float() / 255, gen(13))
    assert torch.equal(views, again) and torch.equal(targets, again_targets)
