"""Cutout (DeVries & Taylor 2017) and Random Erasing (Zhong et al. 2017), per image, batched.

Both act on the normalised float batch, after crop and flip, as in hysts' pipeline, so a fill
value of 0 is the dataset's mean colour."""

from __future__ import annotations

import math

import torch

from cifarzoo.aug.base import FloatBlock
from cifarzoo.aug.boxes import box_mask, randint_below, uniform
from cifarzoo.errors import is_int, require


class Cutout(FloatBlock):
    """A `size` x `size` square set to `mask_color`, with probability `prob` per image.

    hysts' convention: the centre is uniform over the image (plus one pixel for even sizes),
    so the square may stick out of the image; `cut_inside=true` keeps it inside."""

    def __init__(self, size: int = 16, prob: float = 1.0, cut_inside: bool = False, mask_color: float = 0.0,
                 key: str = "aug.cutout") -> None:
        require(is_int(size) and size >= 1, f"{key}.size", "must be an int >= 1", size)
        require(0.0 <= prob <= 1.0, f"{key}.prob", "must be in [0, 1]", prob)
        require(isinstance(cut_inside, bool), f"{key}.cut_inside", "must be true or false", cut_inside)
        self.size, self.prob, self.cut_inside, self.mask_color = size, prob, cut_inside, float(mask_color)
        self.key = key

    def check_image_size(self, h: int, w: int) -> None:
        require(not self.cut_inside or self.size <= min(h, w), f"{self.key}.size",
                f"must fit in the {h}x{w} image when cut_inside is true", self.size)
        require(self.size < min(h, w), f"{self.key}.size", f"must be smaller than the {h}x{w} image (a square "
                "as large as the image erases most or all of every image it hits)", self.size)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, _, h, w = images.shape
        half, offset = self.size // 2, 1 if self.size % 2 == 0 else 0
        self.check_image_size(h, w)
        low = half if self.cut_inside else 0
        cy = low + randint_below(torch.full((b,), h + offset - 2 * low, device=images.device), generator)
        cx = low + randint_below(torch.full((b,), w + offset - 2 * low, device=images.device), generator)
        top, left = cy - half, cx - half
        mask = box_mask(h, w, top, top + self.size, left, left + self.size)
        mask &= (torch.rand(b, device=images.device, generator=generator) < self.prob)[:, None, None, None]
        return images.masked_fill(mask, self.mask_color)


class RandomErasing(FloatBlock):
    """With probability `prob`, one rectangle per image of area ratio in `area_ratio_range` and
    aspect ratio in [`min_aspect_ratio`, 1/`min_aspect_ratio`] (up to `max_attempt` draws until it
    fits), in normalised space.

    `fill`: `hysts` (default, the seeds' numbers) one uniform(0, 1) value per rectangle; `zero` 0,
    i.e. the dataset's mean colour (torchvision's default); `random` a standard-normal value per
    pixel and channel (torchvision's value="random", the paper's per-pixel noise in normalised
    space); `black` pixel value 0 in every channel (the tricks seed's code wrote uniform(0, 1)
    into the uint8 image, which truncates to 0), i.e. (0 - mean) / std per channel, which the
    recipe hands over (`use_normalization`). `aspect_sampling`: `uniform` over the range (hysts)
    or `log_uniform` (torchvision).

    Attempts: the tricks seed draws until a rectangle fits (no limit), hysts and torchvision stop
    after `max_attempt`. Both take the first draw that fits; they differ only when every draw
    fails, which with the seeds' ranges on 28x28 or 32x32 images (p(fit) about 0.95 per draw)
    has probability below 1e-25 for 20 attempts, so `max_attempt` covers the unlimited rule."""

    FILLS = ("hysts", "zero", "random", "black")
    ASPECT_SAMPLINGS = ("uniform", "log_uniform")

    def __init__(self, prob: float = 0.5, area_ratio_range: tuple[float, float] = (0.02, 0.4),
                 min_aspect_ratio: float = 0.3, max_attempt: int = 20, fill: str = "hysts",
                 aspect_sampling: str = "uniform") -> None:
        key = "aug.random_erasing"
        require(fill in self.FILLS, f"{key}.fill", f"must be one of {', '.join(self.FILLS)}", fill)
        require(aspect_sampling in self.ASPECT_SAMPLINGS, f"{key}.aspect_sampling",
                f"must be one of {', '.join(self.ASPECT_SAMPLINGS)}", aspect_sampling)
        self.fill, self.log_aspect = fill, aspect_sampling == "log_uniform"
        require(0.0 <= prob <= 1.0, f"{key}.prob", "must be in [0, 1]", prob)
        low, high = area_ratio_range
        require(0.0 < low <= high <= 1.0, f"{key}.area_ratio_range", "must be [low, high] with 0 < low <= high <= 1",
                list(area_ratio_range))
        require(0.0 < min_aspect_ratio <= 1.0, f"{key}.min_aspect_ratio", "must be in (0, 1]", min_aspect_ratio)
        require(is_int(max_attempt) and max_attempt >= 1, f"{key}.max_attempt", "must be an int >= 1", max_attempt)
        self.prob, self.area_ratio_range = prob, (low, high)
        self.aspect_range = (min_aspect_ratio, 1 / min_aspect_ratio)
        self.max_attempt = max_attempt
        self._black_values: tuple[float, ...] | None = None
        self._black: torch.Tensor | None = None

    def use_normalization(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self._black_values = tuple(-m / s for m, s in zip(mean, std))
        self._black = None

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, _, h, w = images.shape
        tries = (b, self.max_attempt)
        area = uniform(tries, *self.area_ratio_range, generator) * (h * w)
        if self.log_aspect:
            aspect = uniform(tries, *(math.log(r) for r in self.aspect_range), generator).exp()
        else:
            aspect = uniform(tries, *self.aspect_range, generator)
        mask_h = torch.sqrt(area * aspect).floor().long()
        mask_w = torch.sqrt(area / aspect).floor().long()
        fits = (mask_w < w) & (mask_h < h)
        first = fits.to(torch.int8).argmax(1, keepdim=True)  # the first attempt that fits
        mask_h, mask_w = mask_h.gather(1, first)[:, 0], mask_w.gather(1, first)[:, 0]
        top = randint_below((h - mask_h).clamp_min(1), generator)
        left = randint_below((w - mask_w).clamp_min(1), generator)
        erase = fits.any(1) & (torch.rand(b, device=images.device, generator=generator) < self.prob)
        mask = box_mask(h, w, top, top + mask_h, left, left + mask_w) & erase[:, None, None, None]
        return torch.where(mask, self._values(images, generator), images)

    def _values(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.fill == "zero":
            return torch.zeros((), device=images.device, dtype=images.dtype)
        if self.fill == "random":
            return torch.randn(images.shape, device=images.device, generator=generator).to(images.dtype)
        if self.fill == "black":
            return self._black_fill(images)
        return torch.rand(len(images), 1, 1, 1, device=images.device, generator=generator).to(images.dtype)

    def _black_fill(self, images: torch.Tensor) -> torch.Tensor:
        if self._black_values is None:
            raise RuntimeError("aug.random_erasing.fill=black needs the dataset's normalisation: "
                               "call Recipe.use_normalization(mean, std) first")
        black = self._black
        if black is None or black.device != images.device or black.dtype != images.dtype:
            # Made once per device, by fills on the device: no host-to-device copy (a CUDA graph
            # cannot capture one, should the first call fall inside a capture).
            black = torch.empty(1, len(self._black_values), 1, 1, device=images.device, dtype=images.dtype)
            for channel, value in enumerate(self._black_values):
                black[:, channel].fill_(value)
            self._black = black
        return black
