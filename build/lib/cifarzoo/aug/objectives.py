"""Blocks that change the loss rather than the images: label smoothing and Dual Cutout."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cifarzoo.aug.base import Criterion, Forward, Objective
from cifarzoo.aug.erase import Cutout
from cifarzoo.errors import is_number, require


class LabelSmoothing(Criterion):
    """Cross entropy against (1 - epsilon) * targets + epsilon / num_classes (Szegedy et al. 2016)."""

    def __init__(self, epsilon: float = 0.1) -> None:
        require(isinstance(epsilon, (int, float)) and 0.0 <= epsilon < 1.0, "aug.label_smoothing.epsilon",
                "must be in [0, 1)", epsilon)
        self.epsilon = float(epsilon)


class DualCutout(Objective):
    """Two Cutout views of every image, each through the model on its own (as hysts does, so BN
    sees them as separate batches); loss = mean of the two cross entropies + alpha * MSE between
    the two views' logits. The training error is measured on the mean of the two logits."""

    conflicts_with = (Cutout,)
    graph_unsupported = "dual_cutout: two views through the model per step, not covered by the graph step's tests"

    def __init__(self, alpha: float = 0.1, size: int = 16, prob: float = 1.0, cut_inside: bool = False,
                 mask_color: float = 0.0) -> None:
        require(is_number(alpha) and alpha >= 0,
                "aug.dual_cutout.alpha", "must be a number >= 0", alpha)
        self.alpha = float(alpha)
        self.cutout = Cutout(size, prob, cut_inside, mask_color, key="aug.dual_cutout")

    def check_image_size(self, h: int, w: int) -> None:
        self.cutout.check_image_size(h, w)

    def views(self, images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cutout(images, generator), self.cutout(images, generator)

    def __call__(self, model: Forward, views: tuple[torch.Tensor, torch.Tensor], targets: torch.Tensor,
                 criterion: Criterion) -> tuple[torch.Tensor, torch.Tensor]:
        first, second = model(views[0]).to(criterion.dtype), model(views[1]).to(criterion.dtype)
        loss = (criterion(first, targets) + criterion(second, targets)) / 2 + self.alpha * F.mse_loss(first, second)
        return loss, (first + second) / 2
