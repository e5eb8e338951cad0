"""Building blocks of augmentation recipes. Each takes a uint8 batch (B, C, H, W) and a
generator on the batch's device, and returns an augmented batch of the same shape."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cifarzoo.aug.base import Block
from cifarzoo.errors import require


class RandomCrop(Block):
    """Zero-pad by `padding`, then crop back to the input size at a random offset per image
    (torchvision's RandomCrop(size, padding) applied to every image independently)."""

    def __init__(self, padding: int = 4) -> None:
        require(isinstance(padding, int) and padding >= 0, "aug.crop.padding", "must be an int >= 0", padding)
        self.padding = padding

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        p = self.padding
        if p == 0:
            return images
        b, _, h, w = images.shape
        device = images.device
        padded = F.pad(images, (p, p, p, p))
        top = torch.randint(0, 2 * p + 1, (b,), device=device, generator=generator)
        left = torch.randint(0, 2 * p + 1, (b,), device=device, generator=generator)
        rows = (top[:, None] + torch.arange(h, device=device))[:, :, None]  # (B, H, 1)
        cols = (left[:, None] + torch.arange(w, device=device))[:, None, :]  # (B, 1, W)
        batch = torch.arange(b, device=device)[:, None, None]
        return padded[batch, :, rows, cols].permute(0, 3, 1, 2)  # gathered as (B, H, W, C)


class RandomHorizontalFlip(Block):
    def __init__(self, prob: float = 0.5) -> None:
        require(0.0 <= prob <= 1.0, "aug.flip.prob", "must be in [0, 1]", prob)
        self.prob = prob

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        flip = torch.rand(images.shape[0], device=images.device, generator=generator) < self.prob
        return torch.where(flip[:, None, None, None], images.flip(3), images)
