"""SVI losses whose value stays on the device: a training step that never waits for the GPU.

:meth:`pyro.infer.Trace_ELBO.loss_and_grads` returns the loss as a Python float, built by
reading every sample site's log density to the host (``torch_item``, one synchronisation
per site); on a GPU each read waits for the queue of kernels to drain, so a step of a small
model is dominated by idle time. :func:`device_loss_and_grads` gives, for a loss that can do
without, a function computing the same value and the same gradients with the value kept as a
0-d tensor on the model's device; :func:`pgm_lab.train.fit` sums those on the device and reads
the sum once per window of steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pyro.distributions.util import is_identically_zero
from pyro.infer import Trace_ELBO
from pyro.infer.trace_elbo import _compute_log_r
from pyro.poutine import Trace

__all__ = ["device_loss_and_grads", "trace_elbo_loss_and_grads"]

LossAndGrads = Callable[..., torch.Tensor]


def device_loss_and_grads(loss: Any) -> LossAndGrads | None:
    """``f(model, guide, *args, **kwargs) -> torch.Tensor`` for ``loss``, or ``None``.

    ``f`` backpropagates the loss's gradient estimator (accumulating into ``.grad`` as
    ``loss.loss_and_grads`` does) and returns the loss value detached, as a 0-d tensor on
    the device of the model's log densities, without reading any tensor to the host. It is

    * ``loss.loss_and_grads_on_device`` when the loss offers it (e.g.
      :class:`pgm_lab.infer.IWAE`, :class:`pgm_lab.rbm.ContrastiveDivergence`);
    * :func:`trace_elbo_loss_and_grads` for an instance of Pyro's
      :class:`~pyro.infer.Trace_ELBO` itself: the class's algorithm is known, a subclass may
      have changed it, so subclasses are not matched;
    * ``None`` for any other loss: call its ``loss_and_grads`` (a float) instead.
    """
    on_device = getattr(loss, "loss_and_grads_on_device", None)
    if callable(on_device):
        return on_device
    if type(loss) is Trace_ELBO:
        return lambda model, guide, *args, **kwargs: trace_elbo_loss_and_grads(
            loss, model, guide, *args, **kwargs)
    return None


def trace_elbo_loss_and_grads(elbo: Trace_ELBO, model: Callable, guide: Callable, *args: Any,
                              **kwargs: Any) -> torch.Tensor:
    r""":meth:`pyro.infer.Trace_ELBO.loss_and_grads` with the loss returned as a device tensor.

    For particles :math:`z^{(s)} \sim q`, :math:`s = 1..S` (``elbo.num_particles``), the value
    is :math:`-\frac1S \sum_s [\log p(x, z^{(s)}) - \log q(z^{(s)})]` and the gradient that of
    Pyro's surrogate (reparameterized sites by the path derivative, the others by the score
    function with Pyro's plate-wise Rao-Blackwellization; Ranganath, Gerrish & Blei 2014,
    "Black Box Variational Inference"). Traces come from ``elbo``'s own machinery
    (``max_plate_nesting``, vectorized or sequential particles, validation as set in Pyro).

    The sum runs in float64 over the same terms in the same order as Pyro's sum of Python
    floats, so the value equals ``Trace_ELBO().loss_and_grads`` bit for bit; unlike it, no site
    is read to the host and no warning is issued for a NaN (:func:`pgm_lab.train.fit` checks
    the loss when it reads it).

    Returns:
        0-d float64 tensor, detached.
    """
    loss: torch.Tensor | None = None
    for model_trace, guide_trace in elbo._get_traces(model, guide, args, kwargs):
        value, surrogate = _particle(model_trace, guide_trace)
        loss = value / elbo.num_particles if loss is None else loss + value / elbo.num_particles
        trainable = any(site["type"] == "param"
                        for trace in (model_trace, guide_trace) for site in trace.nodes.values())
        if trainable and getattr(surrogate, "requires_grad", False):
            (surrogate / elbo.num_particles).backward(retain_graph=elbo.retain_graph)
    if loss is None:
        return torch.zeros((), dtype=torch.float64)
    return loss


def _particle(model_trace: Trace, guide_trace: Trace) -> tuple[torch.Tensor, Any]:
    """``(-elbo, -surrogate elbo)`` of one particle: Pyro's ``_differentiable_loss_particle``
    with the value summed on the device (Pyro reads each site with ``torch_item``)."""
    value: torch.Tensor | None = None
    surrogate: Any = 0.0
    log_r = None

    def add(total: torch.Tensor | None, term: Any, sign: float) -> torch.Tensor:
        # a Python number (Pyro's torch_item keeps it) goes to float64 directly, not via the
        # float32 of torch.as_tensor
        term = (term.detach().double() if isinstance(term, torch.Tensor)
                else torch.tensor(float(term), dtype=torch.float64)) * sign
        return term if total is None else total + term  # a 0-d tensor joins any device

    for site in model_trace.nodes.values():
        if site["type"] == "sample":
            value = add(value, site["log_prob_sum"], 1.0)
            surrogate = surrogate + site["log_prob_sum"]
    for site in guide_trace.nodes.values():
        if site["type"] == "sample":
            _log_prob, score_function_term, entropy_term = site["score_parts"]
            value = add(value, site["log_prob_sum"], -1.0)
            if not is_identically_zero(entropy_term):
                surrogate = surrogate - entropy_term.sum()
            if not is_identically_zero(score_function_term):
                if log_r is None:
                    log_r = _compute_log_r(model_trace, guide_trace)
                term = log_r.sum_to(site["cond_indep_stack"])
                surrogate = surrogate + (term * score_function_term).sum()
    if value is None:
        value = torch.zeros((), dtype=torch.float64)
    return -value, -surrogate
