"""Figures saved as PNG: image grids and training curves.

matplotlib is imported lazily with the non-interactive ``Agg`` backend, so plotting works on
machines without a display and does not slow down ``import pgm_lab``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from .errors import DataError

__all__ = ["save_image_grid", "plot_curves"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_image_grid(
    images: torch.Tensor,
    path: str | os.PathLike,
    *,
    image_shape: tuple[int, int] | None = None,
    nrow: int = 10,
    scale: int = 4,
) -> Path:
    """Save flattened images ``[N, H*W]`` (values in ``[0, 1]``) as one PNG grid.

    Uses :func:`torchvision.utils.make_grid` and :func:`torchvision.utils.save_image`; each pixel
    is upscaled ``scale`` times (nearest) so 8x8 digits stay legible. ``image_shape`` defaults
    to the square ``(sqrt(D), sqrt(D))``. Returns the path written.
    """
    from torchvision.utils import make_grid, save_image

    from .data import image_shape as _square

    if images.dim() != 2:
        raise DataError(f"images must have shape [N, H*W], got {tuple(images.shape)}")
    h, w = image_shape if image_shape is not None else _square(int(images.shape[1]))
    if h * w != images.shape[1]:
        raise DataError(f"image_shape {(h, w)} does not match D={images.shape[1]}")
    imgs = images.detach().float().cpu().clamp(0, 1).reshape(-1, 1, h, w)
    if scale > 1:
        imgs = torch.nn.functional.interpolate(imgs, scale_factor=scale, mode="nearest")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(make_grid(imgs, nrow=nrow, padding=2, pad_value=0.5), path)
    return path


def plot_curves(
    curves: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    *,
    xlabel: str = "epoch",
    ylabel: str = "loss (nats per example)",
    title: str | None = None,
    logx: bool = False,
) -> Path:
    """Plot one line per named curve and save it as a PNG. Returns the path written."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for name, ys in curves.items():
        ax.plot(range(1, len(ys) + 1), list(ys), label=name, marker="." if len(ys) < 30 else None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log")
    if title:
        ax.set_title(title)
    if len(curves) > 1:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
