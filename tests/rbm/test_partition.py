"""Log-partition estimates: AIS (forward and reverse) against exact enumeration."""

import pytest
import torch
from torch.testing import assert_close

from pgm_lab.errors import ConfigError, InferenceError
from pgm_lab.rbm import RBM, ais, ais_schedule, exact_log_partition

from ._oracle import random_rbm


def test_ais_agrees_with_exact_log_z_on_trained_64x20_rbm(trained_rbm, digits, single_thread):
    rbm, _, _ = trained_rbm
    train, test = digits
    exact = rbm.log_partition("exact")
    res = rbm.log_partition("ais", num_runs=100, num_betas=3000, base_data=train, reverse=True,
                            return_result=True, seed=0)
    for r in (res, res.reverse):
        assert r.log_z_lower <= exact <= r.log_z_upper, (r, float(exact))
        assert abs(float(r.log_z - exact)) < 0.1
    assert res.direction == "forward" and res.reverse.direction == "reverse"
    assert res.log_weights.shape == (100,) and 1 <= res.ess <= 100
    # the log-likelihood with the AIS estimate
    ll_ais = rbm.log_prob(test, log_z=res.log_z).mean()
    assert abs(float(ll_ais - rbm.log_prob(test, log_z=exact).mean())) < 0.1
    d = res.to_dict()
    assert d["num_runs"] == 100 and "reverse" in d


def test_ais_on_random_strong_rbm_and_schedule():
    rbm = random_rbm(10, 6, 1.0, 7)
    res = ais(rbm, num_runs=200, num_betas=1000, seed=1)
    exact = exact_log_partition(rbm)
    # |error| within a few delta-method standard errors
    assert abs(float(res.log_z - exact)) < 4 * float(res.stderr) + 1e-3
    betas = ais_schedule(1000)
    assert betas[0] == 0 and betas[-1] == 1 and (betas.diff() > 0).all() and len(betas) == 1000


def test_exact_refuses_large_layers():
    rbm = RBM(40, 30)
    with pytest.raises(InferenceError, match="2\\^30 states; expected at most 2\\^25"):
        rbm.log_partition()
    with pytest.raises(InferenceError, match="2\\^30"):
        rbm.log_prob(torch.zeros(2, 40))


def test_ais_validation():
    rbm = random_rbm(4, 3, 1.0, 0)
    with pytest.raises(ConfigError, match="num_runs must be"):
        ais(rbm, num_runs=1)
    with pytest.raises(ConfigError, match="betas must be increasing"):
        ais(rbm, betas=torch.tensor([0.0, 0.7, 0.5, 1.0]))
    # a NaN passed the ordering check and surfaced as "the parameters may be non-finite"
    with pytest.raises(ConfigError, match="betas must be increasing"):
        ais(rbm, betas=torch.tensor([0.0, float("nan"), 1.0]))
    with pytest.raises(ConfigError, match="num_betas must be"):
        ais_schedule(3)


def test_ais_with_explicit_betas_and_reverse_init():
    rbm = random_rbm(6, 4, 0.5, 2)
    v = torch.bernoulli(torch.full((50, 6), 0.5, dtype=torch.float64))
    res = ais(rbm, num_runs=50, betas=torch.linspace(0, 1, 500, dtype=torch.float64),
              reverse=True, reverse_init=v, seed=0)
    assert_close(res.log_z, exact_log_partition(rbm), atol=0.05, rtol=0)
    assert res.reverse.log_weights.shape == (50,)


def test_log_partition_and_log_prob_argument_validation():
    rbm = random_rbm(4, 3, 1.0, 0)
    for kwargs, match in (({"chunk_size": 0}, "chunk_size must be an int >= 1, got 0"),
                          ({"max_units": -1}, "max_units must be an int >= 0, got -1"),
                          ({"max_units": 2.5}, "max_units must be an int")):
        with pytest.raises(ConfigError, match=match):
            rbm.log_partition("exact", **kwargs)
    for burn_in in (-3, 2.5, True):  # -3 used to skip the burn-in silently
        with pytest.raises(ConfigError, match="reverse_burn_in must be an int >= 0"):
            ais(rbm, num_betas=20, reverse=True, reverse_burn_in=burn_in)
    # an AISResult stands for its estimate; other objects are refused clearly
    v = torch.tensor([[1.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    res = ais(rbm, num_betas=20)
    torch.testing.assert_close(rbm.log_prob(v, log_z=res), rbm.log_prob(v, log_z=res.log_z))
    with pytest.raises(ConfigError, match="log_z must be a number"):
        rbm.log_prob(v, log_z="12")
