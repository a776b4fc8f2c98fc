"""Write tiny MNIST-format IDX files so tests exercise the real torchvision reading path."""

import struct
from pathlib import Path

import numpy as np

from pgm_lab.data import MNIST_FILES


def write_idx_images(path: Path, images: np.ndarray) -> None:
    n, h, w = images.shape
    path.write_bytes(struct.pack(">IIII", 0x00000803, n, h, w) + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    header = struct.pack(">II", 0x00000801, len(labels))
    path.write_bytes(header + labels.astype(np.uint8).tobytes())


def make_tiny_mnist(root: Path, n_train: int = 7, n_test: int = 3) -> dict[str, np.ndarray]:
    """Write MNIST-format IDX files with random 28x28 images under root/MNIST/raw."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        imgs = rng.integers(0, 256, size=(n, 28, 28))
        labels = rng.integers(0, 10, size=n)
        write_idx_images(raw / MNIST_FILES[split][0], imgs)
        write_idx_labels(raw / MNIST_FILES[split][1], labels)
        out[split] = imgs
        out[split + "_labels"] = labels
    return out
