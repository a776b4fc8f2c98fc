"""Datasets and binarization.

Every loader returns a ``float32`` tensor of shape ``[N, D]`` with values in ``[0, 1]``
(images flattened row-major), so models and trainers never see dataset-specific formats.

* ``"digits"`` -- the 8x8 UCI optical digits shipped with scikit-learn (1797 images, D=64),
  pixel intensities 0..16 scaled to ``[0, 1]``. Split: a permutation drawn with
  ``numpy.random.default_rng(0)``; the first 1437 images are ``"train"``, the last 360
  ``"test"`` (80/20). The split is fixed forever so results stay comparable.
* ``"mnist"`` -- LeCun's MNIST (D=784) read by :class:`torchvision.datasets.MNIST` from a local
  folder; never downloaded at run time.
* ``"bars"`` -- the synthetic "bars and stripes" binary images (MacKay 2003), all ``2 *
  2**s - 2`` distinct patterns of an ``s x s`` grid; small enough for exact likelihoods.

Binarization follows Burda et al. (2015): *static* binarization samples each pixel once with a
fixed seed (for evaluation); *dynamic* binarization resamples every minibatch (for training,
pass :func:`dynamic_binarize` as ``transform=`` to :func:`pgm_lab.train.fit`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .errors import DataError

__all__ = [
    "DATASETS",
    "DIGITS_N_TRAIN",
    "DIGITS_N_TEST",
    "MNIST_FILES",
    "load_dataset",
    "bars_and_stripes",
    "static_binarize",
    "dynamic_binarize",
    "check_data",
    "image_shape",
]

#: Names :func:`load_dataset` accepts.
DATASETS = ("digits", "mnist", "bars")
SPLITS = ("train", "test")
DIGITS_N_TRAIN = 1437
DIGITS_N_TEST = 360
#: Uncompressed IDX files expected in ``<data_dir>/MNIST/raw/``, per split.
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def load_dataset(
    name: str,
    split: str = "train",
    *,
    data_dir: str | os.PathLike | None = None,
    binarize: str | None = None,
    seed: int = 0,
    return_labels: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Load a dataset as a ``float32`` tensor ``[N, D]`` in ``[0, 1]``.

    Args:
        name: one of :data:`DATASETS` (``"digits"``, ``"mnist"``, ``"bars"``).
        split: ``"train"`` or ``"test"`` (``"bars"`` has one set; both splits return it).
        data_dir: for ``"mnist"``, the torchvision root folder, which must contain
            ``MNIST/raw/`` with the four uncompressed IDX files listed in :data:`MNIST_FILES`.
        binarize: ``None`` (intensities), or ``"static"`` for one Bernoulli draw per pixel
            with ``seed`` (see :func:`static_binarize`).
        seed: seed of the static binarization.
        return_labels: also return the ``int64`` class labels ``[N]``.

    Returns:
        ``x`` of shape ``[N, D]``, or ``(x, labels)`` when ``return_labels``.

    Raises:
        DataError: unknown ``name``, ``split`` or ``binarize``; missing MNIST files.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; expected one of {DATASETS}")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {SPLITS}")
    if binarize not in (None, "static"):
        raise DataError(
            f"binarize must be None or 'static', got {binarize!r}; for dynamic binarization "
            "pass transform=pgm_lab.data.dynamic_binarize to pgm_lab.train.fit"
        )
    if name == "digits":
        x, y = _load_digits(split)
    elif name == "mnist":
        x, y = _load_mnist(split, data_dir)
    else:
        x = bars_and_stripes(4)
        y = torch.zeros(x.shape[0], dtype=torch.int64)
    if binarize == "static":
        x = static_binarize(x, seed=seed)
    return (x, y) if return_labels else x


def image_shape(name_or_dim: str | int) -> tuple[int, int]:
    """Height and width of the images of a dataset name or of a flattened dimension ``D``."""
    dims = {"digits": 64, "mnist": 784, "bars": 16}
    d = dims.get(name_or_dim, name_or_dim) if isinstance(name_or_dim, str) else name_or_dim
    if not isinstance(d, int):
        raise DataError(f"unknown dataset {name_or_dim!r}; expected one of {DATASETS}")
    side = int(round(d**0.5))
    if side * side != d:
        raise DataError(f"D={d} is not a square image size; pass the shape explicitly")
    return side, side


def _load_digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    perm = np.random.default_rng(0).permutation(len(bunch.target))
    idx = perm[:DIGITS_N_TRAIN] if split == "train" else perm[DIGITS_N_TRAIN:]
    x = torch.as_tensor(bunch.data[idx] / 16.0, dtype=torch.float32)
    y = torch.as_tensor(bunch.target[idx], dtype=torch.int64)
    return x, y


def _load_mnist(
    split: str, data_dir: str | os.PathLike | None
) -> tuple[torch.Tensor, torch.Tensor]:
    how = (
        "download them on a machine with internet access with "
        "torchvision.datasets.MNIST(root, download=True) and copy the folder here"
    )
    if data_dir is None:
        raise DataError(f"dataset 'mnist' needs data_dir=<torchvision root>; {how}")
    raw = Path(data_dir) / "MNIST" / "raw"
    missing = [f for f in MNIST_FILES[split] if not (raw / f).is_file()]
    if missing:
        raise DataError(
            f"MNIST {split} files not found: expected {', '.join(missing)} (uncompressed IDX) "
            f"in {raw}; {how}"
        )
    from torchvision.datasets import MNIST

    try:
        ds = MNIST(str(data_dir), train=(split == "train"), download=False)
    except (RuntimeError, ValueError, OSError, AssertionError) as exc:  # torchvision asserts
        raise DataError(f"cannot read the MNIST IDX files in {raw}: {exc}") from exc
    x = ds.data.reshape(len(ds.data), -1).to(torch.float32) / 255.0
    return x, ds.targets.to(torch.int64)


def bars_and_stripes(size: int = 4) -> torch.Tensor:
    """All distinct bars-and-stripes images of a ``size x size`` grid.

    Each image fills a subset of rows (stripes) or of columns (bars); the all-off and all-on
    images arise both ways and appear once. Returns ``float32 [2 * 2**size - 2, size**2]``.
    """
    if not isinstance(size, int) or size < 1:
        raise DataError(f"size must be a positive int, got {size!r}")
    codes = torch.arange(2**size)
    rows = ((codes[:, None] >> torch.arange(size)) & 1).to(torch.float32)  # [2^s, s]
    stripes = rows[:, :, None].expand(-1, size, size)
    bars = rows[:, None, :].expand(-1, size, size)
    imgs = torch.cat([stripes, bars[1:-1]]).reshape(-1, size * size)
    return imgs.contiguous()


def check_data(x: object, *, name: str = "data", dim: int | None = None, binary: bool = False,
               unit_interval: bool = True) -> torch.Tensor:
    """Validate and convert user data to a float tensor ``[N, D]``.

    Raises :class:`DataError` naming ``name`` when ``x`` is not 2-D, has ``D != dim``, holds NaN
    or infinity, lies outside ``[0, 1]`` (if ``unit_interval``) or is not 0/1 (if ``binary``).
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if not (x.dtype.is_floating_point or x.dtype in (torch.bool, torch.uint8, torch.int32,
                                                      torch.int64)):
        raise DataError(f"{name} has dtype {x.dtype}; expected a float, int or bool tensor")
    if not x.dtype.is_floating_point:
        x = x.to(torch.get_default_dtype())
    if x.dim() != 2:
        raise DataError(f"{name} must have shape [N, D], got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise DataError(f"{name} is empty (shape {tuple(x.shape)})")
    if dim is not None and x.shape[1] != dim:
        raise DataError(f"{name} has {x.shape[1]} features; expected {dim}")
    bad = ~torch.isfinite(x)
    if bad.any():
        row = int(bad.any(dim=1).nonzero()[0])
        raise DataError(f"{name} contains NaN or infinity (first at row {row})")
    if binary and not ((x == 0) | (x == 1)).all():
        raise DataError(f"{name} must be binary (0/1); binarize it first, e.g. with "
                        "pgm_lab.data.static_binarize")
    if unit_interval and ((x < 0) | (x > 1)).any():
        raise DataError(f"{name} must lie in [0, 1]; got values in [{float(x.min())}, "
                        f"{float(x.max())}]")
    return x


def static_binarize(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """One fixed Bernoulli draw per pixel: ``b ~ Bernoulli(x)`` with a generator seeded ``seed``.

    The same ``(x, seed)`` always gives the same images (used for test sets). Shape preserved.
    """
    x = check_data(x, name="x") if x.dim() == 2 else x
    gen = torch.Generator(device="cpu").manual_seed(seed)
    u = torch.rand(x.shape, generator=gen, dtype=x.dtype)
    return (u.to(x.device) < x).to(x.dtype)


def dynamic_binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A fresh Bernoulli draw per pixel each call (Burda et al. 2015, dynamic binarization).

    Signature matches the ``transform=`` hook of :func:`pgm_lab.train.fit`, which passes its
    seeded generator so that resumed runs draw the same images.
    """
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device="cpu")
    if x.device.type == "cuda":  # pinned, the copy is queued instead of waiting for the GPU
        u = u.pin_memory()
    return (u.to(x.device, non_blocking=True) < x).to(x.dtype)
