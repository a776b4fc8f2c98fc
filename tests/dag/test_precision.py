"""Python-number evidence on gaussian() nodes keeps float64 precision; float32 models stay
float32."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pgm_lab.dag import DAG, cpt, gaussian, node

F64 = torch.float64


def _chain() -> DAG:
    # a ~ N(0, 1), b = a + N(0, 1): a | b ~ N(b / 2, 1 / 2)
    return DAG({"a": gaussian([], []), "b": gaussian(["a"], [1.0])})


@pytest.mark.parametrize("value", [0.1, [0.1, -0.3, 2.7]])
def test_conditioned_and_direct_evidence_give_the_same_float64_posterior(value):
    dag = _chain()
    conditioned = dag.condition({"b": value})
    assert conditioned.evidence["b"].dtype == F64
    got = conditioned.posterior(["a"])["a"]
    direct = dag.posterior(["a"], {"b": value})["a"]
    assert got.loc.dtype == direct.loc.dtype == F64
    torch.testing.assert_close(got.loc, direct.loc, atol=1e-15, rtol=0)
    torch.testing.assert_close(got.scale, direct.scale, atol=1e-15, rtol=0)
    exact = torch.as_tensor(value, dtype=F64) / 2
    torch.testing.assert_close(got.loc, exact, atol=1e-15, rtol=0)
    torch.testing.assert_close(conditioned.log_evidence(), dag.log_evidence({"b": value}),
                               atol=1e-15, rtol=0)


def test_conditional_linear_gaussian_evidence_keeps_float64():
    # d ~ Cat(0.3, 0.7), x | d ~ N(mu_d, 1): p(d | x) from the two exact densities
    dag = DAG({"d": cpt([], [0.3, 0.7]),
               "x": gaussian(["d"], torch.zeros(2, 0), intercept=[0.0, 1.0], discrete=["d"])})
    assert dag.condition({"x": 0.1}).evidence["x"].dtype == F64
    got = dag.condition({"x": 0.1}).posterior("d")["d"]
    direct = dag.posterior("d", {"x": 0.1})["d"]
    torch.testing.assert_close(got, direct, atol=1e-15, rtol=0)
    x = torch.tensor(0.1, dtype=F64)
    joint = torch.stack([math.log(0.3) + dist.Normal(0.0, 1.0).log_prob(x),
                         math.log(0.7) + dist.Normal(1.0, 1.0).log_prob(x)])
    torch.testing.assert_close(got, joint.softmax(-1), atol=1e-15, rtol=0)


def test_log_prob_and_do_with_python_numbers_on_gaussian_nodes():
    dag = _chain()
    a, b = torch.tensor([0.1], dtype=F64), torch.tensor([0.3], dtype=F64)
    expected = dist.Normal(0.0, 1.0).log_prob(a) + dist.Normal(a, 1.0).log_prob(b)
    torch.testing.assert_close(dag.log_prob({"a": [0.1], "b": [0.3]}), expected,
                               atol=1e-15, rtol=0)
    # an intervened gaussian node keeps float64 values: 0.1 is its own value, not 0.1f
    cut = dag.do({"a": 0.1})
    torch.testing.assert_close(cut.log_prob({"a": [0.1], "b": [0.3]}),
                               dist.Normal(a, 1.0).log_prob(b), atol=1e-15, rtol=0)


def test_a_float32_neural_model_still_runs_on_conditioned_evidence():
    net = torch.nn.Linear(1, 1)
    dag = DAG({"z": dist.Normal(0.0, 1.0),
               "x": node(lambda z: dist.Normal(net(z.unsqueeze(-1)).squeeze(-1), 1.0), ["z"])})
    conditioned = dag.condition({"x": 0.3})
    assert conditioned.evidence["x"].dtype == torch.float32
    draws = conditioned.sample(5, seed=0)
    assert draws["z"].dtype == draws["x"].dtype == torch.float32
    assert torch.equal(draws["x"], torch.full((5,), 0.3))
    tr = pyro.poutine.trace(conditioned.model).get_trace()
    lp = tr.log_prob_sum()
    assert lp.dtype == torch.float32 and torch.isfinite(lp)
    z = tr.nodes["z"]["value"]
    expected = (dist.Normal(0.0, 1.0).log_prob(z)
                + dist.Normal(net(z.unsqueeze(-1)).squeeze(-1), 1.0).log_prob(torch.tensor(0.3)))
    torch.testing.assert_close(lp, expected.sum())
    got = dag.log_prob({"z": [0.1, 0.2], "x": [0.3, 0.4]})
    assert got.dtype == torch.float32 and got.shape == (2,)
