"""The leaderboard's outputs: ``leaderboard.json``, a Markdown table and its figures."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import torch
from matplotlib.figure import Figure

from ..plots import image_grid
from .entries import Entry

__all__ = ["to_json", "format_table", "plot_leaderboard", "sample_grid"]


def to_json(entries: Sequence[Entry], dataset: str, n_test: int) -> dict[str, Any]:
    """``{"dataset", "n_test", "entries": [...]}`` with the rows best first."""
    rows = sorted(entries, key=lambda e: -e.test_ll)
    return {"dataset": dataset, "n_test": n_test, "entries": [asdict(e) for e in rows]}


def _interval(e: Mapping[str, Any]) -> str:
    if e["interval"] is None:
        return ""
    lo, hi = ("-inf" if v is None else f"{v:.2f}" for v in e["interval"])
    return f"[{lo}, {hi}]"


def format_table(board: Mapping[str, Any]) -> str:
    """One Markdown row per entry: test log-likelihood ± standard error over test images."""
    head = ["model", "family", "test LL (nats)", "estimator", "bound", "interval",
            "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in board["entries"]:
        lines.append(f"| {e['name']} | {e['family']} | {e['test_ll']:.2f} ± {e['stderr']:.2f} "
                     f"| {e['estimator']} | {e['bound']} | {_interval(e)} | "
                     f"{e['train_seconds']:.1f} |")
    return "\n".join(lines)


def plot_leaderboard(board: Mapping[str, Any], path: str | os.PathLike | None = None) -> Figure:
    """Estimates with ± 1 standard error (thin bars) and intervals (thick bars, AIS log Z ± 3σ),
    filled circles for exact values, open triangles for lower bounds."""
    entries = board["entries"]
    fig = Figure(figsize=(8, 0.45 * len(entries) + 1.6), layout="constrained")
    ax = fig.subplots()
    styles = {"exact": ("o", "tab:blue"), "stochastic-upper": (">", "tab:purple")}
    for i, e in enumerate(entries):
        exact = e["bound"] == "exact"
        marker, colour = styles.get(e["bound"], ("<", "tab:orange"))
        ax.errorbar(e["test_ll"], i, xerr=e["stderr"], fmt=marker,
                    color=colour, mfc=colour if exact else "white", capsize=3)
        if e["interval"] is not None:
            lo, hi = e["interval"]
            lo = ax.get_xlim()[0] if lo is None else lo
            ax.plot([lo, hi], [i, i], color=colour, lw=4, alpha=0.4)
    ax.set_yticks(range(len(entries)),
                  [f"{e['name']}\n{e['estimator']}" for e in entries], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("mean test log-likelihood (nats per image; higher is better)")
    ax.plot([], [], "o", color="tab:blue", label="exact")
    ax.plot([], [], "<", color="tab:orange", mfc="white", label="stochastic lower bound")
    ax.plot([], [], ">", color="tab:purple", mfc="white",
            label="stochastic upper bound (RBM: AIS log Z)")
    ax.plot([], [], color="tab:purple", lw=4, alpha=0.4, label="AIS interval (log Z ± 3σ)")
    ax.legend(loc="lower right", fontsize=7)  # the worst rows sit on the left
    ax.set_title(f"{board['dataset']}: {board['n_test']} statically binarized test images "
                 "(bars: ± 1 s.e. over images)", fontsize=9)
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def sample_grid(samples: Mapping[str, torch.Tensor], path: str | os.PathLike | None,
                image_shape: tuple[int, int]) -> Figure:
    """Ten samples of each model side by side, one labelled row per model."""
    images = torch.cat([s[:10].float().cpu() for s in samples.values()])
    return image_grid(images, path, image_shape=image_shape, nrow=10,
                      row_labels=list(samples),
                      title="samples of each model (rows), probabilities or binary draws")
