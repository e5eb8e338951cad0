"""A recipe = the blocks of one `aug` option, applied in the order the config lists them."""

from __future__ import annotations

import torch

from cifarzoo.aug.blocks import Block


class Recipe:
    def __init__(self, **blocks: Block) -> None:
        self.blocks = dict(blocks)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for block in self.blocks.values():
            images = block(images, generator)
        return images

    def __repr__(self) -> str:
        return f"Recipe({', '.join(self.blocks)})"
