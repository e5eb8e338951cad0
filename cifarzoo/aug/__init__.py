"""Batched augmentation on the training device, with per-image randomness."""

from cifarzoo.aug.blocks import Block, RandomCrop, RandomHorizontalFlip
from cifarzoo.aug.recipe import Recipe

__all__ = ["Block", "RandomCrop", "RandomHorizontalFlip", "Recipe"]
