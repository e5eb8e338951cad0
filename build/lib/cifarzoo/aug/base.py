"""The kinds of augmentation block, by the stage of the training step they act in.

A recipe (`cifarzoo.aug.Recipe`) sorts its blocks by kind, so a yaml only lists blocks and the
order of the stages is fixed: uint8 images -> normalise -> float images -> batch mixing ->
views -> model -> criterion. Targets are soft, (B, num_classes) rows summing to 1."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


class Block:
    """Per-image geometric/colour op on the uint8 batch (B, C, H, W), before normalisation."""

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


class FloatBlock:
    """Per-image op on the normalised float batch (Cutout, Random Erasing act here, as in hysts')."""

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


class Mixer:
    """Mixes images across the batch and returns their soft targets (Mixup, CutMix, RICAP)."""

    def __call__(self, images: torch.Tensor, targets: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class Criterion:
    """Loss of logits against soft targets: cross entropy, optionally with label smoothing."""

    epsilon: float = 0.0
    # float32 even when the model runs in half precision (the loss is cheap, overflow is not), unless
    # the precision computes it in half as hysts' --fp16 did (`Recipe.compute_loss_in`).
    dtype: torch.dtype = torch.float32

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.to(self.dtype), targets.to(self.dtype), label_smoothing=self.epsilon)


Forward = Callable[[torch.Tensor], torch.Tensor]


class Objective:
    """How the model sees a batch: one view by default; Dual Cutout feeds two views."""

    def views(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor | tuple[torch.Tensor, ...]:
        return images

    def __call__(self, model: Forward, views: torch.Tensor | tuple[torch.Tensor, ...], targets: torch.Tensor,
                 criterion: Criterion) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (loss, logits used for the training error)."""
        logits = model(views)
        return criterion(logits, targets), logits
