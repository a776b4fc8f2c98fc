"""Figures: image grids, training curves, error-bar curves, histograms and networks over pixels.

Every function builds a :class:`matplotlib.figure.Figure` directly (no ``pyplot`` state, so
nothing is left open and no backend has to be chosen), saves it as a PNG when ``path`` is
given, and returns it. In Jupyter a figure returned by a cell is shown inline once the inline
backend is active (``%matplotlib inline``, or any import of ``matplotlib.pyplot``); a script
passes ``path`` and writes files. matplotlib is imported lazily, so ``import pgm_lab`` stays
fast.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from itertools import cycle
from typing import TYPE_CHECKING

import torch

from .errors import DataError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .dag import DAG

__all__ = ["image_grid", "plot_curves", "plot_errorbars", "plot_histogram", "plot_pixel_network"]


def _figure(figsize: tuple[float, float] = (6, 4)) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=100, layout="constrained")


def _finish(fig: Figure, path: str | os.PathLike | None) -> Figure:
    if path is not None:
        from pathlib import Path

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    return fig


def image_grid(
    images: torch.Tensor,
    path: str | os.PathLike | None = None,
    *,
    image_shape: tuple[int, int] | None = None,
    nrow: int = 10,
    title: str | None = None,
    row_labels: Sequence[str] | None = None,
    scale_each: bool = False,
) -> Figure:
    """Show flattened images ``[N, H*W]`` (values in ``[0, 1]``, 0 = black) as one grid.

    Images are drawn in grey levels, framed in light blue. ``scale_each`` maps each image's
    own range to ``[0, 1]`` (for weights, e.g. RBM filters) instead of clipping to it.

    The grid is built by :func:`torchvision.utils.make_grid` with ``nrow`` images per row;
    ``image_shape`` defaults to the square ``(sqrt(D), sqrt(D))``. ``row_labels`` name the
    rows and repeat cyclically, e.g. ``("input", "reconstruction")`` for alternating rows.
    Saved to ``path`` (PNG) when given.

    Raises:
        DataError: ``images`` is not 2-D or ``image_shape`` does not match ``D``.
    """
    import matplotlib
    from torchvision.utils import make_grid

    from .data import image_shape as _square

    if images.dim() != 2:
        raise DataError(f"images must have shape [N, H*W], got {tuple(images.shape)}")
    h, w = image_shape if image_shape is not None else _square(int(images.shape[1]))
    if h * w != images.shape[1]:
        raise DataError(f"image_shape {(h, w)} does not match D={images.shape[1]}")
    imgs = images.detach().float().cpu()
    if scale_each:
        lo, hi = imgs.min(1, keepdim=True).values, imgs.max(1, keepdim=True).values
        imgs = (imgs - lo) / (hi - lo).clamp_min(1e-12)
    imgs = imgs.clamp(0, 1).reshape(-1, 1, h, w)
    pad = max(1, min(h, w) // 8)
    # NaN padding is drawn in a colour of its own, so frames never blend into the images.
    grid = make_grid(imgs, nrow=nrow, padding=pad, pad_value=float("nan"))[0]
    rows = -(-imgs.shape[0] // nrow)
    cols = min(nrow, imgs.shape[0])
    width = min(10.0, max(3.0, 0.6 * cols))
    fig = _figure((width + (1.6 if row_labels else 0.0), width * grid.shape[0] / grid.shape[1]
                   + (0.5 if title else 0.1)))
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["gray"].with_extremes(bad="#9ab8d6")
    ax.imshow(grid.numpy(), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    if row_labels:
        ax.set_yticks([pad + r * (h + pad) + (h - 1) / 2 for r in range(rows)],
                      [row_labels[r % len(row_labels)] for r in range(rows)])
        ax.tick_params(axis="y", length=0)
    else:
        ax.set_yticks([])
    if title:
        ax.set_title(title)
    return _finish(fig, path)


def plot_curves(
    curves: Mapping[str, Sequence[float]],
    path: str | os.PathLike | None = None,
    *,
    xlabel: str = "epoch",
    ylabel: str = "loss (nats per example)",
    title: str | None = None,
    legend_title: str | None = None,
    styles: Mapping[str, Mapping[str, object]] | None = None,
    logx: bool = False,
) -> Figure:
    """One line per named curve against ``1, 2, ...`` (e.g. epochs); legend if more than one.

    ``styles`` maps a curve's name to extra :meth:`matplotlib.axes.Axes.plot` keywords (e.g.
    ``{"resumed": {"linestyle": "--"}}`` to show one curve on top of another). Saved to
    ``path`` (PNG) when given.
    """
    from matplotlib.ticker import MaxNLocator

    fig = _figure()
    ax = fig.add_subplot()
    for name, ys in curves.items():
        style = {"marker": "." if len(ys) < 30 else None, **(styles or {}).get(name, {})}
        ax.plot(range(1, len(ys) + 1), list(ys), label=name, **style)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log")
    if title:
        ax.set_title(title)
    if len(curves) > 1 or legend_title:
        ax.legend(title=legend_title)
    ax.grid(alpha=0.3)
    return _finish(fig, path)


def plot_errorbars(
    series: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]],
    path: str | os.PathLike | None = None,
    *,
    xlabel: str,
    ylabel: str,
    errors: str,
    title: str | None = None,
    legend_title: str | None = None,
    styles: Mapping[str, Mapping[str, object]] | None = None,
    lines: Mapping[str, float] | None = None,
    bands: Mapping[str, tuple[str, float, float]] | None = None,
    logx: bool = False,
) -> Figure:
    """Named ``(x, y, yerr)`` series as lines with error bars, and labelled horizontal ``lines``
    (e.g. the exact value that the series estimate).

    ``bands`` maps a series' name to ``(label, low, high)``: a horizontal band in that series'
    colour (e.g. a reference estimate ± its standard error that the series' bounds approach).

    ``errors`` says what a bar is (e.g. ``"± 1 standard error over test images"``); it is
    printed in the figure, since a bar without a stated meaning cannot be read. ``x`` may be
    numbers or category names; ``styles`` maps a series' name to extra
    :meth:`matplotlib.axes.Axes.errorbar` keywords (e.g. ``{"linestyle": "none"}`` for
    categories). Saved to ``path`` (PNG) when given.
    """
    fig = _figure()
    ax = fig.add_subplot()
    for name, (xs, ys, err) in series.items():
        style = {"marker": "o", "capsize": 3, **(styles or {}).get(name, {})}
        bars = ax.errorbar(list(xs), list(ys), yerr=list(err), label=name, **style)
        if name in (bands or {}):
            label, low, high = bands[name]
            ax.axhspan(low, high, color=bars.lines[0].get_color(), alpha=0.2, label=label)
    for (name, y), linestyle in zip((lines or {}).items(), cycle(("--", ":", "-."))):
        ax.axhline(y, color="k", linestyle=linestyle, label=name)
    ax.margins(x=0.1)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\nerror bars: {errors}" if title else f"error bars: {errors}")
    if len(series) + len(lines or {}) + len(bands or {}) > 1 or legend_title:
        ax.legend(title=legend_title)
    ax.grid(alpha=0.3)
    return _finish(fig, path)


def plot_histogram(
    samples: Mapping[str, Sequence[float]],
    path: str | os.PathLike | None = None,
    *,
    xlabel: str,
    title: str | None = None,
    lines: Mapping[str, float] | None = None,
    bins: int = 30,
) -> Figure:
    """Overlaid histograms of named samples on shared bins, with labelled vertical ``lines``
    (e.g. a mean and the value it should estimate). Saved to ``path`` (PNG) when given."""
    import numpy as np

    fig = _figure()
    ax = fig.add_subplot()
    edges = np.histogram_bin_edges(np.concatenate([np.asarray(xs, dtype=float)
                                                   for xs in samples.values()]), bins)
    for name, xs in samples.items():
        ax.hist(np.asarray(xs, dtype=float), bins=edges, alpha=0.6, label=name)
    for (name, x), style in zip((lines or {}).items(), cycle(("-", "--", ":", "-."))):
        ax.axvline(x, color="k", linestyle=style, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    if title:
        ax.set_title(title)
    if len(samples) + len(lines or {}) > 1:
        ax.legend()
    ax.grid(alpha=0.3)
    return _finish(fig, path)


def plot_pixel_network(
    dag: DAG,
    path: str | os.PathLike | None = None,
    *,
    shape: tuple[int, int] = (8, 8),
    pixels: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """A network over image pixels drawn on the pixel grid: one dot per pixel at its
    ``(row, column)``, one arrow per edge ``parent -> child`` of :attr:`DAG.edges`.

    ``pixels`` names the pixel nodes in row-major order (``H * W`` of them, ``shape = (H, W)``);
    by default the DAG's nodes in the order of its spec. Edges touching a node that is not a
    pixel (e.g. a hidden class) are left out and counted in the title. Row 0 is drawn at the
    top, as in :func:`image_grid`. Saved to ``path`` (PNG) when given.

    Raises:
        DataError: the number of ``pixels`` is not ``H * W``, or one is not a node of ``dag``.
    """
    h, w = shape
    names = list(dag.spec) if pixels is None else list(pixels)
    if len(names) != h * w:
        raise DataError(f"expected {h * w} pixel nodes for shape {shape}, got {len(names)}; "
                        "try pixels=[...] with the pixel node names in row-major order")
    unknown = [n for n in names if n not in dag.spec]
    if unknown:
        raise DataError(f"pixels must be nodes of the DAG, got unknown {unknown[:3]}")
    where = {n: divmod(i, w) for i, n in enumerate(names)}
    edges = [(p, c) for p, c in dag.edges if p in where and c in where]
    fig = _figure((5, 5 * h / w + 0.4))
    ax = fig.add_subplot()
    for parent, child in edges:
        (r0, c0), (r1, c1) = where[parent], where[child]
        ax.annotate("", xy=(c1, r1), xytext=(c0, r0),
                    arrowprops={"arrowstyle": "-|>", "color": "tab:blue", "lw": 1.2,
                                "shrinkA": 4, "shrinkB": 4, "mutation_scale": 9})
    ax.scatter([c for _, c in where.values()], [r for r, _ in where.values()], s=14,
               color="k", zorder=3)
    ax.set_xlim(-0.6, w - 0.4)
    ax.set_ylim(h - 0.4, -0.6)
    ax.set_aspect("equal")
    ax.set_xticks(range(w))
    ax.set_yticks(range(h))
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    hidden = len(dag.edges) - len(edges)
    ax.set_title((title or "network over the pixel grid") + f"\n{len(edges)} edges"
                 + (f" ({hidden} to or from non-pixel nodes not drawn)" if hidden else ""))
    return _finish(fig, path)
