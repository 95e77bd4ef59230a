"""Reader for Fashion-MNIST idx files: 70,000 28x28 grayscale garments in 10 categories, no users.

Files (``.gz`` or uncompressed) in the data folder (default
``/usr/share/datasets/fashion-mnist/``, from ``apt-get install dataset-fashion-mnist``)::

    train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]
    t10k-images-idx3-ubyte[.gz]   t10k-labels-idx1-ubyte[.gz]

The training images come first, then the test images; ``max_items`` keeps the
first N. Images are grayscale and are repeated to RGB when loaded. There are no
users or interactions: use the simulated world (``world.simulate``) to get some.
Runs on the host.
"""

from __future__ import annotations

import gzip
import hashlib
import os

import numpy as np

from tfmodels.data.dataset import Dataset
from tfmodels.data.images import ArrayImageSource

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
CATEGORY_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_idx(path: str) -> np.ndarray:
    """Reads one idx file (optionally gzipped) as a uint8 array of its declared shape.

    idx layout: 2 zero bytes, a type code (0x08 = uint8), the number of
    dimensions, then each dimension as a big-endian int32, then the data.
    """
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read idx file ({e})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an idx file (bad magic number)")
    if data[2] != 0x08:
        raise ValueError(f"{path}: idx type code {data[2]:#x} is not uint8 (0x08)")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(x) for x in np.frombuffer(data[4:header], dtype=">i4"))
    expected = int(np.prod(shape)) if shape else 0
    if len(data) - header != expected:
        raise ValueError(f"{path}: idx header declares shape {shape} ({expected} bytes) but holds "
                         f"{len(data) - header} bytes (truncated file?)")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _find(data_dir: str, stem: str) -> str:
    for name in (stem + ".gz", stem):
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"fashion-mnist: no {stem}[.gz] in {data_dir!r} "
                            f"(install with `apt-get install dataset-fashion-mnist` or pass --data-dir)")


def read_fashion_mnist(data_dir: str = "", max_items: int = 0) -> Dataset:
    """Reads Fashion-MNIST (train then t10k) into an image-only Dataset (no users).

    Args:
      data_dir: folder with the idx files; empty = ``DEFAULT_DIR``.
      max_items: keep only the first N images (0 = all 70,000).
    """
    data_dir = data_dir or DEFAULT_DIR
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"fashion-mnist: folder {data_dir!r} does not exist "
                                f"(install with `apt-get install dataset-fashion-mnist` or pass --data-dir)")
    images, labels = [], []
    for part in ("train", "t10k"):
        x = read_idx(_find(data_dir, f"{part}-images-idx3-ubyte"))
        y = read_idx(_find(data_dir, f"{part}-labels-idx1-ubyte"))
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(f"fashion-mnist {part}: images {x.shape} and labels {y.shape} do not match")
        images.append(x)
        labels.append(y)
    x = np.concatenate(images)
    y = np.concatenate(labels).astype(np.int32)
    if max_items and max_items > 0:
        x, y = x[:max_items], y[:max_items]
    if len(y) and y.max() >= len(CATEGORY_NAMES):
        raise ValueError(f"fashion-mnist: label {int(y.max())} outside 0..9")
    fp = hashlib.sha1(x.tobytes()).hexdigest()[:16]
    item_ids = np.array([f"fmnist-{i}" for i in range(len(x))])
    return Dataset(
        name="fashion-mnist",
        item_ids=item_ids,
        images=ArrayImageSource(x, fingerprint=fp, labels=item_ids),
        categories=y,
        category_names=list(CATEGORY_NAMES),
        user_ids=np.zeros(0, dtype=str),
        inter_user=np.zeros(0, np.int32),
        inter_item=np.zeros(0, np.int32),
        inter_time=None,
        extra={"folder": data_dir},
    )
