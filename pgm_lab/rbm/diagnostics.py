"""ArviZ diagnostics of Gibbs chains: InferenceData, R-hat / ESS summary and trace plots.

Binary states are poor summaries on their own, so each draw is reduced to scalar statistics
that are tracked per chain: the free energy :math:`F(v)`, the energy :math:`E(v, h)` and the
mean activity of the visible and hidden layers, plus the per-unit states (``v``, ``h``) whose
chain means are the unit means.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import ConfigError
from .energy import EnergyModel

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["to_inference_data", "summary", "plot_trace"]

SCALARS = ("free_energy", "energy", "visible_mean", "hidden_mean")


def _samples(source: Any) -> dict[str, torch.Tensor]:
    if hasattr(source, "get_samples"):  # pyro.infer.MCMC
        return source.get_samples(group_by_chain=True)
    if isinstance(source, dict) and "v" in source:
        return source
    raise ConfigError(f"expected a pyro.infer.MCMC run with GibbsKernel or a dict with 'v' "
                      f"[chain, draw, ..., V] (and optionally 'h'), got {type(source).__name__}")


def to_inference_data(source: Any, model: EnergyModel, *, include_units: bool = True):
    r"""Convert Gibbs samples to :class:`arviz.InferenceData`.

    Args:
        source: a finished ``pyro.infer.MCMC`` run of :class:`~pgm_lab.rbm.GibbsKernel`
            (``get_samples(group_by_chain=True)``: ``v [M, T, *batch, V]``, ``h`` likewise), or
            a dict of such tensors. Kernel batch dimensions become extra ArviZ chains
            (``chain = M * prod(batch)``), since batched chains are independent.
        model: the energy model, to compute free energy and energy of every draw.
        include_units: also store ``v [chain, draw, V]`` and ``h [chain, draw, H]``.

    Returns:
        ``InferenceData`` whose posterior holds ``free_energy``, ``energy``,
        ``visible_mean``, ``hidden_mean`` (``[chain, draw]``) and optionally the unit states
        with dims ``visible`` / ``hidden``.
    """
    import arviz as az

    samples = _samples(source)
    v = samples["v"]
    if v.dim() < 3 or v.shape[-1] != model.n_visible:
        raise ConfigError(f"expected v of shape [chain, draw, ..., {model.n_visible}], got "
                          f"{tuple(v.shape)}")

    def chains_first(x: torch.Tensor) -> torch.Tensor:
        # [M, T, *batch, D] -> [M * prod(batch), T, D]
        m, t, d = x.shape[0], x.shape[1], x.shape[-1]
        return x.reshape(m, t, -1, d).permute(0, 2, 1, 3).reshape(-1, t, d)

    v = chains_first(v)
    with torch.no_grad():
        h = chains_first(samples["h"]) if "h" in samples else model.sample_h(v)
        post = {
            "free_energy": model.free_energy(v),
            "energy": model.energy(v, h),
            "visible_mean": v.mean(-1),
            "hidden_mean": h.mean(-1),
        }
    dims = {}
    if include_units:
        post["v"], post["h"] = v, h
        dims = {"v": ["visible"], "h": ["hidden"]}
    post = {k: t.detach().double().cpu().numpy() for k, t in post.items()}
    return az.from_dict(posterior=post, dims=dims)


def summary(idata: Any, var_names: tuple[str, ...] = SCALARS):
    """``arviz.summary`` (mean, sd, ESS bulk/tail, R-hat) of the scalar chain statistics."""
    import arviz as az

    return az.summary(idata, var_names=list(var_names), kind="all")


def plot_trace(idata: Any, path: str | os.PathLike | None = None,
               var_names: tuple[str, ...] = ("free_energy", "visible_mean", "hidden_mean")
               ) -> Figure:
    """Trace plots (``arviz.plot_trace``) of the chain statistics: per variable, the density of
    each chain (left) and its draws (right). Returns the figure (shown inline in Jupyter) and
    saves it as a PNG when ``path`` is given."""
    import arviz as az
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 2.2 * len(var_names)), dpi=100, layout="constrained")
    axes = fig.subplots(len(var_names), 2, squeeze=False)
    az.plot_trace(idata, var_names=list(var_names), compact=True, axes=axes)
    for ax in axes[:, 1]:
        ax.set_xlabel("draw")
    for ax in axes[:, 0]:
        ax.set_xlabel("value")
        ax.set_ylabel("density")
    fig.suptitle("Gibbs chains: one line style per chain; chains that mix overlap")
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    return fig
