"""Figures are returned (for inline display) and written only when a path is given."""

import re

import pytest
import torch
from matplotlib.figure import Figure

from pgm_lab.errors import DataError
from pgm_lab.plots import image_grid, plot_curves, plot_errorbars, plot_histogram

PNG_MAGIC = b"\x89PNG"


def _labels(fig: Figure) -> dict:
    (ax,) = fig.axes
    legend = ax.get_legend()
    return {"title": ax.get_title(), "x": ax.get_xlabel(), "y": ax.get_ylabel(),
            "legend": None if legend is None else [t.get_text() for t in legend.get_texts()],
            "legend_title": None if legend is None else legend.get_title().get_text()}


def test_figures_are_returned_without_writing_anything(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    figs = [image_grid(torch.rand(20, 64)), plot_curves({"a": [3.0, 2.0]}),
            plot_errorbars({"a": ([1, 5], [-3.0, -2.0], [0.1, 0.1])}, xlabel="k", ylabel="b",
                           errors="± 1 standard error"),
            plot_histogram({"a": [0.0, 1.0, 1.0]}, xlabel="x")]
    assert all(isinstance(f, Figure) for f in figs)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("make", [
    lambda p: image_grid(torch.rand(20, 64), p),
    lambda p: plot_curves({"a": [3.0, 2.0]}, p),
    lambda p: plot_errorbars({"a": ([1], [0.0], [1.0])}, p, xlabel="k", ylabel="b", errors="sd"),
    lambda p: plot_histogram({"a": [0.0, 1.0]}, p, xlabel="x"),
], ids=["image_grid", "plot_curves", "plot_errorbars", "plot_histogram"])
def test_a_path_writes_a_png_and_creates_its_folder(tmp_path, make):
    path = tmp_path / "new" / "fig.png"
    assert isinstance(make(path), Figure)
    assert path.read_bytes()[:4] == PNG_MAGIC


def test_curves_label_axes_title_and_legend_with_several_series():
    fig = plot_curves({"elbo": [3.0, 2.0], "iwae-5": [2.5, 1.5]}, xlabel="epoch",
                      ylabel="nats", title="t", legend_title="objective",
                      styles={"iwae-5": {"linestyle": "--"}})
    assert _labels(fig) == {"title": "t", "x": "epoch", "y": "nats",
                            "legend": ["elbo", "iwae-5"], "legend_title": "objective"}
    assert [line.get_linestyle() for line in fig.axes[0].get_lines()] == ["-", "--"]
    assert _labels(plot_curves({"only": [1.0]}))["legend"] is None  # one series: no legend


def test_errorbars_state_what_a_bar_means():
    fig = plot_errorbars({"elbo": ([1, 5], [-3.0, -2.0], [0.1, 0.2]),
                          "iwae": ([1, 5], [-2.9, -1.9], [0.1, 0.2])},
                         xlabel="k", ylabel="bound", errors="± 1 standard error over test images",
                         title="bound vs k", logx=True)
    got = _labels(fig)
    assert got["title"] == "bound vs k\nerror bars: ± 1 standard error over test images"
    assert got["legend"] == ["elbo", "iwae"] and fig.axes[0].get_xscale() == "log"


def test_errorbars_draw_labelled_reference_lines():
    fig = plot_errorbars({"AIS": (["CD", "PCD"], [0.1, -0.2], [0.3, 0.3])}, xlabel="model",
                         ylabel="log Z error", errors="± 3 standard errors", lines={"exact": 0.0})
    assert _labels(fig)["legend"] == ["exact", "AIS"]
    (line,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "exact"]
    assert list(line.get_ydata()) == [0.0, 0.0]


def test_histogram_draws_labelled_reference_lines():
    fig = plot_histogram({"minibatch": [1.0, 2.0, 2.5]}, xlabel="loss",
                         lines={"mean": 1.8, "full data": 1.9}, title="h")
    got = _labels(fig)
    assert got["legend"] == ["minibatch", "mean", "full data"] and got["y"] == "count"
    assert [line.get_xdata()[0] for line in fig.axes[0].get_lines()] == [1.8, 1.9]


def test_image_grid_labels_rows_cyclically_and_keeps_pixels():
    images = torch.zeros(40, 6)  # 2x3 images, 10 per row -> 4 rows
    images[0] = 1.0
    fig = image_grid(images, image_shape=(2, 3), title="pairs", row_labels=("input", "rec."))
    (ax,) = fig.axes
    assert ax.get_title() == "pairs"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["input", "rec.", "input", "rec."]
    assert list(ax.get_yticks()) == [1.5, 4.5, 7.5, 10.5]  # centred on each row's pixels
    grid = ax.get_images()[0].get_array()
    assert grid.shape == (4 * 2 + 5, 10 * 3 + 11)  # one pixel of padding around every image
    assert grid.mask.sum() == grid.size - 40 * 6  # the padding is masked (drawn as frame)
    assert grid[1:3, 1:4].min() == 1.0 and grid[1:3, 5:8].max() == 0.0


@pytest.mark.parametrize(("images", "shape", "message"), [
    (torch.rand(2, 3, 3), None, "images must have shape [N, H*W]"),
    (torch.rand(2, 10), (3, 3), "does not match D=10"),
])
def test_image_grid_refuses_bad_shapes(images, shape, message):
    with pytest.raises(DataError, match=re.escape(message)):
        image_grid(images, image_shape=shape)


def test_histograms_share_their_bins():
    fig = plot_histogram({"narrow": [0.0, 0.1, 0.2], "wide": [-10.0, 0.0, 10.0]}, xlabel="x",
                         bins=10)
    narrow, wide = (c.patches for c in fig.axes[0].containers)
    assert [p.get_x() for p in narrow] == [p.get_x() for p in wide]
    assert sum(p.get_height() for p in narrow) == 3


def test_curve_epochs_get_integer_ticks():
    fig = plot_curves({"a": [3.0, 2.0, 1.5, 1.0]})
    ticks = fig.axes[0].xaxis.get_major_locator().tick_values(1, 4)
    assert all(float(t).is_integer() for t in ticks)


def test_image_grid_scale_each_maps_every_image_to_the_unit_range():
    weights = torch.tensor([[-2.0, 0.0, 2.0, 1.0], [10.0, 10.5, 11.0, 10.0]])
    grid = image_grid(weights, image_shape=(2, 2), nrow=2, scale_each=True).axes[0]
    pixels = grid.get_images()[0].get_array()
    assert pixels[1:3, 1:3].tolist() == [[0.0, 0.5], [1.0, 0.75]]
    assert pixels[1:3, 4:6].tolist() == [[0.0, 0.5], [1.0, 0.0]]


def _chain_over_grid(n: int, extra_root: bool = False):
    from pgm_lab.dag import DAG, cpt

    names = [f"p{i}" for i in range(n)]
    spec = {"class": cpt([], [0.5, 0.5])} if extra_root else {}
    spec[names[0]] = cpt(["class"] if extra_root else [], [[0.5, 0.5], [0.2, 0.8]]
                         if extra_root else [0.5, 0.5])
    for prev, name in zip(names, names[1:]):
        spec[name] = cpt([prev], [[0.9, 0.1], [0.1, 0.9]])
    return DAG(spec), names


def test_pixel_network_draws_one_arrow_per_edge_between_pixels(tmp_path):
    from matplotlib.text import Annotation

    from pgm_lab.plots import plot_pixel_network

    dag, names = _chain_over_grid(6, extra_root=True)
    fig = plot_pixel_network(dag, tmp_path / "net.png", shape=(2, 3), pixels=names,
                             title="chain")
    (ax,) = fig.axes
    arrows = [t for t in ax.texts if isinstance(t, Annotation)]
    assert len(arrows) == 5  # the edge class -> p0 is not between pixels
    assert ax.get_title() == "chain\n5 edges (1 to or from non-pixel nodes not drawn)"
    assert (tmp_path / "net.png").read_bytes()[:4] == PNG_MAGIC
    assert plot_pixel_network(_chain_over_grid(4)[0], shape=(2, 2)).axes[0].get_title() == (
        "network over the pixel grid\n3 edges")


def test_pixel_network_refuses_pixels_that_do_not_fill_the_grid():
    from pgm_lab.plots import plot_pixel_network

    dag, names = _chain_over_grid(6)
    with pytest.raises(DataError, match="expected 9 pixel nodes for shape"):
        plot_pixel_network(dag, shape=(3, 3))
    with pytest.raises(DataError, match="unknown"):
        plot_pixel_network(dag, shape=(2, 3), pixels=names[:5] + ["x"])
