"""The energy-model base: its Pyro program and the unnormalized observation distribution."""

import pyro
import pytest
import torch
from torch.testing import assert_close

from pgm_lab.errors import ConfigError, DataError
from pgm_lab.rbm import EnergyDistribution, EnergyModel

from ._oracle import all_states, random_rbm


def test_forward_traces_params_and_an_unnormalized_observation():
    rbm = random_rbm(4, 3, 1.0, 0)
    v = all_states(4)
    trace = pyro.poutine.trace(rbm).get_trace(v)
    params = [n for n, s in trace.nodes.items() if s["type"] == "param"]
    assert params == ["rbm.W", "rbm.b", "rbm.c"]
    site = trace.nodes["v"]
    assert site["is_observed"] and isinstance(site["fn"], EnergyDistribution)
    assert site["fn"].batch_shape == (16,) and site["fn"].event_shape == (4,)
    assert_close(site["fn"].log_prob(v), -rbm.free_energy(v))
    # the normalized log-probability differs by exactly log Z
    assert_close(rbm.log_prob(v), (-rbm.free_energy(v) - rbm.log_partition()).detach())


def test_energy_distribution_cannot_be_sampled_and_checks_sizes():
    d = EnergyDistribution(random_rbm(4, 3, 1.0, 0), (2,))
    with pytest.raises(NotImplementedError, match="GibbsKernel"):
        d.sample()
    with pytest.raises(DataError, match="visible vectors of size 4"):
        d.log_prob(torch.zeros(2, 5, dtype=torch.float64))
    assert d.expand((3, 2)).batch_shape == (3, 2)


def test_base_class_needs_an_energy_and_the_state_for_coupled_units():
    with pytest.raises(TypeError, match="must define energy"):
        EnergyModel(3, 2)

    class Coupled(EnergyModel):
        def energy(self, v, h):
            return -(v[..., 0] * v[..., 1]) - (h.sum(-1) * v.sum(-1))

    model = Coupled(3, 2)
    with pytest.raises(ConfigError, match="needs the current visible state"):
        model.sample_v(torch.zeros(5, 2))
    with pytest.raises(NotImplementedError, match="coupled visible units"):
        model.visible_logits(torch.zeros(5, 2))
