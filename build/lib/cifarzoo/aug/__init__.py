"""Batched augmentation on the training device, with per-image randomness."""

from cifarzoo.aug.base import Block, Criterion, FloatBlock, Mixer, Objective
from cifarzoo.aug.blocks import RandomCrop, RandomHorizontalFlip
from cifarzoo.aug.erase import Cutout, RandomErasing
from cifarzoo.aug.mixing import RICAP, CutMix, Mixup
from cifarzoo.aug.objectives import DualCutout, LabelSmoothing
from cifarzoo.aug.policies import AutoAugment, RandAugment
from cifarzoo.aug.recipe import Recipe
from cifarzoo.aug.resized_crop import RandomResizedCrop

__all__ = [
    "AutoAugment", "Block", "Criterion", "CutMix", "Cutout", "DualCutout", "FloatBlock", "LabelSmoothing", "Mixer", "Mixup",
    "Objective", "RICAP", "RandAugment", "RandomCrop", "RandomErasing", "RandomHorizontalFlip", "RandomResizedCrop",
    "Recipe",
]
