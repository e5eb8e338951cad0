"""The dataset interface: a whole split as uint8 NCHW images and int64 labels."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cifarzoo.errors import is_int, require

SUBSET_SEED = 0  # fixed: `data.train_size` picks the same images whatever the run's seed


@dataclass
class Splits:
    train_x: torch.Tensor  # uint8 (N, C, H, W)
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor

    def shard(self, rank: int, world_size: int) -> Splits:
        """Rank `rank`'s share of a data-parallel run: every `world_size`-th image from `rank` on.
        Training shards are cut to the same size so every rank takes the same number of steps
        (at most world_size - 1 images are left out); test shards keep every image."""
        if world_size == 1:
            return self
        end = len(self.train_x) // world_size * world_size
        train = slice(rank, end, world_size)
        test = slice(rank, None, world_size)
        return Splits(self.train_x[train], self.train_y[train], self.test_x[test], self.test_y[test])


class ImageDataset:
    """Base of every `data` option. Subclasses set the class attributes and `_load_split`."""

    name: str = ""
    num_classes: int = 0
    channels: int = 0
    image_size: int = 0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        train_size: int | None = None,
        test_size: int | None = None,
    ) -> None:
        self.root = str(root)
        self.download = bool(download)
        self.train_size = train_size
        self.test_size = test_size
        for key, size in (("data.train_size", train_size), ("data.test_size", test_size)):
            require(size is None or (is_int(size) and size > 0), key, "must be null or a positive int", size)

    def check_files(self) -> None:
        """Raise a ConfigError when the files are neither there nor to be downloaded (a sweep's
        pre-flight, once per distinct dataset). Generated data has none."""

    def _load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def load(self) -> Splits:
        train_x, train_y = _subset(*self._load_split(train=True), self.train_size, "data.train_size")
        test_x, test_y = _subset(*self._load_split(train=False), self.test_size, "data.test_size")
        return Splits(train_x, train_y, test_x, test_y)


def _subset(x: torch.Tensor, y: torch.Tensor, size: int | None, key: str) -> tuple[torch.Tensor, torch.Tensor]:
    if size is None:
        return x, y
    require(size <= len(x), key, f"must be at most the split's size {len(x)}", size)
    generator = torch.Generator().manual_seed(SUBSET_SEED)
    index = torch.randperm(len(x), generator=generator)[:size].sort().values
    return x[index], y[index]
