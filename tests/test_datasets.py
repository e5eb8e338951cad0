"""The real dataset loaders of `cifarzoo.data`, on files in the datasets' own formats.

CIFAR-10/100, SVHN and KMNIST are read from small files written here (dataset_files.py);
MNIST and Fashion-MNIST from the real, checksum-verified copies in SHARED_DATA. The only
patching is of torchvision's expected md5 sums, set to those of the generated files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from conftest import SHARED_DATA, compose_config
from dataset_files import (
    make_images,
    marker_pixels,
    read_idx_gz,
    write_cifar10,
    write_cifar100,
    write_mnist_family,
    write_svhn,
)

import cifarzoo.data as data
from cifarzoo.config import build
from cifarzoo.data.base import Splits
from cifarzoo.errors import ConfigError

N_TRAIN, N_TEST = 20, 10


def _assert_split(x: torch.Tensor, y: torch.Tensor, images: np.ndarray, labels: list[int]) -> None:
    """Exact uint8 NCHW images (marker pixels first, for a readable failure) and int64 labels."""
    n, c, s = images.shape[0], images.shape[1], images.shape[2]
    assert x.dtype == torch.uint8 and tuple(x.shape) == (n, c, s, s)
    assert x.is_contiguous()
    for (i, ch, h, w), value in marker_pixels(c, s).items():
        assert x[i, ch, h, w].item() == value, f"pixel (image {i}, channel {ch}, row {h}, column {w})"
    assert torch.equal(x, torch.from_numpy(images))
    assert y.dtype == torch.int64 and tuple(y.shape) == (n,)
    assert y.tolist() == list(labels)


def _labels(n: int, num_classes: int, seed: int) -> list[int]:
    return np.random.default_rng(seed).integers(0, num_classes, size=n).tolist()


# ---------------------------------------------------------------- generated files: CIFAR, SVHN, KMNIST


@pytest.fixture
def cifar10_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    train_x, test_x = make_images(N_TRAIN, 3, 32, seed=1), make_images(N_TEST, 3, 32, seed=2)
    train_y, test_y = _labels(N_TRAIN, 10, seed=3), _labels(N_TEST, 10, seed=4)
    sums = write_cifar10(tmp_path, train_x, train_y, test_x, test_y)
    tv = torchvision.datasets.CIFAR10
    monkeypatch.setattr(tv, "train_list", [[f"data_batch_{b}", sums[f"data_batch_{b}"]] for b in range(1, 6)])
    monkeypatch.setattr(tv, "test_list", [["test_batch", sums["test_batch"]]])
    monkeypatch.setattr(tv, "meta", {**tv.meta, "md5": sums["batches.meta"]})
    return tmp_path, (train_x, train_y, test_x, test_y)


def test_cifar10_reads_pickled_batches(cifar10_root) -> None:
    root, (train_x, train_y, test_x, test_y) = cifar10_root
    splits = data.CIFAR10(root=str(root), download=False).load()
    _assert_split(splits.train_x, splits.train_y, train_x, train_y)
    _assert_split(splits.test_x, splits.test_y, test_x, test_y)


def test_cifar100_reads_fine_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train_x, test_x = make_images(N_TRAIN, 3, 32, seed=5), make_images(N_TEST, 3, 32, seed=6)
    # Fine labels above 9 and up to 99, so that reading coarse labels (or clipping) fails.
    train_y = [99, 0, 57, 12, *_labels(N_TRAIN - 4, 100, seed=7)]
    test_y = [42, 98, *_labels(N_TEST - 2, 100, seed=8)]
    sums = write_cifar100(tmp_path, train_x, train_y, test_x, test_y)
    tv = torchvision.datasets.CIFAR100
    monkeypatch.setattr(tv, "train_list", [["train", sums["train"]]])
    monkeypatch.setattr(tv, "test_list", [["test", sums["test"]]])
    monkeypatch.setattr(tv, "meta", {**tv.meta, "md5": sums["meta"]})

    splits = data.CIFAR100(root=tmp_path, download=False).load()
    _assert_split(splits.train_x, splits.train_y, train_x, train_y)
    _assert_split(splits.test_x, splits.test_y, test_x, test_y)


def test_svhn_reads_mat_files_and_maps_10_to_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train_x, test_x = make_images(N_TRAIN, 3, 32, seed=9), make_images(N_TEST, 3, 32, seed=10)
    train_digits = [0, 1, 9, 0, *_labels(N_TRAIN - 4, 10, seed=11)]
    test_digits = [5, 0, *_labels(N_TEST - 2, 10, seed=12)]
    split_list = {}
    for split, x, digits in (("train", train_x, train_digits), ("test", test_x, test_digits)):
        checksum = write_svhn(tmp_path, split, x, digits)
        url, filename, _ = torchvision.datasets.SVHN.split_list[split]
        split_list[split] = [url, filename, checksum]
    monkeypatch.setattr(torchvision.datasets.SVHN, "split_list", {**torchvision.datasets.SVHN.split_list, **split_list})

    splits = data.SVHN(root=str(tmp_path), download=False).load()
    _assert_split(splits.train_x, splits.train_y, train_x, train_digits)
    _assert_split(splits.test_x, splits.test_y, test_x, test_digits)
    assert splits.train_y.max().item() <= 9


def test_kmnist_reads_idx_files(tmp_path: Path) -> None:
    train_x, test_x = make_images(N_TRAIN, 1, 28, seed=13), make_images(N_TEST, 1, 28, seed=14)
    train_y, test_y = _labels(N_TRAIN, 10, seed=15), _labels(N_TEST, 10, seed=16)
    write_mnist_family(tmp_path, "KMNIST", train_x, train_y, test_x, test_y)

    splits = data.KMNIST(root=str(tmp_path), download=False).load()
    _assert_split(splits.train_x, splits.train_y, train_x, train_y)
    _assert_split(splits.test_x, splits.test_y, test_x, test_y)


@pytest.mark.parametrize(("folder", "cls"), [("MNIST", data.MNIST), ("FashionMNIST", data.FashionMNIST),
                                             ("KMNIST", data.KMNIST)])
def test_mnist_family_reads_the_official_gz_files_without_download(tmp_path: Path, folder: str, cls: type) -> None:
    """Only the published `.gz` files (a copy of the downloads): used offline, no data.download=true."""
    train_x, test_x = make_images(N_TRAIN, 1, 28, seed=23), make_images(N_TEST, 1, 28, seed=24)
    train_y, test_y = _labels(N_TRAIN, 10, seed=25), _labels(N_TEST, 10, seed=26)
    write_mnist_family(tmp_path, folder, train_x, train_y, test_x, test_y, gz=True)
    assert sorted(p.suffix for p in (tmp_path / folder / "raw").iterdir()) == [".gz"] * 4

    splits = cls(root=str(tmp_path), download=False).load()
    _assert_split(splits.train_x, splits.train_y, train_x, train_y)
    _assert_split(splits.test_x, splits.test_y, test_x, test_y)


def test_a_corrupt_gz_file_is_one_line(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(ConfigError, match=r"^data.root: cannot unpack train-images-idx3-ubyte.gz into ") as info:
        data.MNIST(root=str(tmp_path)).load()
    assert "\n" not in str(info.value) and not (raw / "train-images-idx3-ubyte").exists()


# ---------------------------------------------------------------- real files: MNIST, Fashion-MNIST

# Per-class counts of the real splits (train, test).
_CLASS_COUNTS = {
    "MNIST": (
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
    ),
    "FashionMNIST": ([6000] * 10, [1000] * 10),
}
_GZ_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@pytest.mark.parametrize(("folder", "cls"), [("MNIST", data.MNIST), ("FashionMNIST", data.FashionMNIST)])
def test_mnist_family_from_real_files(tmp_path: Path, folder: str, cls: type) -> None:
    shared = SHARED_DATA / folder / "raw"
    if not all((shared / name).is_file() for name in _GZ_FILES):
        pytest.skip(f"no {folder} .gz files in {shared}")
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    for name in _GZ_FILES:
        os.symlink(shared / name, raw / name)

    splits = cls(root=str(tmp_path), download=True).load()  # found by checksum, unpacked offline

    for x, y, n, counts, prefix in ((splits.train_x, splits.train_y, 60000, _CLASS_COUNTS[folder][0], "train"),
                                    (splits.test_x, splits.test_y, 10000, _CLASS_COUNTS[folder][1], "t10k")):
        assert x.dtype == torch.uint8 and tuple(x.shape) == (n, 1, 28, 28)
        assert y.dtype == torch.int64 and tuple(y.shape) == (n,)
        assert 0 <= y.min().item() and y.max().item() <= 9
        assert torch.bincount(y, minlength=10).tolist() == counts
        # Same arrays as an independent reading of the idx files.
        assert torch.equal(x[:, 0], torch.from_numpy(read_idx_gz(shared / f"{prefix}-images-idx3-ubyte.gz").copy()))
        assert torch.equal(y, torch.from_numpy(read_idx_gz(shared / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)))
    # The class's normalisation constants are the train split's statistics.
    pixels = splits.train_x.float() / 255
    assert pixels.mean().item() == pytest.approx(cls.mean[0], abs=2e-3)
    assert pixels.std().item() == pytest.approx(cls.std[0], abs=2e-3)


# ---------------------------------------------------------------- missing files


@pytest.mark.parametrize("cls", [data.CIFAR10, data.CIFAR100, data.SVHN, data.MNIST, data.FashionMNIST, data.KMNIST])
def test_missing_files_without_download_is_a_config_error(tmp_path: Path, cls: type) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError) as info:
        cls(root=str(empty)).load()
    message = str(info.value)
    assert message.startswith("data.root:")
    assert "\n" not in message
    assert info.value.key == "data.root"
    assert str(empty) in message
    assert list(empty.iterdir()) == []  # nothing downloaded or created


# ---------------------------------------------------------------- train_size / test_size subsets


def _row_index(full: torch.Tensor, subset: torch.Tensor) -> list[int]:
    """Index in `full` of each image of `subset` (images of `full` are all distinct)."""
    flat_full, flat_sub = full.flatten(1), subset.flatten(1)
    index = []
    for row in flat_sub:
        matches = (flat_full == row).all(dim=1).nonzero().flatten().tolist()
        assert len(matches) == 1
        index.append(matches[0])
    return index


def _check_subset(full_x, full_y, sub_x, sub_y, size: int) -> None:
    assert len(sub_x) == len(sub_y) == size < len(full_x)
    index = _row_index(full_x, sub_x)
    assert len(set(index)) == size and index == sorted(index)  # distinct images, in the split's order
    assert torch.equal(sub_y, full_y[index])


def _load_with_seed(dataset: data.ImageDataset, seed: int) -> Splits:
    torch.manual_seed(seed)
    return dataset.load()


def test_subsets_of_fake_data_are_fixed_and_seed_independent() -> None:
    kw = dict(num_train=200, num_test=100, image_size=8)
    full = data.FakeData(**kw).load()
    subsets = [_load_with_seed(data.FakeData(**kw, train_size=50, test_size=30), seed) for seed in (0, 1, 12345)]
    for other in subsets[1:]:
        for name in ("train_x", "train_y", "test_x", "test_y"):
            assert torch.equal(getattr(other, name), getattr(subsets[0], name)), name
    sub = subsets[0]
    _check_subset(full.train_x, full.train_y, sub.train_x, sub.train_y, 50)
    _check_subset(full.test_x, full.test_y, sub.test_x, sub.test_y, 30)
    # Only the train split is cut when only train_size is set, and the full size is allowed.
    only_train = data.FakeData(**kw, train_size=200).load()
    assert torch.equal(only_train.train_x, full.train_x) and torch.equal(only_train.test_x, full.test_x)


def test_subsets_of_cifar10_files(cifar10_root) -> None:
    root, (train_x, train_y, test_x, test_y) = cifar10_root
    full = data.CIFAR10(root=str(root)).load()
    a = _load_with_seed(data.CIFAR10(root=str(root), train_size=7, test_size=4), 3)
    b = _load_with_seed(data.CIFAR10(root=str(root), train_size=7, test_size=4), 4)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    _check_subset(full.train_x, full.train_y, a.train_x, a.train_y, 7)
    _check_subset(full.test_x, full.test_y, a.test_x, a.test_y, 4)

    with pytest.raises(ConfigError, match=r"^data\.train_size: .*\b20\b") as info:
        data.CIFAR10(root=str(root), train_size=N_TRAIN + 1).load()
    assert info.value.key == "data.train_size"
    with pytest.raises(ConfigError, match=r"^data\.test_size: .*\b10\b"):
        data.CIFAR10(root=str(root), test_size=N_TEST + 1).load()


def test_subset_larger_than_split_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^data\.train_size: ") as info:
        data.FakeData(num_train=100, num_test=50, image_size=8, train_size=101).load()
    assert info.value.key == "data.train_size" and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"^data\.test_size: "):
        data.FakeData(num_train=100, num_test=50, image_size=8, test_size=51).load()


@pytest.mark.parametrize("bad", ["0", "-5"])
def test_non_positive_subset_from_config_is_a_config_error(bad: str) -> None:
    cfg = compose_config(["data=fake", f"data.train_size={bad}"])
    with pytest.raises(ConfigError, match=r"^data\.train_size: "):
        build(cfg.data)


# ---------------------------------------------------------------- FakeData


@pytest.mark.parametrize(("num_classes", "channels", "size"), [(10, 1, 28), (10, 3, 32), (4, 3, 16)])
def test_fake_data_shapes_determinism_and_classes(num_classes: int, channels: int, size: int) -> None:
    kw = dict(num_classes=num_classes, channels=channels, image_size=size, num_train=300, num_test=100)
    a = _load_with_seed(data.FakeData(**kw), 0)
    b = _load_with_seed(data.FakeData(**kw), 99)
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.train_x.dtype == torch.uint8 and tuple(a.train_x.shape) == (300, channels, size, size)
    assert a.test_x.dtype == torch.uint8 and tuple(a.test_x.shape) == (100, channels, size, size)
    assert a.train_y.dtype == torch.int64 and a.test_y.dtype == torch.int64
    assert sorted(set(a.train_y.tolist())) == list(range(num_classes))
    assert sorted(set(a.test_y.tolist())) == list(range(num_classes))
    assert not torch.equal(a.train_x[:100], a.test_x)  # the splits are different draws
    dataset = data.FakeData(**kw)
    assert (dataset.num_classes, dataset.channels, dataset.image_size) == (num_classes, channels, size)
    assert len(dataset.mean) == len(dataset.std) == channels


@pytest.mark.parametrize(("channels", "size"), [(3, 32), (1, 28)])
def test_fake_data_is_learnable_by_nearest_class_mean(channels: int, size: int) -> None:
    splits = data.FakeData(num_classes=10, channels=channels, image_size=size, num_train=2000, num_test=500).load()
    train_x, test_x = splits.train_x.flatten(1).float(), splits.test_x.flatten(1).float()
    means = torch.stack([train_x[splits.train_y == k].mean(dim=0) for k in range(10)])
    predicted = torch.cdist(test_x, means).argmin(dim=1)
    error = (predicted != splits.test_y).float().mean().item()
    assert error < 0.5, f"nearest-class-mean test error {error:.3f} (chance 0.9)"


# ---------------------------------------------------------------- DeviceData


def test_device_data_normalize_on_cpu() -> None:
    splits = data.FakeData(num_classes=3, channels=3, image_size=8, num_train=40, num_test=10).load()
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    device_data = data.DeviceData(splits, mean, std, torch.device("cpu"))
    assert device_data.num_train == 40

    batch = device_data.train_x[:16]
    out = device_data.normalize(batch)
    expected = (batch.double() / 255 - torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)) \
        / torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1)
    assert out.dtype == torch.float32 and out.shape == batch.shape and out.is_contiguous()
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=1e-5)
    # Per channel: channel 1 of one known pixel, by hand.
    value = batch[2, 1, 3, 4].item()
    assert out[2, 1, 3, 4].item() == pytest.approx((value / 255 - mean[1]) / std[1], abs=1e-5)

    # One channel (MNIST-like), and the uint8 split itself is kept unchanged.
    gray = data.FakeData(num_classes=2, channels=1, image_size=6, num_train=8, num_test=4).load()
    gray_data = data.DeviceData(gray, (0.1307,), (0.3081,), torch.device("cpu"))
    assert gray_data.train_x.dtype == torch.uint8 and torch.equal(gray_data.train_x, gray.train_x)
    torch.testing.assert_close(gray_data.normalize(gray.test_x).double(),
                               (gray.test_x.double() / 255 - 0.1307) / 0.3081, rtol=0, atol=1e-5)
    batches = gray_data.test_batches(3)
    assert [len(x) for x, _ in batches] == [3, 1]
    assert torch.equal(torch.cat([x for x, _ in batches]), gray.test_x)
    assert torch.equal(torch.cat([y for _, y in batches]), gray.test_y)


# ---------------------------------------------------------------- composed configs

_EXPECTED = {
    "cifar10": (data.CIFAR10, 10, 3, 32),
    "cifar100": (data.CIFAR100, 100, 3, 32),
    "svhn": (data.SVHN, 10, 3, 32),
    "mnist": (data.MNIST, 10, 1, 28),
    "fashion_mnist": (data.FashionMNIST, 10, 1, 28),
    "kmnist": (data.KMNIST, 10, 1, 28),
    "fake": (data.FakeData, 10, 3, 32),
}


@pytest.mark.parametrize("name", sorted(_EXPECTED))
def test_composed_config_builds_the_dataset(name: str) -> None:
    cls, num_classes, channels, size = _EXPECTED[name]
    cfg = compose_config([f"data={name}"])
    dataset = build(cfg.data)
    assert type(dataset) is cls
    assert (dataset.num_classes, dataset.channels, dataset.image_size) == (num_classes, channels, size)
    assert len(dataset.mean) == len(dataset.std) == channels
    assert all(0 < m < 1 for m in dataset.mean) and all(0 < s < 1 for s in dataset.std)
    assert dataset.root == str(cfg.data.root)
    assert dataset.download is False
    assert dataset.train_size is None and dataset.test_size is None


def test_composed_config_passes_sizes_and_root(tmp_path: Path) -> None:
    cfg = compose_config(["data=fake", f"data.root={tmp_path}", "data.train_size=64", "data.test_size=32",
                          "data.num_classes=5", "data.channels=1", "data.image_size=12"])
    dataset = build(cfg.data)
    assert dataset.root == str(tmp_path)
    splits = dataset.load()
    assert tuple(splits.train_x.shape) == (64, 1, 12, 12) and tuple(splits.test_x.shape) == (32, 1, 12, 12)
    assert splits.train_y.max().item() <= 4


def test_a_truncated_gz_file_does_not_advise_a_writable_copy(tmp_path: Path) -> None:
    """A download cut short: the folder is writable, the file is the problem (issue 22)."""
    import gzip

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    whole = gzip.compress(bytes(range(256)) * 64)
    (raw / "train-images-idx3-ubyte.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ConfigError, match=r"^data.root: cannot unpack train-images-idx3-ubyte.gz into ") as info:
        data.MNIST(root=str(tmp_path)).load()
    assert "writable" not in str(info.value) and "truncated or corrupt" in str(info.value)
