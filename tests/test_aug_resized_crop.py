"""aug.random_resized_crop: torchvision's RandomResizedCrop, batched with per-image boxes."""

from __future__ import annotations

import pytest
import scipy.stats
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF

from conftest import compose_config
from cifarzoo.aug import RandomHorizontalFlip, RandomResizedCrop
from cifarzoo.aug.resized_crop import resize_boxes
from cifarzoo.config import build
from cifarzoo.errors import ConfigError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def torchvision_of(images: torch.Tensor, boxes: tuple[torch.Tensor, ...], antialias: bool = True) -> torch.Tensor:
    """torchvision's resized_crop of each image's own box back to the image size."""
    size = list(images.shape[-2:])
    return torch.stack([TF.resized_crop(image, *map(int, box), size, antialias=antialias)
                        for image, box in zip(images, zip(*boxes))])


def assert_equal_up_to_float_rounding(out: torch.Tensor, images: torch.Tensor, boxes: tuple[torch.Tensor, ...]) -> None:
    """PyTorch's bilinear kernels (CPU vectorised or not, CUDA) sum the same four weighted pixels
    in different orders, so float results agree to float32 rounding, and uint8 results are equal
    except where the exact value lies within that rounding of a .5 (then they differ by 1)."""
    for antialias in (True, False):  # boxes never exceed the image: an upsample, where antialias changes nothing
        exact = torchvision_of(images.double(), boxes, antialias)
        if out.dtype.is_floating_point:
            assert torch.allclose(out.double(), exact, rtol=0, atol=1e-3)
            continue
        expected = torchvision_of(images, boxes, antialias)
        near_half = (exact - exact.floor() - 0.5).abs() < 1e-3
        assert torch.equal(out[~near_half], exact.round()[~near_half].to(out.dtype))
        assert torch.equal(expected[~near_half], out[~near_half])
        assert (out.int() - expected.int()).abs().max() <= 1 and near_half.float().mean() < 0.1  # exact halves are common: weights are ratios of small ints


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_each_image_equals_torchvisions_resized_crop_of_its_box(dtype):
    n, size = 64, 32
    images = torch.randint(0, 256, (n, 3, size, size), generator=gen(0), dtype=torch.uint8).to(dtype)
    block = RandomResizedCrop()
    boxes = block.boxes(n, size, size, gen(1))
    assert len(set(zip(*(b.tolist() for b in boxes)))) > n // 2  # per-image boxes
    out = resize_boxes(images, *boxes)
    assert out.dtype == dtype and out.shape == images.shape
    assert_equal_up_to_float_rounding(out, images, boxes)
    # the block is boxes + resize, from the same generator state
    assert torch.equal(block(images, gen(1)), out)


def test_a_non_square_image_and_the_whole_image_box():
    images = torch.randint(0, 256, (16, 3, 24, 40), generator=gen(2), dtype=torch.uint8)
    boxes = RandomResizedCrop(scale=(0.2, 0.5), ratio=(0.5, 2.0)).boxes(16, 24, 40, gen(3))
    assert_equal_up_to_float_rounding(resize_boxes(images, *boxes), images, boxes)
    whole = torch.zeros(16, dtype=torch.long), torch.zeros(16, dtype=torch.long)
    assert torch.equal(resize_boxes(images, *whole, torch.full((16,), 24), torch.full((16,), 40)), images)


def test_boxes_follow_torchvisions_get_params_distribution():
    n, size = 4000, 32
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    top, left, box_h, box_w = RandomResizedCrop(scale, ratio).boxes(n, size, size, gen(4))
    assert bool(((box_h >= 1) & (top >= 0) & (top + box_h <= size) & (left >= 0) & (left + box_w <= size)).all())
    torch.manual_seed(5)
    reference = torch.tensor([T.RandomResizedCrop.get_params(torch.empty(3, size, size), list(scale), list(ratio))
                              for _ in range(n)])
    ours = {"area": box_h * box_w, "height": box_h, "aspect": box_w / box_h, "top": top, "left": left}
    theirs = {"area": reference[:, 2] * reference[:, 3], "height": reference[:, 2],
              "aspect": reference[:, 3] / reference[:, 2], "top": reference[:, 0], "left": reference[:, 1]}
    for key in ours:
        assert scipy.stats.ks_2samp(ours[key].numpy(), theirs[key].numpy()).pvalue > 0.01, key


def test_no_box_fits_falls_back_to_torchvisions_central_crop():
    # aspect ratios of 4..5 never fit a square 32x32 image at 90%+ of its area
    top, left, box_h, box_w = RandomResizedCrop(scale=(0.9, 1.0), ratio=(4.0, 5.0)).boxes(8, 32, 32, gen(6))
    assert (top.tolist(), left.tolist(), box_h.tolist(), box_w.tolist()) == ([12] * 8, [0] * 8, [8] * 8, [32] * 8)
    torch.manual_seed(0)
    assert T.RandomResizedCrop.get_params(torch.empty(3, 32, 32), [0.9, 1.0], [4.0, 5.0]) == (12, 0, 8, 32)


def test_recipe_yaml_is_the_crop_then_the_flip():
    recipe = build(compose_config(["aug=random_resized_crop"]).aug)
    assert list(recipe.blocks) == ["random_resized_crop", "flip"]
    crop, flip = recipe.image_blocks
    assert isinstance(crop, RandomResizedCrop) and isinstance(flip, RandomHorizontalFlip)
    assert (crop.scale, crop.ratio, crop.max_attempt) == ((0.08, 1.0), (0.75, 4 / 3), 10)
    merged = build(compose_config(["aug=[random_resized_crop,cutout]", "aug.crop=null",
                                   "aug.random_resized_crop.scale=[0.35,1.0]"]).aug)
    assert list(merged.blocks) == ["random_resized_crop", "flip", "cutout"] and merged.image_blocks[0].scale == (0.35, 1.0)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("aug.random_resized_crop.scale=[0.5,0.2]",
         "aug.random_resized_crop.scale: must be [low, high] with 0 < low <= high <= 1 (got [0.5, 0.2])"),
        ("aug.random_resized_crop.ratio=[0,1]",
         "aug.random_resized_crop.ratio: must be [low, high] with 0 < low <= high (got [0, 1])"),
        ("aug.random_resized_crop.scale=0.5",
         "aug.random_resized_crop.scale: must be [low, high] with 0 < low <= high <= 1 (got 0.5)"),
        ("aug.random_resized_crop.max_attempt=0", "aug.random_resized_crop.max_attempt: must be an int >= 1 (got 0)"),
    ],
)
def test_bad_values_are_one_line_config_errors(override, message):
    with pytest.raises(ConfigError) as info:
        build(compose_config(["aug=random_resized_crop", override]).aug)
    assert str(info.value) == message
