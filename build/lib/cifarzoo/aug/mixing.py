"""Batch mixing with soft targets: Mixup (Zhang et al. 2018), CutMix (Yun et al. 2019), RICAP
(Takahashi et al. 2018). As in the papers' code and hysts', one mixing ratio per batch and a
random pairing (permutation) of the images; targets are mixed with the same weights."""

from __future__ import annotations

import torch

from cifarzoo.aug.base import Mixer
from cifarzoo.aug.beta import sample_beta
from cifarzoo.aug.boxes import box_mask, memory_format_of, randint_below, uniform
from cifarzoo.errors import is_number, require


def _positive(value: object, key: str) -> float:
    require(is_number(value) and value > 0, key,
            "must be a number > 0", value)
    return float(value)


def _pairing(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.randperm(len(images), device=images.device, generator=generator)


class Mixup(Mixer):
    """x = lam x_i + (1 - lam) x_j, t = lam t_i + (1 - lam) t_j with lam ~ Beta(alpha, alpha)."""

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = _positive(alpha, "aug.mixup.alpha")

    def __call__(self, images: torch.Tensor, targets: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        lam = sample_beta(self.alpha, self.alpha, 1, generator)
        pair = _pairing(images, generator)
        return torch.lerp(images[pair], images, lam.to(images.dtype)), torch.lerp(targets[pair], targets, lam)


class CutMix(Mixer):
    """A box of area ~(1 - lam) pasted from the paired image, lam ~ Beta(alpha, alpha); the box is
    clipped at the border and the targets are weighted by the area actually pasted."""

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = _positive(alpha, "aug.cutmix.alpha")

    def __call__(self, images: torch.Tensor, targets: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        _, _, h, w = images.shape
        lam = sample_beta(self.alpha, self.alpha, 1, generator)
        pair = _pairing(images, generator)
        cy, cx = uniform((1,), 0, h, generator), uniform((1,), 0, w, generator)
        half_h, half_w = h * torch.sqrt(1 - lam) / 2, w * torch.sqrt(1 - lam) / 2
        top, bottom = torch.round((cy - half_h).clamp_min(0)).long(), torch.round((cy + half_h).clamp_max(h)).long()
        left, right = torch.round((cx - half_w).clamp_min(0)).long(), torch.round((cx + half_w).clamp_max(w)).long()
        mask = box_mask(h, w, top, bottom, left, right)
        kept = 1 - ((bottom - top) * (right - left)).float() / (h * w)
        return torch.where(mask, images[pair], images), torch.lerp(targets[pair], targets, kept)


class RICAP(Mixer):
    """Four patches from four random pairings tile each image; the boundary point (w0, h0) has
    w0 = round(W * r1), h0 = round(H * r2), r ~ Beta(beta, beta); each patch is a random crop of its
    source image, and the targets are weighted by patch area."""

    def __init__(self, beta: float = 0.3) -> None:
        self.beta = _positive(beta, "aug.ricap.beta")

    def __call__(self, images: torch.Tensor, targets: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = images.shape
        device = images.device
        ratio = sample_beta(self.beta, self.beta, 2, generator)
        w0, h0 = torch.round(w * ratio[0]).long(), torch.round(h * ratio[1]).long()
        widths = torch.stack([w0, w - w0, w0, w - w0])  # patches: top-left, top-right, bottom-left, bottom-right
        heights = torch.stack([h0, h0, h - h0, h - h0])
        pairs = torch.stack([_pairing(images, generator) for _ in range(4)])  # (4, B)
        crop_left = randint_below(w - widths + 1, generator)
        crop_top = randint_below(h - heights + 1, generator)
        # For every output pixel: which patch covers it, and where that patch was cropped from.
        rows, cols = torch.arange(h, device=device), torch.arange(w, device=device)
        patch = (rows[:, None] >= h0).long() * 2 + (cols[None, :] >= w0).long()  # (H, W)
        src_row = rows[:, None] - torch.where(rows[:, None] >= h0, h0, 0) + crop_top[patch]
        src_col = cols[None, :] - torch.where(cols[None, :] >= w0, w0, 0) + crop_left[patch]
        source = pairs[patch]  # (H, W, B)
        mixed = images[source, :, src_row[..., None], src_col[..., None]]  # (H, W, B, C)
        area = (widths * heights).float() / (h * w)
        mixed_targets = (area[:, None, None] * targets[pairs]).sum(0)
        return mixed.permute(2, 3, 0, 1).contiguous(memory_format=memory_format_of(images)), mixed_targets

