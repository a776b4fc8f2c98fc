"""The on-device Trace_ELBO equals Pyro's: the same value bit for bit, the same gradients."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceGraph_ELBO

from pgm_lab.infer import IWAE
from pgm_lab.infer.device_loss import device_loss_and_grads, trace_elbo_loss_and_grads

pytestmark = pytest.mark.usefixtures("single_thread")


def model(x):
    w = pyro.sample("w", dist.Normal(0.0, 1.0))  # global, reparameterized
    with pyro.plate("data", x.shape[0]):
        c = pyro.sample("c", dist.Bernoulli(0.3))  # local, scored (not reparameterizable)
        pyro.sample("x", dist.Normal(w + 2.0 * c, 1.0), obs=x)


def guide(x):
    loc = pyro.param("loc", torch.tensor(0.2))
    logits = pyro.param("logits", torch.zeros(x.shape[0]))
    pyro.sample("w", dist.Normal(loc, 0.7))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("c", dist.Bernoulli(logits=logits))


def _value_and_grads(run):
    pyro.clear_param_store()
    pyro.set_rng_seed(3)
    x = torch.tensor([0.3, 2.1, -0.4, 1.7])
    with pyro.poutine.trace(param_only=True) as params:
        value = run(x)
    grads = {name: site["value"].unconstrained().grad.clone()
             for name, site in params.trace.nodes.items()}
    return value, grads


@pytest.mark.parametrize("particles,vectorize", [(1, False), (3, False), (3, True)])
def test_value_equals_pyro_bit_for_bit_and_gradients_are_the_same(particles, vectorize):
    def elbo():
        return Trace_ELBO(num_particles=particles, vectorize_particles=vectorize,
                          max_plate_nesting=1)

    ours, our_grads = _value_and_grads(
        lambda x: trace_elbo_loss_and_grads(elbo(), model, guide, x))
    pyros, pyro_grads = _value_and_grads(lambda x: elbo().loss_and_grads(model, guide, x))
    assert isinstance(ours, torch.Tensor) and ours.dim() == 0 and not ours.requires_grad
    assert ours.item() == pyros  # float64 sum of the same terms in the same order
    assert set(our_grads) == {"loc", "logits"} == set(pyro_grads)
    for name, g in pyro_grads.items():
        torch.testing.assert_close(our_grads[name], g, rtol=0, atol=0, msg=name)
    assert pyro_grads["logits"].abs().sum() > 0  # the score-function term took part


def test_a_program_without_sample_sites_has_loss_zero():
    def empty(x):
        pyro.param("p", torch.tensor(1.0))

    value = trace_elbo_loss_and_grads(Trace_ELBO(), empty, empty, torch.zeros(2))
    assert value.item() == 0.0 == Trace_ELBO().loss(empty, empty, torch.zeros(2))


def test_only_losses_whose_algorithm_is_known_run_on_the_device():
    class Tempered(Trace_ELBO):  # a subclass may change the algorithm: not matched
        pass

    iwae = IWAE(2)
    assert device_loss_and_grads(iwae) == iwae.loss_and_grads_on_device
    assert callable(device_loss_and_grads(Trace_ELBO()))
    assert device_loss_and_grads(Tempered()) is None
    assert device_loss_and_grads(TraceGraph_ELBO()) is None
