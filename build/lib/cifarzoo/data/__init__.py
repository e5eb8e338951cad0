"""Datasets: each option of the `data` group is one class here, loaded once as uint8 tensors."""

from cifarzoo.data.base import ImageDataset, Splits
from cifarzoo.data.fake import FakeData
from cifarzoo.data.loader import DeviceData
from cifarzoo.data.torchvision_sets import CIFAR10, CIFAR100, KMNIST, MNIST, SVHN, FashionMNIST

__all__ = [
    "CIFAR10",
    "CIFAR100",
    "KMNIST",
    "MNIST",
    "SVHN",
    "DeviceData",
    "FakeData",
    "FashionMNIST",
    "ImageDataset",
    "Splits",
]
