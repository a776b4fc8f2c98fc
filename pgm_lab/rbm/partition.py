"""Log-partition function of energy models: exact enumeration and annealed importance sampling.

* :func:`exact_log_partition` sums :math:`e^{-F}` over every state of the layer that the model
  says can be enumerated (its ``visible_factorized`` / ``hidden_factorized``; both layers for a
  fully coupled Boltzmann machine), in chunks, with ``logsumexp`` in float64.
* :func:`ais` is annealed importance sampling from a base-rate model (Neal 2001; Salakhutdinov
  & Murray 2008), forward and optionally reverse (Burda, Grosse & Salakhutdinov 2015), with a
  :class:`AISResult` holding the estimate, its ±3σ interval and the log-weights.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..errors import ConfigError, InferenceError
from .numerics import softplus
from .states import MAX_EXACT_UNITS, check_enumerable, logsumexp_states

if TYPE_CHECKING:  # the models import this module; it only asks them for capabilities
    from .energy import EnergyModel

__all__ = [
    "MAX_EXACT_UNITS",
    "log_partition",
    "exact_log_partition",
    "ais",
    "ais_schedule",
    "AISResult",
]

def log_partition(model: EnergyModel, method: str = "exact", *, return_result: bool = False,
                  **kwargs) -> torch.Tensor | AISResult:
    """``log Z`` of ``model`` as a scalar tensor.

    ``method="exact"`` calls :func:`exact_log_partition`; ``method="ais"`` calls :func:`ais`
    (``kwargs`` go to it) and returns ``result.log_z``, or the full :class:`AISResult` when
    ``return_result=True``.
    """
    if method == "exact":
        return exact_log_partition(model, **kwargs)
    if method == "ais":
        result = ais(model, **kwargs)
        return result if return_result else result.log_z
    raise ConfigError(f"method must be 'exact' or 'ais', got {method!r}")


def _enumeration_plan(model: EnergyModel) -> tuple[int, str]:
    """``(enumerated units, layer)``: the cheapest layer whose free energy is closed-form given
    that the *other* layer factorizes (the visible layer only if it is binary); ``"both"`` when
    neither does (``2^(V + H)`` terms)."""
    plans = []
    if model.visible_factorized:
        plans.append((model.n_hidden, "hidden"))
    if model.hidden_factorized and model.visible_binary:
        plans.append((model.n_visible, "visible"))
    if plans:
        return min(plans)
    if not model.visible_binary:
        raise InferenceError(f"{type(model).__name__} has continuous visible units and no "
                             "closed-form hidden free energy; exact log Z is not available")
    return model.n_visible + model.n_hidden, "both"


def exact_log_partition(model: EnergyModel, *, max_units: int = MAX_EXACT_UNITS,
                        chunk_size: int = 2**16) -> torch.Tensor:
    r"""Exact :math:`\log Z` by enumeration, float64 scalar tensor.

    Asks the model which layers factorize and enumerates the smallest sufficient set:
    :math:`\log Z = \operatorname{logsumexp}_h -F(h)` when visible units are independent given
    ``h`` (``visible_factorized``, e.g. an RBM), :math:`\operatorname{logsumexp}_v -F(v)` when
    hidden units are independent given ``v`` (``hidden_factorized``), whichever layer is
    smaller; when both layers are coupled (a general Boltzmann machine) every joint state,
    :math:`2^{V + H}` terms. Cost :math:`O(2^{\min(V, H)} V H)` for an RBM, in chunks of
    ``chunk_size``.

    Raises:
        InferenceError: more than ``max_units`` units would be enumerated (for a fully
            coupled model: ``V + H > max_units``).
    """
    for arg, value, lo in (("max_units", max_units, 0), ("chunk_size", chunk_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ConfigError(f"{arg} must be an int >= {lo}, got {value!r}")
    n, layer = _enumeration_plan(model)
    check_enumerable(n, max_units)
    p = next(model.parameters())
    # a float64 copy: enumeration sums up to 2^25 terms and tests compare to 1e-10
    model64 = model if p.dtype == torch.float64 else copy.deepcopy(model).double()
    if layer == "hidden":
        neg_f, n_enum = (lambda s: -model64.hidden_free_energy(s)), model.n_hidden
    else:  # the visible layer; its free energy enumerates coupled hidden units itself
        neg_f, n_enum = (lambda s: -model64.free_energy(s)), model.n_visible
    if layer == "both":
        chunk_size = max(1, min(chunk_size, 2**20 // 2**model.n_hidden))
    with torch.no_grad():
        return logsumexp_states(neg_f, n_enum, dtype=torch.float64, device=p.device,
                                chunk_size=chunk_size)


def ais_schedule(num_betas: int = 14500) -> torch.Tensor:
    r"""Inverse temperatures :math:`0 = \beta_0 < \dots < \beta_K = 1`, float64 ``[num_betas]``.

    Salakhutdinov & Murray (2008) use 500 steps uniformly in ``[0, 0.5]``, 4000 in
    ``[0.5, 0.9]`` and 10000 in ``[0.9, 1]``; other ``num_betas`` keep these proportions.
    """
    if not isinstance(num_betas, int) or num_betas < 10:
        raise ConfigError(f"num_betas must be an int >= 10, got {num_betas!r}")
    n1 = max(1, round(num_betas * 500 / 14500))
    n2 = max(1, round(num_betas * 4000 / 14500))
    n3 = num_betas - n1 - n2
    return torch.cat([
        torch.linspace(0.0, 0.5, n1 + 1, dtype=torch.float64)[:-1],
        torch.linspace(0.5, 0.9, n2 + 1, dtype=torch.float64)[:-1],
        torch.linspace(0.9, 1.0, n3, dtype=torch.float64),
    ])


@dataclass
class AISResult:
    r"""Result of :func:`ais`.

    Attributes:
        log_z: the estimate :math:`\log \hat Z` (float64 scalar tensor).
        log_z_lower, log_z_upper: :math:`\log(\hat Z \mp 3 \hat\sigma)`, with
            :math:`\hat\sigma` the standard error of the mean importance weight
            (Salakhutdinov & Murray 2008); ``lower`` is ``-inf`` when :math:`3\hat\sigma >
            \hat Z`.
        stderr: delta-method standard error of :math:`\log \hat Z`, i.e.
            :math:`\hat\sigma / \hat Z`.
        log_weights: ``[num_runs]`` log importance weights.
        log_z_base: exact :math:`\log Z_A` of the base-rate model.
        ess: effective sample size :math:`(\sum w)^2 / \sum w^2` of the weights.
        num_betas: number of inverse temperatures.
        reverse: the reverse-AIS result (an upper-biased estimate) when requested.
    """

    log_z: torch.Tensor
    log_z_lower: torch.Tensor
    log_z_upper: torch.Tensor
    stderr: torch.Tensor
    log_weights: torch.Tensor = field(repr=False)
    log_z_base: torch.Tensor
    ess: float
    num_betas: int
    direction: str = "forward"
    reverse: AISResult | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        """Plain floats, for JSON."""
        out = {"log_z": float(self.log_z), "log_z_lower": float(self.log_z_lower),
               "log_z_upper": float(self.log_z_upper), "stderr": float(self.stderr),
               "ess": self.ess, "num_runs": int(self.log_weights.numel()),
               "num_betas": self.num_betas, "direction": self.direction}
        if self.reverse is not None:
            out["reverse"] = self.reverse.to_dict()
        return out


class _Annealer:
    """Tempered RBM :math:`E_\beta = (1 - \beta) E_A + \beta E` with :math:`E_A = -b_A^\top v`.

    Caches ``x = vW + c`` and ``(b - b_A)^T v`` of the current states, so one AIS step costs
    two matmuls (one per layer), as many as a block Gibbs step.
    """

    def __init__(self, w, b, c, b_base, v, gen):  # noqa: ANN001
        self.w, self.b, self.c, self.b_base, self.gen = w, b, c, b_base, gen
        self.db = b - b_base
        self.set(v)

    def set(self, v: torch.Tensor) -> None:
        self.v, self.x, self.vdb = v, v @ self.w + self.c, v @ self.db

    def log_ratio(self, beta_to: float, beta_from: float) -> torch.Tensor:
        # log p*_to(v) - log p*_from(v), with log p*_beta(v) = b_A v + beta (b - b_A) v
        #   + sum_j softplus(beta x_j)
        return (beta_to - beta_from) * self.vdb + (softplus(beta_to * self.x)
                                                  - softplus(beta_from * self.x)).sum(-1)

    def step(self, beta: float) -> None:
        h = torch.bernoulli(torch.sigmoid(beta * self.x), generator=self.gen)
        logits = (1 - beta) * self.b_base + beta * (h @ self.w.T + self.b)
        self.set(torch.bernoulli(torch.sigmoid(logits), generator=self.gen))


def _base_rate_path(model: EnergyModel, num_runs: int, gen: torch.Generator | None,
                    base_data: object) -> tuple[_Annealer, torch.Tensor]:
    r"""The RBM's path from the base-rate model :math:`E_A = -b_A^\top v`, and
    :math:`\log Z_A`."""
    w, b, c = (t.detach().to(torch.float64) for t in (model.W, model.b, model.c))
    if base_data is not None:
        p = model.check_visible(base_data, name="base_data").to(torch.float64).mean(0)
        p = p.clamp(1e-3, 1 - 1e-3)
        b_base = torch.log(p) - torch.log1p(-p)
    else:
        b_base = b.clone()
    log_z_base = model.n_hidden * math.log(2.0) + softplus(b_base).sum()
    v = torch.bernoulli(torch.sigmoid(b_base).expand(num_runs, -1), generator=gen)
    return _Annealer(w, b, c, b_base, v, gen), log_z_base


def _summarize(log_w: torch.Tensor, log_z_base: torch.Tensor, sign: int, num_betas: int,
               direction: str) -> AISResult:
    # forward: Z = Z_A E[w];  reverse: 1/Z = E[w] / Z_A, so log Z = log Z_A - log mean w.
    m = log_w.numel()
    shift = log_w.max()
    r = torch.exp(log_w - shift)
    mean = r.mean()
    rel = r.std(unbiased=True) / (math.sqrt(m) * mean) if m > 1 else torch.tensor(math.inf)
    log_mean = shift + torch.log(mean)
    lo = torch.log1p(-3 * rel) if rel < 1 / 3 else torch.tensor(-math.inf, dtype=log_w.dtype)
    hi = torch.log1p(3 * rel)
    if sign > 0:
        log_z, lower, upper = log_z_base + log_mean, log_z_base + log_mean + lo, \
            log_z_base + log_mean + hi
    else:
        log_z, lower, upper = log_z_base - log_mean, log_z_base - log_mean - hi, \
            log_z_base - log_mean - lo
    ess = float(r.sum() ** 2 / (r**2).sum())
    return AISResult(log_z=log_z, log_z_lower=lower, log_z_upper=upper, stderr=rel,
                     log_weights=log_w, log_z_base=log_z_base, ess=ess, num_betas=num_betas,
                     direction=direction)


def ais(
    model: EnergyModel,
    *,
    num_runs: int = 100,
    num_betas: int = 14500,
    betas: torch.Tensor | None = None,
    base_data: torch.Tensor | None = None,
    reverse: bool = False,
    reverse_init: torch.Tensor | None = None,
    reverse_burn_in: int = 1000,
    seed: int | None = 0,
) -> AISResult:
    r"""Annealed importance sampling estimate of :math:`\log Z` of an RBM (or of a model that
    declares its own annealing path).

    Anneals from the base-rate model :math:`E_A(v, h) = -b_A^\top v` (no weights, hidden units
    uniform, :math:`Z_A = 2^H \prod_i (1 + e^{b_{A,i}})`) to the RBM through
    :math:`E_\beta = (1 - \beta) E_A + \beta E`, with one block Gibbs transition at each
    :math:`\beta_k`. Each of ``num_runs`` independent runs gives the weight

    .. math:: \log w = \sum_{k=1}^{K} \big[\log p^*_{\beta_k}(v_{k-1})
              - \log p^*_{\beta_{k-1}}(v_{k-1})\big], \qquad
              \hat Z = Z_A \tfrac{1}{M} \textstyle\sum_m w_m,

    unbiased for :math:`Z` (so :math:`\log \hat Z` is a stochastic lower bound of
    :math:`\log Z`). ``reverse=True`` also runs reverse AIS, from states of the RBM back to the
    base, whose weights are unbiased for :math:`Z_A / Z` (so its :math:`\log \hat Z` is a
    stochastic *upper* bound); its start states are ``reverse_init`` ``[M, V]`` (e.g. data) or
    else the end states of ``reverse_burn_in`` further Gibbs steps on the forward runs' final
    states. Agreement of both is a check that the annealing is slow enough.

    Args:
        model: an energy model with the RBM energy (``model.has_rbm_energy``, e.g. an
            :class:`~pgm_lab.rbm.RBM` whose ``energy`` is not overridden; annealed as above),
            or else one that provides its own path: ``model.annealing_path(num_runs,
            generator, base_data)`` returning ``(annealer, log Z_0)``, the annealer holding
            states ``.v`` with ``set(v)``, ``log_ratio(beta_to, beta_from)`` and
            ``step(beta)`` (e.g. :class:`~pgm_lab.rbm.GaussianBernoulliRBM`, or a
            :class:`~pgm_lab.rbm.BoltzmannMachine` with couplings, which anneals joint states
            from its biases-only machine with its unit-by-unit Gibbs sweeps).
        num_runs: independent annealing runs ``M``.
        num_betas: number of temperatures (schedule of :func:`ais_schedule`), or ``betas``.
        base_data: binary ``[N, V]`` whose visible means give :math:`b_A` (the "base-rate"
            model); default :math:`b_A = b`, the RBM's own visible bias.
        reverse: also run reverse AIS (stored as ``result.reverse``).
        reverse_init: binary start states ``[M', V]`` of the reverse runs (e.g. data).
        reverse_burn_in: Gibbs steps at :math:`\beta = 1` on the forward end states before
            the reverse runs when ``reverse_init`` is not given (``>= 0``).
        seed: seed of the sampler (``None``: torch's global RNG).

    Computed in float64.

    References:
        Neal (2001), "Annealed importance sampling"; Salakhutdinov & Murray (2008), "On the
        quantitative analysis of deep belief networks"; Burda, Grosse & Salakhutdinov (2015),
        "Accurate and conservative estimates of MRF log-likelihood using reverse annealing".
    """
    own_path = callable(getattr(model, "annealing_path", None))
    if not (own_path or getattr(model, "has_rbm_energy", False)):
        raise InferenceError(f"ais anneals the RBM energy -b.v - c.h - v.W.h or a path the "
                             f"model provides (annealing_path), got {type(model).__name__} "
                             "with neither (has_rbm_energy is false); use exact_log_partition "
                             "for other energies")
    if not isinstance(num_runs, int) or num_runs < 2:
        raise ConfigError(f"num_runs must be an int >= 2, got {num_runs!r}")
    if isinstance(reverse_burn_in, bool) or not isinstance(reverse_burn_in, int) \
            or reverse_burn_in < 0:
        raise ConfigError(f"reverse_burn_in must be an int >= 0, got {reverse_burn_in!r}")
    if betas is None:
        betas = ais_schedule(num_betas)
    else:
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.dim() != 1 or betas.numel() < 2 or betas[0] != 0 or betas[-1] != 1 \
                or not (betas.diff() > 0).all():  # "not all >" also refuses NaN
            raise ConfigError("betas must be increasing from 0 to 1, e.g. ais_schedule(1000)")
    with torch.no_grad():
        dev = next(model.parameters()).device
        gen = None if seed is None else torch.Generator(device=dev).manual_seed(seed)
        if getattr(model, "has_rbm_energy", False):  # the RBM path anneals free energies
            chain, log_z_base = _base_rate_path(model, num_runs, gen, base_data)
        else:
            chain, log_z_base = model.annealing_path(num_runs, gen, base_data)
        bl = betas.tolist()
        log_w = torch.zeros(num_runs, dtype=torch.float64, device=dev)
        for k in range(1, len(bl)):
            log_w += chain.log_ratio(bl[k], bl[k - 1])
            if k < len(bl) - 1:
                chain.step(bl[k])
        result = _summarize(log_w.cpu(), log_z_base.cpu(), +1, len(bl), "forward")
        if not torch.isfinite(result.log_z):
            raise InferenceError(f"AIS produced log Z = {float(result.log_z)}; the parameters "
                                 "may be non-finite")
        if not reverse:
            return result

        if reverse_init is not None:
            chain.set(model.check_visible(reverse_init, name="reverse_init").to(torch.float64))
        else:
            for _ in range(reverse_burn_in):
                chain.step(1.0)
        log_w = torch.zeros(chain.v.shape[0], dtype=torch.float64, device=dev)
        for k in range(len(bl) - 1, 0, -1):
            log_w += chain.log_ratio(bl[k - 1], bl[k])
            if k > 1:
                chain.step(bl[k - 1])
        result.reverse = _summarize(log_w.cpu(), log_z_base.cpu(), -1, len(bl), "reverse")
        return result
