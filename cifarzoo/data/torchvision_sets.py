"""The real datasets, read through torchvision in their own on-disk formats."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cifarzoo.data.base import ImageDataset
from cifarzoo.errors import ConfigError


class TorchvisionDataset(ImageDataset):
    """Loads a split with `torchvision.datasets.<tv_name>` and keeps only its arrays."""

    tv_name = ""

    @property
    def tv_class(self) -> Any:
        import torchvision.datasets  # imported here: torchvision takes seconds to import

        return getattr(torchvision.datasets, self.tv_name)

    def _open(self, train: bool) -> Any:
        return self.tv_class(self.root, train=train, download=self.download)

    def check_files(self) -> None:
        """Pre-flight: the files are there (opening the test split), unless they are to be downloaded."""
        if not self.download:
            self._opened(train=False)

    def _load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        dataset = self._opened(train)
        return _as_nchw(dataset.data, self.channels), torch.as_tensor(np.asarray(_labels(dataset)), dtype=torch.int64)

    def _opened(self, train: bool) -> Any:
        try:
            return self._open(train)
        except OSError as error:  # urllib's URLError included: no network, server gone
            raise ConfigError(
                "data.download",
                f"could not download {self.name} ({error}); check the network or point data.root at a copy",
                self.download,
            ) from None
        except RuntimeError as error:
            if "download=True" not in str(error):
                raise
            raise ConfigError(
                "data.root",
                f"no {self.name} files found there (or they are corrupt); set data.download=true or point data.root at a copy",
                self.root,
            ) from None


def _labels(dataset: Any) -> Any:
    return dataset.labels if hasattr(dataset, "labels") else dataset.targets


def _as_nchw(data: Any, channels: int) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(data), dtype=torch.uint8)
    if x.ndim == 3:  # MNIST family: (N, H, W)
        return x.unsqueeze(1).contiguous()
    if x.shape[1] == channels:  # SVHN: already (N, C, H, W)
        return x.contiguous()
    return x.permute(0, 3, 1, 2).contiguous()  # CIFAR: (N, H, W, C)


class CIFAR10(TorchvisionDataset):
    name, num_classes, channels, image_size = "CIFAR-10", 10, 3, 32
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)
    tv_name = "CIFAR10"


class CIFAR100(TorchvisionDataset):
    name, num_classes, channels, image_size = "CIFAR-100", 100, 3, 32
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)
    tv_name = "CIFAR100"


class MNISTFamily(TorchvisionDataset):
    """The idx-format sets. Their official `.gz` files in `<root>/<Class>/raw/` are unpacked there
    (torchvision's extraction, offline) when the unpacked files are missing, so a copy of the
    downloads works without `data.download=true` (which would also check their checksums)."""

    def _open(self, train: bool) -> Any:
        if not self.download:
            self._unpack_gz()
        return super()._open(train)

    def _unpack_gz(self) -> None:
        from torchvision.datasets.utils import extract_archive

        raw = Path(self.root) / self.tv_name / "raw"  # torchvision's raw_folder
        for url, _md5 in self.tv_class.resources:
            packed = raw / Path(url).name
            if not packed.is_file() or packed.with_suffix("").exists():
                continue
            try:
                extract_archive(packed, raw)
            except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
                packed.with_suffix("").unlink(missing_ok=True)
                if isinstance(error, PermissionError):
                    rule = f"cannot unpack {packed.name} into {raw} (the folder is not writable); point data.root at a writable copy"
                else:  # a truncated or corrupt download: writing elsewhere would not help
                    rule = (f"cannot unpack {packed.name} into {raw} ({type(error).__name__}: {error}): the file is truncated "
                            "or corrupt; delete it and set data.download=true, or point data.root at a good copy")
                raise ConfigError("data.root", rule, self.root) from None


class MNIST(MNISTFamily):
    name, num_classes, channels, image_size = "MNIST", 10, 1, 28
    mean = (0.1307,)
    std = (0.3081,)
    tv_name = "MNIST"


class FashionMNIST(MNISTFamily):
    name, num_classes, channels, image_size = "Fashion-MNIST", 10, 1, 28
    mean = (0.2860,)
    std = (0.3530,)
    tv_name = "FashionMNIST"


class KMNIST(MNISTFamily):
    name, num_classes, channels, image_size = "KMNIST", 10, 1, 28
    mean = (0.1918,)
    std = (0.3483,)
    tv_name = "KMNIST"


class SVHN(TorchvisionDataset):
    """SVHN's train and test splits (the `extra` split is not used, as in hysts)."""

    name, num_classes, channels, image_size = "SVHN", 10, 3, 32
    mean = (0.4377, 0.4438, 0.4728)
    std = (0.1980, 0.2010, 0.1970)
    tv_name = "SVHN"

    def _open(self, train: bool) -> Any:
        return self.tv_class(self.root, split="train" if train else "test", download=self.download)
