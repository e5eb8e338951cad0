"""Device-resident data: the whole split lives on the training device as uint8; batches
are drawn by index and normalised there. No DataLoader, no per-image Python."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cifarzoo.data.base import Splits


class DeviceData:
    def __init__(self, splits: Splits, mean: Sequence[float], std: Sequence[float], device: torch.device,
                 num_classes: int | None = None, channels_last: bool | None = None) -> None:
        self.device = device
        self.mean, self.std = tuple(mean), tuple(std)  # per channel, of pixel values in [0, 1]
        self.num_classes = int(splits.train_y.max()) + 1 if num_classes is None else num_classes
        self.train_x = splits.train_x.to(device)
        self.train_y = splits.train_y.to(device)
        self.test_x = splits.test_x.to(device)
        self.test_y = splits.test_y.to(device)
        channels = self.train_x.shape[1]
        self._mean = torch.tensor(mean, device=device).view(1, channels, 1, 1) * 255
        self._inv_std = 1 / (torch.tensor(std, device=device).view(1, channels, 1, 1) * 255)
        channels_last = device.type == "cuda" if channels_last is None else channels_last
        self._memory_format = torch.channels_last if channels_last else torch.contiguous_format

    @property
    def num_train(self) -> int:
        return len(self.train_x)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images -> float, standardised per channel (channels-last on CUDA by default)."""
        x = (images.float() - self._mean) * self._inv_std
        return x.contiguous(memory_format=self._memory_format)

    def permutation(self, generator: torch.Generator) -> torch.Tensor:
        return torch.randperm(self.num_train, device=self.device, generator=generator)

    def test_batches(self, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [
            (self.test_x[i : i + batch_size], self.test_y[i : i + batch_size])
            for i in range(0, len(self.test_x), batch_size)
        ]
