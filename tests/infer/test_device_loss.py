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


def test_a_log_density_given_as_a_python_number_is_summed_in_float64():
    # Pyro's sum takes a Python number as is (torch_item); 0.1 is not a float32 number, so a
    # detour through torch.as_tensor (float32) would change the value
    from pgm_lab.infer.device_loss import _particle

    pyro.set_rng_seed(0)
    elbo = Trace_ELBO(max_plate_nesting=1)
    [(model_trace, guide_trace)] = elbo._get_traces(model, guide, (torch.tensor([0.3, 2.1]),), {})
    model_trace.nodes["x"]["log_prob_sum"] = 0.1
    ours, _surrogate = _particle(model_trace, guide_trace)
    assert ours.dtype == torch.float64
    assert ours.item() == elbo._differentiable_loss_particle(model_trace, guide_trace)[0]


def _factor_model(x):
    model(x)
    pyro.factor("f", -0.5 * pyro.param("loc") ** 2)


def _masked_model(x):
    w = pyro.sample("w", dist.Normal(0.0, 1.0))
    with pyro.plate("data", x.shape[0]):
        c = pyro.sample("c", dist.Bernoulli(0.3))
        with pyro.poutine.mask(mask=torch.tensor([True, False, True, True])):
            pyro.sample("x", dist.Normal(w + 2.0 * c, 1.0), obs=x)
    with pyro.poutine.mask(mask=False):
        pyro.sample("y", dist.Normal(0.0, 1.0), obs=torch.tensor(0.5))


def _subsampled(program):
    def run(x):
        with pyro.plate("data", 4, subsample_size=2) as idx:
            if program == "model":
                c = pyro.sample("c", dist.Bernoulli(0.3))
                pyro.sample("x", dist.Normal(2.0 * c, 1.0), obs=x[idx])
            else:
                pyro.sample("c", dist.Bernoulli(logits=pyro.param("logits", torch.zeros(4))[idx]))
    return run


def _scaled(fn):
    return pyro.poutine.scale(fn, scale=3.7)


def _fixed_guide(x):  # no parameters
    pyro.sample("w", dist.Normal(0.1, 0.7))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("c", dist.Bernoulli(0.5))


def _float64_model(x):
    model(x.double())


def _float64_guide(x):
    pyro.sample("w", dist.Normal(pyro.param("loc", torch.tensor(0.2, dtype=torch.float64)), 0.7))
    with pyro.plate("data", x.shape[0]):
        logits = pyro.param("logits", torch.zeros(x.shape[0], dtype=torch.float64))
        pyro.sample("c", dist.Bernoulli(logits=logits))


@pytest.mark.parametrize("case", [
    (_factor_model, guide, {}),
    (_masked_model, guide, {}),
    (_masked_model, guide, {"num_particles": 3, "vectorize_particles": True}),
    (_scaled(model), _scaled(guide), {}),
    (_subsampled("model"), _subsampled("guide"), {}),
    (model, _fixed_guide, {}),
    (_float64_model, _float64_guide, {"num_particles": 2}),
    (model, guide, {"retain_graph": True}),
], ids=["factor", "mask", "mask-vectorized", "scale", "subsample", "guide-without-params",
        "float64", "retain_graph"])
def test_value_and_gradients_equal_pyro_on_factors_masks_scales_and_subsamples(case):
    model_fn, guide_fn, options = case
    options = {"max_plate_nesting": 1, **options}
    ours, our_grads = _value_and_grads(
        lambda x: trace_elbo_loss_and_grads(Trace_ELBO(**options), model_fn, guide_fn, x))
    pyros, pyro_grads = _value_and_grads(
        lambda x: Trace_ELBO(**options).loss_and_grads(model_fn, guide_fn, x))
    assert ours.item() == pyros
    assert set(our_grads) == set(pyro_grads)
    for name, g in pyro_grads.items():
        torch.testing.assert_close(our_grads[name], g, rtol=0, atol=0, msg=name)
