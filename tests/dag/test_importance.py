import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pgm_lab.dag import DAG, ImportanceResult, cpt, read_bif
from pgm_lab.errors import ConfigError, DAGError, InferenceError

Z = 3.0  # |estimate - exact| / stderr


def _linear_gaussian():
    # a ~ N(0, 1); b | a ~ N(2a + 1, 0.5^2); c | b ~ N(-b, 1)  =>  c ~ N(-1, 4 + 0.25 + 1)
    return DAG({"a": dist.Normal(0.0, 1.0), "b": lambda a: dist.Normal(2.0 * a + 1.0, 0.5),
                "c": lambda b: dist.Normal(-b, 1.0)}), dist.Normal(-1.0, math.sqrt(5.25))


def test_likelihood_weighting_converges_to_exact_on_discrete_networks():
    dag = read_bif("alarm")
    sample = dag.sample(4, seed=11)
    evidence = {v: sample[v] for v in ("HR", "BP", "CVP", "HISTORY")}
    exact = dag.log_evidence(evidence)
    res = dag.log_evidence(evidence, method="importance", num_samples=20_000, seed=0,
                           return_info=True)
    assert isinstance(res, ImportanceResult)
    assert res.log_evidence.shape == res.stderr.shape == res.ess.shape == (4,)
    assert res.log_weights.shape == (20_000, 4)
    assert torch.all((res.log_evidence - exact).abs() < Z * res.stderr)
    assert torch.all(res.ess > 100) and torch.all(res.ess <= 20_000)
    # the tensor API returns the estimate itself
    single = {k: int(v[0]) for k, v in evidence.items()}
    est = dag.log_evidence(single, method="importance", num_samples=20_000, seed=1)
    assert est.shape == () and est.dtype == torch.float64


def test_linear_gaussian_matches_closed_form_with_prior_and_with_guide():
    dag, marginal = _linear_gaussian()
    c = torch.tensor([0.7, -3.0, 2.5])
    exact = marginal.log_prob(c).double()
    res = dag.log_evidence({"c": c}, method="importance", num_samples=50_000, seed=0,
                           return_info=True)
    assert torch.all((res.log_evidence - exact).abs() < Z * res.stderr)

    def broad_guide():
        with pyro.plate("data", 3):
            a = pyro.sample("a", dist.Normal(-0.2 * c, 1.0))
            pyro.sample("b", dist.Normal(2.0 * a + 1.0, 0.7))

    res_g = dag.log_evidence({"c": c}, method="importance", num_samples=50_000, seed=0,
                             guide=broad_guide, return_info=True)
    assert torch.all((res_g.log_evidence - exact).abs() < Z * res_g.stderr)

    def exact_posterior_guide():
        # b | c: precision 1/4.25 + 1; a | b: precision 1 + 4 / 0.25 = 17
        prec_b = 1 / 4.25 + 1
        with pyro.plate("data", 3):
            b = pyro.sample("b", dist.Normal((1 / 4.25 - c) / prec_b, prec_b**-0.5))
            pyro.sample("a", dist.Normal(8.0 * (b - 1.0) / 17.0, 17**-0.5))

    res_x = dag.log_evidence({"c": c}, method="importance", num_samples=2_000, seed=0,
                             guide=exact_posterior_guide, return_info=True)
    # with the exact posterior as proposal every weight equals p(c)
    torch.testing.assert_close(res_x.log_evidence, exact, atol=1e-4, rtol=0)
    assert torch.all(res_x.ess > 0.999 * 2_000) and torch.all(res_x.stderr < 1e-4)


def test_importance_errors():
    dag, _ = _linear_gaussian()
    with pytest.raises(DAGError, match="needs evidence"):
        dag.log_evidence({}, method="importance")
    with pytest.raises(ConfigError, match="return_info=True needs method='importance'"):
        read_bif("asia").log_evidence({"xray": "yes"}, return_info=True)
    with pytest.raises(ConfigError, match="method must be"):
        dag.log_evidence({"c": 0.0}, method="exactly")

    def partial_guide():
        pyro.sample("a", dist.Normal(0.0, 1.0))

    with pytest.raises(DAGError, match="does not sample \\['b'\\]"):
        dag.log_evidence({"c": 0.0}, method="importance", guide=partial_guide, num_samples=10)
    for bad in (0, True, 2.5):  # True was a TypeError deep inside the sampler
        with pytest.raises(ConfigError, match="expected num_samples to be a positive int"):
            dag.log_evidence({"c": 0.0}, method="importance", num_samples=bad)
    import numpy as np

    assert dag.log_evidence({"c": 0.0}, method="importance", num_samples=np.int64(5)).shape == ()


def test_vector_valued_evidence_is_one_row_not_a_batch():
    # x | z ~ N(z * mu, I_2): one observation x [2] is one evidence row (event shape [2])
    mu = torch.tensor([1.0, -1.0], dtype=torch.float64)
    dag = DAG({"z": cpt([], [0.3, 0.7]),
               "x": lambda z: dist.Normal(z.unsqueeze(-1).double() * mu, 1.0).to_event(1)})
    x = torch.tensor([0.8, -0.5], dtype=torch.float64)

    def exact(x):
        lik = torch.stack([dist.Normal(z * mu, 1.0).to_event(1).log_prob(x) for z in (0, 1)])
        return torch.logsumexp(lik + torch.tensor([0.3, 0.7]).log().double(), 0)

    res = dag.log_evidence({"x": x}, method="importance", num_samples=4000, seed=0,
                           return_info=True)
    assert res.log_evidence.shape == ()
    assert abs(float(res.log_evidence - exact(x))) / float(res.stderr) < Z
    both = dag.log_evidence({"x": torch.stack([x, -x])}, method="importance",
                            num_samples=10, seed=0)
    assert both.shape == (2,)
    # the Pyro program observes one row, not one per coordinate
    cond = dag.condition({"x": x})
    tr = pyro.poutine.trace(cond.model).get_trace()
    assert tr.nodes["x"]["value"].shape == (1, 2)
    z = tr.nodes["z"]["value"]
    expected = dag.log_prob({"z": z, "x": x.unsqueeze(0)}).sum()
    torch.testing.assert_close(tr.log_prob_sum().double(), expected.double())
    assert cond.sample(3, seed=0)["x"].shape == (3, 2)


def _tiny():
    # p(x = 1 | z) = [1, 3] * 1e-300 and p(y = 1 | z) = [1, 3] * 1e-300 (a Bernoulli callable):
    # torch's log_prob clamps these probabilities at machine epsilon (log eps = -36.04)
    tiny = torch.tensor([1e-300, 3e-300], dtype=torch.float64)
    return DAG({"z": cpt([], [0.5, 0.5]), "x": cpt(["z"], torch.stack([1 - tiny, tiny], 1)),
                "y": lambda z: dist.Bernoulli(probs=tiny[z])})


def _categorical_guide(name, probs):
    def guide():
        pyro.sample(name, dist.Categorical(torch.tensor(probs, dtype=torch.float64)))

    return guide


def test_log_weights_are_not_clamped_at_machine_epsilon():
    dag = _tiny()
    # p(z | e) is [1, 3] / 4, resp. [1, 9] / 10: with it as the guide every weight is p(e)
    for ev, exact, post in (({"x": 1, "y": 0.0}, math.log(2e-300), [0.25, 0.75]),  # was -36.04
                            ({"x": 1, "y": 1.0}, math.log(5) - 600 * math.log(10),  # 5e-600
                             [0.1, 0.9])):
        torch.testing.assert_close(dag.log_evidence(ev), torch.tensor(exact, dtype=torch.float64))
        res = dag.log_evidence(ev, method="importance", num_samples=4000, seed=0,
                               return_info=True)
        assert abs(float(res.log_evidence) - exact) < Z * float(res.stderr)

        guided = dag.log_evidence(ev, method="importance", num_samples=100, seed=0,
                                  guide=_categorical_guide("z", post), return_info=True)
        torch.testing.assert_close(guided.log_weights, torch.full(
            (100,), exact, dtype=torch.float64), atol=1e-9, rtol=0)


def test_impossible_evidence_is_an_error_not_a_number():
    dag = DAG({"z": cpt([], [0.5, 0.5]), "x": cpt(["z"], [[1.0, 0.0], [1.0, 0.0]]),
               "y": lambda z: dist.Bernoulli(probs=torch.tensor([0.0, 0.0])[z])})
    for ev in ({"x": 1}, {"y": 1.0}):  # was log(eps) = -36.04 (or -72.09)
        with pytest.raises(InferenceError, match="all 50 importance weights zero.*probability "
                                                 "zero under the network"):
            dag.log_evidence(ev, method="importance", num_samples=50, seed=0)
    with pytest.raises(InferenceError, match="zero \\(evidence rows \\[1\\]\\)"):
        dag.log_evidence({"x": torch.tensor([0, 1, 0])}, method="importance", num_samples=50)
    with pytest.raises(InferenceError, match="all 50 importance weights zero"):
        dag.log_evidence({"x": 1, "y": 0.0}, method="importance", num_samples=50,
                         guide=_categorical_guide("z", [0.5, 0.5]))


def test_posterior_given_continuous_evidence_is_within_four_standard_errors_of_bayes():
    from pgm_lab.dag.importance import PosteriorEstimate

    dag = DAG({"a": cpt([], [0.2, 0.5, 0.3]),
               "x": lambda a: dist.Normal(1.5 * a.double(), 1.0)})
    x = torch.tensor([-0.5, 0.7, 1.6, 3.5], dtype=torch.float64)
    est = dag.posterior("a", {"x": x}, method="importance", num_samples=20_000, seed=0)["a"]
    assert isinstance(est, PosteriorEstimate) and est.probs.shape == (4, 3)
    prior = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    lik = torch.exp(-0.5 * (x[:, None] - 1.5 * torch.arange(3.0, dtype=torch.float64)) ** 2)
    exact = prior * lik / (prior * lik).sum(-1, keepdim=True)
    z = (est.probs - exact).abs() / est.stderr
    assert bool((z < 4).all()), z
    torch.testing.assert_close(est.probs.sum(-1), torch.ones(4, dtype=torch.float64))
    assert bool((est.ess > 1000).all())


def test_importance_posterior_errors():
    dag = DAG({"a": cpt([], [0.5, 0.5]), "x": lambda a: dist.Normal(a.double(), 1.0)})
    with pytest.raises(DAGError, match="needs evidence"):
        dag.posterior("a", method="importance")
    with pytest.raises(DAGError, match="unobserved query"):
        dag.posterior("a", {"a": 1, "x": 0.0}, method="importance")
    with pytest.raises(DAGError, match="not discrete"):
        dag.posterior("x", {"a": 1}, method="importance")
    with pytest.raises(ConfigError, match="'exact' or 'importance'"):
        dag.posterior("a", {"x": 0.0}, method="lw")
