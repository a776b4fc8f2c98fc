import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pgm_lab.dag import DAG, cpt
from pgm_lab.dag.logprob import exact_log_prob

F64 = torch.float64


@pytest.mark.parametrize("d, value, expected", [
    # torch's log_prob gives log(eps) = -36.04 for the first two, and -36.04 instead of -inf
    (dist.Categorical(probs=torch.tensor([1.0, 1e-300], dtype=F64)), 1, math.log(1e-300)),
    (dist.Bernoulli(probs=torch.tensor(1e-300, dtype=F64)), 1.0, math.log(1e-300)),
    (dist.Bernoulli(probs=torch.tensor(1e-300, dtype=F64)), 0.0, -1e-300),  # log1p(-p)
    (dist.Categorical(probs=torch.tensor([1.0, 0.0], dtype=F64)), 1, -math.inf),
    (dist.Bernoulli(probs=torch.tensor(1.0, dtype=F64)), 0.0, -math.inf),
    (dist.Categorical(probs=torch.tensor([3.0, 1.0], dtype=F64)), 1, math.log(0.25)),  # normalized
    # built from logits: their own log_prob, already exact
    (dist.Categorical(logits=torch.tensor([0.0, -800.0], dtype=F64)), 1, -800.0),
    (dist.Normal(torch.tensor(0.0, dtype=F64), 1.0), 0.0, -0.5 * math.log(2 * math.pi)),
])
def test_exact_log_prob_takes_the_log_of_the_probabilities(d, value, expected):
    got = exact_log_prob(d, torch.tensor(value))
    torch.testing.assert_close(got, torch.tensor(expected, dtype=F64), atol=0, rtol=1e-12)


def test_batches_events_and_support_checks_follow_torch():
    probs = torch.tensor([[0.2, 0.8], [0.6, 0.4]], dtype=F64)
    cat = dist.Categorical(probs=probs)
    v = torch.tensor([[1, 0], [0, 0], [1, 1]])  # [3, 2] against batch [2]
    torch.testing.assert_close(exact_log_prob(cat, v), cat.log_prob(v))
    bern = dist.Bernoulli(probs=torch.full((4, 3), 1e-300, dtype=F64))
    ones = torch.ones(4, 3, dtype=F64)
    for event_dims, shape in ((0, (4, 3)), (1, (4,)), (2, ())):
        torch.testing.assert_close(exact_log_prob(dist.Independent(bern, event_dims), ones),
                                   torch.full(shape, 12 / math.prod(shape) * math.log(1e-300),
                                              dtype=F64))
    with pytest.raises(ValueError, match="support"):
        exact_log_prob(cat, torch.tensor([2, 0]))


def test_dag_log_prob_is_not_clamped_at_machine_epsilon():
    tiny = torch.tensor([1e-300, 3e-300], dtype=F64)
    dag = DAG({"z": cpt([], [0.5, 0.5]), "x": cpt(["z"], torch.stack([1 - tiny, tiny], 1)),
               "y": lambda z: dist.Bernoulli(probs=tiny[z])})
    lp = dag.log_prob({"z": [0, 1], "x": [1, 1], "y": torch.tensor([1.0, 0.0])})
    expected = torch.tensor([math.log(0.5) + 2 * math.log(1e-300),
                             math.log(0.5) + math.log(3e-300)], dtype=F64)
    torch.testing.assert_close(lp, expected, atol=0, rtol=1e-12)


def _tiny_network() -> DAG:
    return DAG({"a": cpt([], [1 - 1e-12, 1e-12]),
                "b": cpt(["a"], [[0.5, 0.5, 0.0], [0.0, 1e-300, 1.0 - 1e-300]])})


def test_trace_of_the_pyro_program_scores_tables_exactly():
    # Categorical(probs=...) would score log(eps) = -36.04 for the zero and the 1e-300 entry
    dag = _tiny_network()
    data = {"a": torch.tensor([1, 1, 0, 1]), "b": torch.tensor([1, 2, 2, 0])}
    tr = pyro.poutine.trace(dag.model).get_trace(data)
    tr.compute_log_prob()
    lp_a, lp_b = tr.nodes["a"]["log_prob"], tr.nodes["b"]["log_prob"]
    torch.testing.assert_close(lp_a[0], torch.tensor(math.log(1e-12), dtype=F64),
                               atol=0, rtol=1e-9)
    torch.testing.assert_close(lp_b[0], torch.tensor(math.log(1e-300), dtype=F64),
                               atol=0, rtol=1e-9)
    assert lp_b[2] == -math.inf and lp_b[3] == -math.inf  # impossible configurations
    assert tr.log_prob_sum() == -math.inf
    # the same numbers as DAG.log_prob
    torch.testing.assert_close(lp_a + lp_b, dag.log_prob(data), atol=0, rtol=1e-12)


def test_pyro_program_draws_are_those_of_the_probability_tables():
    # logits change how sites score, not what they draw: same seed, same states
    spec = {"a": cpt([], [0.2, 0.8]), "b": cpt(["a"], [[0.1, 0.6, 0.3], [0.25, 0.25, 0.5]])}
    dag = DAG(spec)
    for seed in range(5):
        pyro.set_rng_seed(seed)
        tr = pyro.poutine.trace(dag.model).get_trace(size=5000)
        pyro.set_rng_seed(seed)
        a = dist.Categorical(probs=spec["a"].table).expand([5000]).sample()
        b = dist.Categorical(probs=spec["b"].table[a]).sample()
        assert torch.equal(tr.nodes["a"]["value"], a) and torch.equal(tr.nodes["b"]["value"], b)
