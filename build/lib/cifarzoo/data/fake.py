"""Synthetic, deterministic, learnable images: no files, any size."""

from __future__ import annotations

import math

import torch

from cifarzoo.data.base import ImageDataset
from cifarzoo.errors import require

_PROTOTYPE_SEED = 20260101
_SPLIT_SEEDS = {True: 1, False: 2}


class FakeData(ImageDataset):
    """Class k = a colour (grey level on 1 channel) and a sinusoidal grating of its own
    frequency and orientation, drawn with a random phase and Gaussian noise per image.
    Crops shift the phase only, so it stays learnable under the standard augmentation."""

    name = "fake"

    def __init__(
        self,
        num_classes: int = 10,
        channels: int = 3,
        image_size: int = 32,
        num_train: int = 10000,
        num_test: int = 2000,
        noise: float = 40.0,
        **base: object,
    ) -> None:
        super().__init__(**base)  # type: ignore[arg-type]
        for key, value in (("num_classes", num_classes), ("channels", channels), ("image_size", image_size),
                           ("num_train", num_train), ("num_test", num_test)):
            require(isinstance(value, int) and value > 0, f"data.{key}", "must be a positive int", value)
        require(num_classes >= 2, "data.num_classes", "must be at least 2", num_classes)
        self.num_classes, self.channels, self.image_size = num_classes, channels, image_size
        self.num_train, self.num_test, self.noise = num_train, num_test, float(noise)
        self.mean = (0.5,) * channels
        self.std = (0.25,) * channels

    def _load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.num_train if train else self.num_test
        k, c, s = self.num_classes, self.channels, self.image_size
        proto = torch.Generator().manual_seed(_PROTOTYPE_SEED)
        colour = 64 + 128 * torch.rand(k, c, generator=proto)
        frequency = 1.0 + 4.0 * torch.rand(k, generator=proto)  # cycles per image
        angle = math.pi * torch.rand(k, generator=proto)

        gen = torch.Generator().manual_seed(_SPLIT_SEEDS[train])
        labels = torch.randperm(n, generator=gen) % k
        phase = 2 * math.pi * torch.rand(n, generator=gen)
        grid = torch.arange(s, dtype=torch.float32) / s
        yy, xx = torch.meshgrid(grid, grid, indexing="ij")
        direction = xx * torch.cos(angle[labels])[:, None, None] + yy * torch.sin(angle[labels])[:, None, None]
        wave = torch.sin(2 * math.pi * frequency[labels][:, None, None] * direction + phase[:, None, None])
        images = colour[labels][:, :, None, None] + 48 * wave[:, None] + self.noise * torch.randn(n, c, s, s, generator=gen)
        return images.round().clamp(0, 255).to(torch.uint8), labels.to(torch.int64)
