"""Per-data-point ELBO and IWAE-k estimates, streamed over chunks of particles.

Memory is bounded by the chunk of particles traced at once, never by ``K``: the logsumexp over
particles is accumulated chunk by chunk (``lse = logaddexp(lse, logsumexp(chunk))``), so
``K = 5000`` or ``K = 10**6`` costs time, not memory.

Inside a :mod:`torch.distributed` process group of ``W`` processes (e.g. started by
``torchrun``, after :func:`pgm_lab.train.fit` or :func:`pgm_lab.distributed.init_process_group`)
each rank evaluates a contiguous ``1 / W`` of the data points and every rank returns the full
``[N]`` result in data order (:func:`pgm_lab.distributed.evaluate_sharded`); all ranks must
then call with the same data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import torch
from tqdm import tqdm

from .._progress import progress_enabled
from ..distributed import evaluate_sharded
from ..errors import ConfigError, InferenceError
from .diagnostics import khat_from_top, psis_tail_size
from .weights import guess_max_plate_nesting, log_weights, probe_traces, vectorized_traces

__all__ = ["elbo", "iwae", "iwae_curve", "BoundEstimates", "CHUNK_ELEMENTS"]

CHUNK_ELEMENTS = 2**23  # auto chunk: ~this many elements per traced tensor (32 MB in float32)
_EXPANSION = 4  # rough ratio of all intermediate tensors to the traced site values


class BoundEstimates(NamedTuple):
    """Result of :func:`iwae_curve` (all tensors ``[N]``, one entry per data point).

    Attributes:
        bounds: ``k -> `` mean of the ``K // k`` independent IWAE-k estimates of each point
            (``k = 1`` is the ELBO).
        stderr: ``k -> `` Monte-Carlo standard error of that mean per point (only for ``k``
            with at least two groups).
        num_groups: ``k -> K // k``.
        ess: effective sample size of all ``K`` particles.
        khat: PSIS tail index over all ``K`` particles (``None`` when ``K < 50``).
    """

    bounds: dict[int, torch.Tensor]
    stderr: dict[int, torch.Tensor]
    num_groups: dict[int, int]
    ess: torch.Tensor
    khat: torch.Tensor | None


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an int >= 1, got {value!r}")
    return value


def _per_particle_elements(model: Callable, guide: Callable | None, args: tuple,
                           kwargs: dict[str, Any]) -> int:
    """Elements of all sample-site values of one particle (RNG state left untouched)."""
    guide_trace, model_trace = probe_traces(model, guide, args, kwargs)
    return sum(site["value"].numel() for tr in (guide_trace, model_trace)
               for site in tr.nodes.values()
               if site["type"] == "sample" and isinstance(site["value"], torch.Tensor))


def _log_weight_chunks(model: Callable, guide: Callable, args: tuple, kwargs: dict[str, Any],
                       *, num_particles: int, chunk_size: int | None, plate_name: str,
                       progress: bool | None, desc: str) -> Iterator[torch.Tensor]:
    """Yield per-data-point log weights ``[c, N]`` for successive chunks of ``c`` particles."""
    _check_count("num_particles", num_particles)
    with torch.no_grad():
        mpn = guess_max_plate_nesting(model, guide, args, kwargs)
        if chunk_size is None:
            per = max(1, _per_particle_elements(model, guide, args, kwargs) * _EXPANSION)
            chunk_size = max(1, min(num_particles, CHUNK_ELEMENTS // per))
        _check_count("chunk_size", chunk_size)
        done = 0
        with tqdm(total=num_particles, disable=not progress_enabled(progress), desc=desc,
                  leave=False, dynamic_ncols=True) as bar:
            while done < num_particles:
                c = min(chunk_size, num_particles - done)
                mt, gt = vectorized_traces(model, guide, args, kwargs, c, mpn)
                lw = log_weights(mt, gt, plate_name=plate_name, max_plate_nesting=mpn)
                if lw.has_global_sample_sites:
                    outside = [n for tr in (mt, gt) for n, s in tr.nodes.items()
                               if s["type"] == "sample" and n != plate_name
                               and not any(f.name == plate_name for f in s["cond_indep_stack"])
                               and not s["name"].startswith("num_particles")]
                    raise InferenceError(
                        f"per-data-point bounds need every sample site inside plate "
                        f"{plate_name!r}; sites {sorted(set(outside))} are outside it; try "
                        f"conditioning on global variables (pyro.condition) or "
                        f"pyro.infer.importance.vectorized_importance_weights")
                if torch.isnan(lw.local).any():
                    raise InferenceError(
                        f"log importance weights are NaN (particles {done}..{done + c}); "
                        "expected finite model and guide densities; check the parameters for NaN")
                yield lw.local
                done += c
                bar.update(c)


def _batched(fn: Callable[..., Any], args: tuple, batch_size: int | None) -> list[Any]:
    """Call ``fn(*batch)`` on row slices of every tensor argument sharing ``args[0]``'s length."""
    if batch_size is None:
        return [fn(*args)]
    _check_count("batch_size", batch_size)
    if not args or not isinstance(args[0], torch.Tensor):
        raise ConfigError("batch_size needs the data tensor [N, ...] as first argument")
    n = args[0].shape[0]
    out = []
    for i in range(0, n, batch_size):
        out.append(fn(*(a[i:i + batch_size] if isinstance(a, torch.Tensor) and a.dim()
                        and a.shape[0] == n else a for a in args)))
    return out


def elbo(model: Callable, guide: Callable, *args: Any, num_particles: int = 1,
         chunk_size: int | None = None, batch_size: int | None = None,
         plate_name: str = "data", progress: bool | None = None,
         **kwargs: Any) -> torch.Tensor:
    r"""Per-data-point evidence lower bound, averaged over ``num_particles`` draws.

    .. math::

        \widehat{\mathrm{ELBO}}_n = \frac1K \sum_{k=1}^K \log p(x_n, z_{nk}) -
        \log q(z_{nk} \mid x_n), \qquad z_{nk} \sim q(\cdot \mid x_n).

    ``model(*args, **kwargs)`` and ``guide(*args, **kwargs)`` are any Pyro pair whose sample
    sites all lie in plate ``plate_name`` (size ``N``); the site scales are ignored, so the
    values are per data point in nats. Returns ``[N]`` (float, no gradient).

    Args:
        num_particles: ``K``.
        chunk_size: particles traced at once (default: sized to ~``CHUNK_ELEMENTS``).
        batch_size: evaluate the data in row slices of this size (each tensor argument whose
            first dim equals ``args[0]``'s is sliced), to bound memory for large ``N``.
        progress: tqdm bar (default: on a terminal outside CI).
    """
    def run(*a: Any) -> torch.Tensor:
        total: torch.Tensor | float = 0.0
        for chunk in _log_weight_chunks(model, guide, a, kwargs, num_particles=num_particles,
                                        chunk_size=chunk_size, plate_name=plate_name,
                                        progress=progress, desc="elbo"):
            total = total + chunk.sum(0)
        return total / num_particles

    return evaluate_sharded(lambda *a: torch.cat(_batched(run, a, batch_size)), args)


def iwae(model: Callable, guide: Callable, *args: Any, num_particles: int = 5000,
         chunk_size: int | None = None, batch_size: int | None = None,
         plate_name: str = "data", progress: bool | None = None,
         **kwargs: Any) -> torch.Tensor:
    r"""Per-data-point importance-weighted bound IWAE-K (Burda et al. 2015), one draw each.

    .. math::

        \widehat{\mathcal L}_{K,n} = \log \frac1K \sum_{k=1}^K
        \frac{p(x_n, z_{nk})}{q(z_{nk} \mid x_n)}, \qquad
        \mathbb E\,\widehat{\mathcal L}_{K,n} \le \mathbb E\,\widehat{\mathcal L}_{K+1,n}
        \le \log p(x_n).

    Streams over chunks of particles (running ``logaddexp``), so memory does not grow with
    ``K``. Arguments as in :func:`elbo`. Returns ``[N]``.
    """
    def run(*a: Any) -> torch.Tensor:
        lse: torch.Tensor | None = None
        for chunk in _log_weight_chunks(model, guide, a, kwargs, num_particles=num_particles,
                                        chunk_size=chunk_size, plate_name=plate_name,
                                        progress=progress, desc=f"iwae-{num_particles}"):
            c = torch.logsumexp(chunk, 0)
            lse = c if lse is None else torch.logaddexp(lse, c)
        return lse - math.log(num_particles)

    return evaluate_sharded(lambda *a: torch.cat(_batched(run, a, batch_size)), args)


class _GroupedBound:
    """Streaming mean of consecutive, disjoint groups of ``k`` particles' IWAE-k values."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.partial: torch.Tensor | None = None
        self.count = 0
        self.total: torch.Tensor | float = 0.0
        self.total_sq: torch.Tensor | float = 0.0
        self.groups = 0
        self.shift: torch.Tensor | None = None  # sums are of b - shift: no cancellation

    def _add(self, b: torch.Tensor) -> None:  # b: [G, N] completed IWAE-k values
        if self.shift is None:
            self.shift = b[0].clone()
        b = b - self.shift
        self.total = self.total + b.sum(0)
        self.total_sq = self.total_sq + (b * b).sum(0)
        self.groups += b.shape[0]

    def update(self, lw: torch.Tensor) -> None:
        c, k, p = lw.shape[0], self.k, 0
        if self.count:
            p = min(k - self.count, c)
            self.partial = torch.logaddexp(self.partial, torch.logsumexp(lw[:p], 0))
            self.count += p
            if self.count == k:
                self._add((self.partial - math.log(k))[None])
                self.partial, self.count = None, 0
        full = (c - p) // k
        if full:
            block = lw[p:p + full * k].reshape(full, k, -1)
            self._add(torch.logsumexp(block, 1) - math.log(k))
            p += full * k
        if p < c:
            self.partial, self.count = torch.logsumexp(lw[p:], 0), c - p

    def mean(self) -> torch.Tensor:
        return self.shift + self.total / self.groups

    def stderr(self) -> torch.Tensor:
        g = self.groups
        var = (self.total_sq - self.total**2 / g) / (g - 1)
        return (var.clamp_min(0) / g).sqrt()


def iwae_curve(model: Callable, guide: Callable, *args: Any, ks: Sequence[int] = (1, 5, 50, 5000),
               chunk_size: int | None = None, batch_size: int | None = None,
               plate_name: str = "data", progress: bool | None = None,
               **kwargs: Any) -> BoundEstimates:
    """IWAE-k for several ``k`` at once from one stream of ``K = max(ks)`` particles.

    The ``K`` particles of each data point are split into ``K // k`` disjoint groups of ``k``;
    each group gives an independent IWAE-k estimate and their mean estimates
    :math:`\\mathbb E\\,\\widehat{\\mathcal L}_{k,n}` with ``K // k`` times less variance than
    a single :func:`iwae` call. The same stream yields the effective sample size and PSIS
    :math:`\\hat k` (see :mod:`pgm_lab.infer.diagnostics`) of all ``K`` particles. Arguments
    as in :func:`elbo`.

    Returns:
        :class:`BoundEstimates`.
    """
    if isinstance(ks, int) or not ks:
        raise ConfigError(f"ks must be a non-empty sequence of ints >= 1, got {ks!r}")
    ks = sorted({_check_count("each k", k) for k in ks})
    big = ks[-1]

    def run(*a: Any) -> BoundEstimates:
        groups = {k: _GroupedBound(k) for k in ks}
        lse = lse2 = top = None
        m = psis_tail_size(big) + 1
        for chunk in _log_weight_chunks(model, guide, a, kwargs, num_particles=big,
                                        chunk_size=chunk_size, plate_name=plate_name,
                                        progress=progress, desc=f"iwae-{big}"):
            for g in groups.values():
                g.update(chunk)
            c1, c2 = torch.logsumexp(chunk, 0), torch.logsumexp(2 * chunk, 0)
            lse = c1 if lse is None else torch.logaddexp(lse, c1)
            lse2 = c2 if lse2 is None else torch.logaddexp(lse2, c2)
            both = chunk if top is None else torch.cat([top, chunk])
            top = torch.topk(both, min(m, both.shape[0]), dim=0).values
        khat = khat_from_top(top, big) if psis_tail_size(big) >= 10 else None
        return BoundEstimates(
            bounds={k: g.mean() for k, g in groups.items()},
            stderr={k: g.stderr() for k, g in groups.items() if g.groups > 1},
            num_groups={k: g.groups for k, g in groups.items()},
            ess=torch.exp(2 * lse - lse2),
            khat=khat)

    return evaluate_sharded(lambda *a: _concat(_batched(run, a, batch_size), ks), args)


def _concat(parts: list[BoundEstimates], ks: Sequence[int]) -> BoundEstimates:
    """The estimates of consecutive row slices, as one."""
    if len(parts) == 1:
        return parts[0]
    return BoundEstimates(
        bounds={k: torch.cat([p.bounds[k] for p in parts]) for k in ks},
        stderr={k: torch.cat([p.stderr[k] for p in parts]) for k in parts[0].stderr},
        num_groups=parts[0].num_groups,
        ess=torch.cat([p.ess for p in parts]),
        khat=None if parts[0].khat is None else torch.cat([p.khat for p in parts]))
