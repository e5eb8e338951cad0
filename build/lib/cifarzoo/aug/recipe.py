"""A recipe = the blocks of one `aug` option (or of several merged: `'aug=[cutout,mixup]'`).

Blocks are sorted by kind (see `cifarzoo.aug.base`); within a kind they run in config order."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from cifarzoo.aug.base import Block, Criterion, FloatBlock, Forward, Mixer, Objective
from cifarzoo.aug.blocks import RandomCrop
from cifarzoo.errors import ConfigError, require

Normalize = Callable[[torch.Tensor], torch.Tensor]
KINDS = (Block, FloatBlock, Mixer, Criterion, Objective)
# At most one block of these kinds: two mixers (or two losses) in one batch have no meaning.
SINGLE = {Mixer: "batch-mixing method", Criterion: "loss criterion", Objective: "multi-view objective"}


class Recipe:
    """`random_crop=false` drops the crop block (RICAP's default, as in the seeds' main rows);
    `true` or null keeps it."""

    def __init__(self, random_crop: bool | None = None, **blocks: object) -> None:
        require(random_crop in (None, True, False), "aug.random_crop", "must be true, false or null", random_crop)
        blocks = {name: block for name, block in blocks.items() if block is not None}  # `aug.cutout=null` removes it
        has_crop = any(isinstance(block, RandomCrop) for block in blocks.values())
        require(not (random_crop and not has_crop), "aug.random_crop", "is true but the recipe has no crop block")
        if random_crop is False:
            blocks = {name: block for name, block in blocks.items() if not isinstance(block, RandomCrop)}
        for name, block in blocks.items():
            require(isinstance(block, KINDS), f"aug.{name}", "is not an augmentation block", type(block).__name__)
        self.blocks = blocks
        self._check_combination()
        self.image_blocks = self._of(Block)
        self.float_blocks = self._of(FloatBlock)
        self.mixer = next(iter(self._of(Mixer)), None)
        self.criterion = next(iter(self._of(Criterion)), None) or Criterion()
        self.objective = next(iter(self._of(Objective)), None) or Objective()

    def _of(self, kind: type) -> list:
        return [block for block in self.blocks.values() if isinstance(block, kind)]

    def _check_combination(self) -> None:
        for kind, what in SINGLE.items():
            names = [name for name, block in self.blocks.items() if isinstance(block, kind)]
            if len(names) > 1:
                raise ConfigError("aug", f"combines {' and '.join(names)}, but a recipe takes one {what}")
        for name, block in self.blocks.items():
            for other, other_block in self.blocks.items():
                if isinstance(other_block, getattr(block, "conflicts_with", ())):
                    raise ConfigError("aug", f"combines {other} and {name}, but {name} already applies {other}")

    def check_image_size(self, h: int, w: int) -> None:
        """ConfigError before training for a block that cannot work on h x w images (blocks that
        depend on the image size define `check_image_size`)."""
        for block in self.blocks.values():
            check = getattr(block, "check_image_size", None)
            if check is not None:
                check(h, w)

    def use_normalization(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        """Tell the blocks that fill in pixel values (`define use_normalization`) the dataset's
        per-channel normalisation, e.g. where black lies in normalised space."""
        for block in self.blocks.values():
            use = getattr(block, "use_normalization", None)
            if use is not None:
                use(mean, std)

    def compute_loss_in(self, dtype: torch.dtype) -> None:
        """The dtype the criterion computes the loss in (float32; float16 for hysts' --fp16)."""
        self.criterion.dtype = dtype

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The uint8 stage alone (crop, flip, policies): what the images look like before normalising."""
        for block in self.image_blocks:
            images = block(images, generator)
        return images

    def batch(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int, normalize: Normalize,
              generator: torch.Generator) -> tuple[torch.Tensor | tuple[torch.Tensor, ...], torch.Tensor]:
        """uint8 images + int labels -> the model's input view(s) and soft targets (B, num_classes)."""
        x = normalize(self(images, generator))
        for block in self.float_blocks:
            x = block(x, generator)
        targets = F.one_hot(labels, num_classes).float()
        if self.mixer is not None:
            x, targets = self.mixer(x, targets, generator)
        return self.objective.views(x, generator), targets

    def loss(self, model: Forward, views: torch.Tensor | tuple[torch.Tensor, ...],
             targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(training loss, logits for the training error)."""
        return self.objective(model, views, targets, self.criterion)

    def __repr__(self) -> str:
        return f"Recipe({', '.join(self.blocks)})"
