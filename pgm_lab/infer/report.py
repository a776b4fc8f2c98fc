"""How far is each bound from log p(x)? ELBO, IWAE-k, prior importance sampling and AIS side by
side for any set of Pyro ``(model, guide)`` pairs on the same data."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch

from ..errors import ConfigError
from ..plots import plot_errorbars
from .ais import ais, data_device, seeded
from .bounds import BoundEstimates, _check_count, iwae, iwae_curve
from .diagnostics import standard_error

__all__ = ["ModelBounds", "BoundReport", "bound_report", "ModelEvaluation", "evaluate_model"]


class ModelBounds(NamedTuple):
    """One model's numbers in a :class:`BoundReport` (nats per data point, means over points).

    Attributes:
        bounds: ``k ->`` mean IWAE-k (``k = 1``: the ELBO); ``stderr``: its standard error
            over the data points (:func:`pgm_lab.infer.standard_error`).
        ais, ais_stderr: mean AIS estimate of :math:`\\log p(x_n)` and its standard error.
        gap_to_ais, gap_stderr: ``k ->`` mean of ``AIS_n - IWAE-k_n`` paired over the points
            (how far each bound is below the AIS estimate) and its standard error.
        prior_is: ``{K: mean}``, importance sampling with the prior as proposal at the largest
            ``K``: :math:`\\log \\frac1K \\sum_k p(x_n \\mid z_k)`, :math:`z_k \\sim p(z)`.
    """

    bounds: dict[int, float]
    stderr: dict[int, float]
    ais: float
    ais_stderr: float
    gap_to_ais: dict[int, float]
    gap_stderr: dict[int, float]
    prior_is: dict[int, float]


class BoundReport(NamedTuple):
    """Result of :func:`bound_report`: ``models`` maps each name to its :class:`ModelBounds`.

    Attributes:
        n_points: number of data points ``N``.
        ks: the IWAE ``k`` values.
        ais_steps: AIS annealing steps.
        models: ``name -> ModelBounds``.
    """

    n_points: int
    ks: tuple[int, ...]
    ais_steps: int
    models: dict[str, ModelBounds]

    def to_dict(self) -> dict[str, Any]:
        """Plain values: ``{"n_points", "ks", "ais_steps", "models": {name: {"bounds":
        {"<k>": mean}, "stderr", "ais": {"mean", "stderr"}, "gap_to_ais": {"<k>": {"mean",
        "stderr"}}, "prior_is": {"<K>": mean}}}}``."""
        def keyed(d: Mapping[int, float]) -> dict[str, float]:
            return {str(k): v for k, v in d.items()}

        return {
            "n_points": self.n_points, "ks": list(self.ks), "ais_steps": self.ais_steps,
            "models": {name: {
                "bounds": keyed(m.bounds), "stderr": keyed(m.stderr),
                "ais": {"mean": m.ais, "stderr": m.ais_stderr},
                "gap_to_ais": {str(k): {"mean": m.gap_to_ais[k], "stderr": m.gap_stderr[k]}
                               for k in m.gap_to_ais},
                "prior_is": keyed(m.prior_is)} for name, m in self.models.items()},
        }

    def to_json(self, indent: int | None = 2) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)

    def table(self) -> str:
        """A Markdown table, one row per model: each bound ``mean ± stderr``, then AIS and
        prior IS, and below it the paired gaps ``AIS - IWAE-k``."""
        big = max(self.ks)
        head = ["model", *[f"k={k}" if k > 1 else "ELBO" for k in self.ks],
                f"AIS ({self.ais_steps} steps)", f"prior IS (K={big})"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, m in self.models.items():
            cells = [f"{m.bounds[k]:.2f} ± {m.stderr[k]:.2f}" for k in self.ks]
            lines.append("| " + " | ".join([name, *cells, f"{m.ais:.2f} ± {m.ais_stderr:.2f}",
                                            f"{m.prior_is[big]:.2f}"]) + " |")
        lines.append(f"\nnats per data point, mean ± standard error over {self.n_points} points; "
                     "gap AIS - bound, paired over the points:")
        for name, m in self.models.items():
            gaps = [f"{'ELBO' if k == 1 else f'k={k}'} {m.gap_to_ais[k]:+.3f} ± "
                    f"{m.gap_stderr[k]:.3f}" for k in self.ks]
            lines.append(f"- {name}: " + "; ".join(gaps))
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike | None = None) -> Any:
        """Bounds vs ``k`` per model with error bars, each model's AIS estimate as a reference
        line; saved to ``path`` (PNG) when given. Returns the matplotlib figure."""
        series = {name: (list(self.ks), [m.bounds[k] for k in self.ks],
                         [m.stderr[k] for k in self.ks]) for name, m in self.models.items()}
        lines = {f"{name}: AIS ({self.ais_steps} steps)": m.ais
                 for name, m in self.models.items()}
        return plot_errorbars(series, path, xlabel="k (particles)",
                              ylabel="bound (nats per data point)",
                              errors=f"± 1 standard error over {self.n_points} points",
                              title="IWAE-k bounds and the AIS estimate of log p(x)",
                              legend_title="model", lines=lines, logx=True)


def _prior_proposal(*args: Any, **kwargs: Any) -> None:
    """A guide with no sites: the model's latents are drawn from their prior on replay."""


def _check_models(models: object) -> dict[str, tuple[Callable, Callable]]:
    if not isinstance(models, Mapping) or not models:
        raise ConfigError(f"models must be a non-empty mapping name -> (model, guide), got "
                          f"{type(models).__name__}; try {{'vae': (vae.model, guide)}}")
    for name, pair in models.items():
        if not (isinstance(pair, tuple) and len(pair) == 2 and all(map(callable, pair))):
            raise ConfigError(f"models[{name!r}] must be a (model, guide) pair of callables, "
                              f"got {type(pair).__name__}")
    return dict(models)


def bound_report(models: Mapping[str, tuple[Callable, Callable]], x: torch.Tensor, *,
                 ks: Sequence[int] = (1, 5, 50, 5000), ais_steps: int = 1000,
                 ais_chains: int = 16, leapfrog_steps: int = 10, seed: int = 0,
                 batch_size: int | None = None, plate_name: str = "data",
                 progress: bool | None = None) -> BoundReport:
    r"""ELBO, IWAE-k, prior importance sampling and AIS for every model on the data ``x``.

    For each ``name -> (model, guide)`` (any Pyro pair as in :func:`pgm_lab.infer.iwae`, e.g.
    a :class:`pgm_lab.models.VAE` with its :class:`pgm_lab.guides.AmortizedNormal`, or a
    :class:`pgm_lab.dag.DAG`'s program with a guide over its latent nodes):

    * :func:`pgm_lab.infer.iwae_curve` at ``ks`` (``K // k`` groups per point);
    * :func:`pgm_lab.infer.ais` from the guide with ``ais_steps`` steps and ``ais_chains``
      chains, the reference the bounds are measured against (Wu et al. 2017):
      :math:`\mathrm{ELBO} \le \mathcal L_k \le \mathbb E\,\widehat{\log p}_{\mathrm{AIS}}
      \le \log p(x)`;
    * importance sampling with the prior as proposal at ``K = max(ks)``, the direct estimate
      :math:`p(x) \approx \frac1K \sum_k p(x \mid z_k)` whose distance from the others shows
      what the amortized :math:`q(z \mid x)` buys (Burda et al. 2015).

    Every model sees the same random numbers (torch's RNGs seeded with ``seed`` before each
    and restored afterwards).

    Returns:
        :class:`BoundReport`.

    Raises:
        ConfigError: ``models`` not a non-empty mapping of ``(model, guide)`` pairs, or a bad
            setting (see :func:`pgm_lab.infer.ais` and :func:`pgm_lab.infer.iwae_curve`).
    """
    pairs = _check_models(models)
    if isinstance(ks, int) or not isinstance(ks, Sequence) or not ks:
        raise ConfigError(f"ks must be a non-empty sequence of ints >= 1, got {ks!r}; try "
                          "(1, 5, 50, 5000)")
    ks = tuple(sorted({_check_count("each k", k) for k in ks}))
    rows = {name: evaluate_model(model, guide, x, ks=ks, ais_steps=ais_steps,
                                 ais_chains=ais_chains, leapfrog_steps=leapfrog_steps,
                                 seed=seed, batch_size=batch_size, plate_name=plate_name,
                                 progress=progress).bounds
            for name, (model, guide) in pairs.items()}
    return BoundReport(int(x.shape[0]), ks, ais_steps, rows)


class ModelEvaluation(NamedTuple):
    """Result of :func:`evaluate_model`: the summary ``bounds`` (:class:`ModelBounds`), the
    per-point ``curve`` (:class:`pgm_lab.infer.BoundEstimates`, with ESS and k-hat) and the
    per-point AIS estimates ``ais [N]``."""

    bounds: ModelBounds
    curve: BoundEstimates
    ais: torch.Tensor


def evaluate_model(model: Callable, guide: Callable, x: torch.Tensor, *, ks: tuple[int, ...],
                   ais_steps: int, ais_chains: int, leapfrog_steps: int = 10, seed: int = 0,
                   batch_size: int | None = None, plate_name: str = "data",
                   progress: bool | None = None) -> ModelEvaluation:
    """One model's row of :func:`bound_report` (same settings, ``ks`` sorted and distinct),
    with the per-point values it summarizes."""
    device = data_device((x,))
    with seeded(seed, device):
        curve = iwae_curve(model, guide, x, ks=ks, batch_size=batch_size,
                           plate_name=plate_name, progress=progress)
    with seeded(seed, device):
        prior = iwae(model, _prior_proposal, x, num_particles=max(ks), batch_size=batch_size,
                     plate_name=plate_name, progress=progress)
    a = ais(model, guide, x, num_steps=ais_steps, num_chains=ais_chains,
            leapfrog_steps=leapfrog_steps, seed=seed, plate_name=plate_name)
    gaps = {k: a - curve.bounds[k] for k in ks}
    row = ModelBounds(
        bounds={k: float(b.mean()) for k, b in curve.bounds.items()},
        stderr={k: standard_error(b) for k, b in curve.bounds.items()},
        ais=float(a.mean()), ais_stderr=standard_error(a),
        gap_to_ais={k: float(g.mean()) for k, g in gaps.items()},
        gap_stderr={k: standard_error(g) for k, g in gaps.items()},
        prior_is={max(ks): float(prior.mean())})
    return ModelEvaluation(row, curve, a)
