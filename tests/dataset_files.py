"""Writers of small dataset files in the real datasets' own on-disk formats.

Each writer takes ground-truth images as uint8 NCHW numpy arrays and int labels, writes
the files exactly where and how torchvision reads them, and returns the md5 of every
file it wrote (CIFAR and SVHN loaders check them; the tests patch the expected sums).
"""

from __future__ import annotations

import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def make_images(n: int, channels: int, size: int, seed: int) -> np.ndarray:
    """Random uint8 NCHW images, with distinct marker values at a few known positions."""
    images = np.random.default_rng(seed).integers(0, 256, size=(n, channels, size, size), dtype=np.uint8)
    for (i, c, h, w), value in marker_pixels(channels, size).items():
        images[i, c, h, w] = value
    return images


def marker_pixels(channels: int, size: int) -> dict[tuple[int, int, int, int], int]:
    """(image, channel, row, column) -> value. The positions differ only by axis, so a
    loader that swaps H and W, or reads HWC bytes as CHW, puts other values there."""
    last = size - 1
    markers = {(0, 0, 0, 1): 11, (0, 0, 1, 0): 22, (0, 0, last, 0): 33, (1, 0, 2, 5): 44, (1, 0, 5, 2): 55}
    if channels > 1:
        markers |= {(0, 1, 0, 0): 66, (0, channels - 1, 0, 1): 77, (2, 1, 3, 4): 88}
    return markers


# ---------------------------------------------------------------- CIFAR (pickled batches)


class _Py2Str(str):
    """A key written as a Python 2 byte string, as in the real CIFAR pickles: it loads as
    b'data' with encoding='bytes' and as 'data' with encoding='latin1' (torchvision)."""


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler, whose dispatch table can be extended
    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: _Py2Str) -> None:
        data = obj.encode("latin1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)

    dispatch[_Py2Str] = _save_py2_str


def _py2(value: object) -> object:
    if isinstance(value, str):
        return _Py2Str(value)
    if isinstance(value, dict):
        return {_py2(k): _py2(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_py2(v) for v in value]
    return value


def _write_pickle(path: Path, obj: dict) -> None:
    with path.open("wb") as f:
        _Py2Pickler(f, protocol=2).dump(_py2(obj))


def _cifar_rows(images: np.ndarray) -> np.ndarray:
    assert images.dtype == np.uint8 and images.shape[1:] == (3, 32, 32)
    return np.ascontiguousarray(images.reshape(len(images), 3 * 32 * 32))  # row-major CHW per image


def write_cifar10(root: Path, train_x: np.ndarray, train_y: list[int], test_x: np.ndarray,
                  test_y: list[int]) -> dict[str, str]:
    """`<root>/cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta`."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    chunks = np.array_split(np.arange(len(train_x)), 5)
    for b, index in enumerate(chunks, start=1):
        _write_pickle(folder / f"data_batch_{b}", {
            "batch_label": f"training batch {b} of 5",
            "labels": [int(train_y[i]) for i in index],
            "data": _cifar_rows(train_x[index]),
            "filenames": [f"train_{i}.png" for i in index],
        })
    _write_pickle(folder / "test_batch", {
        "batch_label": "testing batch 1 of 1",
        "labels": [int(y) for y in test_y],
        "data": _cifar_rows(test_x),
        "filenames": [f"test_{i}.png" for i in range(len(test_x))],
    })
    _write_pickle(folder / "batches.meta", {
        "num_cases_per_batch": len(chunks[0]),
        "label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
        "num_vis": 3072,
    })
    return {p.name: md5(p) for p in folder.iterdir()}


def write_cifar100(root: Path, train_x: np.ndarray, train_y: list[int], test_x: np.ndarray,
                   test_y: list[int]) -> dict[str, str]:
    """`<root>/cifar-100-python/train, test, meta` (labels under `fine_labels`)."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        _write_pickle(folder / name, {
            "filenames": [f"{name}_{i}.png" for i in range(len(x))],
            "batch_label": f"{name}ing batch 1 of 1",
            "fine_labels": [int(v) for v in y],
            "coarse_labels": [int(v) // 5 for v in y],
            "data": _cifar_rows(x),
        })
    _write_pickle(folder / "meta", {
        "fine_label_names": [f"fine_{i}" for i in range(100)],
        "coarse_label_names": [f"coarse_{i}" for i in range(20)],
    })
    return {p.name: md5(p) for p in folder.iterdir()}


# ---------------------------------------------------------------- SVHN (MATLAB .mat)


def write_svhn(root: Path, split: str, images: np.ndarray, digits: list[int]) -> str:
    """`<root>/<split>_32x32.mat` with X (32, 32, 3, N) uint8 and y (N, 1), digit 0 stored as 10."""
    from scipy.io import savemat

    assert images.dtype == np.uint8 and images.shape[1:] == (3, 32, 32)
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{split}_32x32.mat"
    x = np.ascontiguousarray(images.transpose(2, 3, 1, 0))  # X[h, w, c, n] = image n, channel c, row h, column w
    y = np.array([10 if d == 0 else d for d in digits], dtype=np.uint8).reshape(-1, 1)
    savemat(path, {"X": x, "y": y})
    return md5(path)


# ---------------------------------------------------------------- MNIST family (idx files)


def _write_idx(path: Path, array: np.ndarray) -> None:
    assert array.dtype == np.uint8
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array).tobytes())


def write_mnist_family(root: Path, folder: str, train_x: np.ndarray, train_y: list[int],
                       test_x: np.ndarray, test_y: list[int], gz: bool = False) -> None:
    """`<root>/<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`, big-endian header
    (magic 0x00000803 / 0x00000801), unpacked or (`gz`) only as the `.gz` files the sets are
    published as. Images are given as (N, 1, 28, 28)."""
    import gzip

    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for prefix, x, y in (("train", train_x, train_y), ("t10k", test_x, test_y)):
        for name, array in ((f"{prefix}-images-idx3-ubyte", x[:, 0]), (f"{prefix}-labels-idx1-ubyte", np.asarray(y, dtype=np.uint8))):
            _write_idx(raw / name, array)
            if gz:
                path = raw / name
                (raw / f"{name}.gz").write_bytes(gzip.compress(path.read_bytes()))
                path.unlink()


def read_idx_gz(path: Path) -> np.ndarray:
    """An independent reader of a gzipped idx file (for comparing with the loader's output)."""
    import gzip

    data = gzip.decompress(path.read_bytes())
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    assert zero == 0 and dtype_code == 0x08, (zero, dtype_code)
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
