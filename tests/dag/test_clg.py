import math

import pytest
import torch
from torch.distributions import Normal

from pgm_lab.dag import DAG, cpt, gaussian
from pgm_lab.dag.clg import MAX_CONFIGURATIONS
from pgm_lab.errors import DAGError, InferenceError

PA = torch.tensor([0.3, 0.7], dtype=torch.float64)
PB = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]], dtype=torch.float64)
F64 = torch.float64
MX, SX = torch.tensor([-1.0, 2.0], dtype=F64), torch.tensor([0.8, 1.5], dtype=F64)  # x | a
CY = torch.tensor([0.0, 1.0, -2.0], dtype=F64)  # y | b, x: intercept, weight, scale
WY, SY = torch.tensor([1.5, -0.5, 0.3], dtype=F64), torch.tensor([0.5, 1.0, 0.7], dtype=F64)


def _network():
    """a -> b, a -> x (CLG), (b, x) -> y (CLG: b selects y's regression on x)."""
    return DAG({"a": cpt([], PA), "b": cpt(["a"], PB),
                "x": gaussian(["a"], [], intercept=MX, scale=SX, discrete=["a"]),
                "y": gaussian(["b", "x"], WY.unsqueeze(-1), intercept=CY, scale=SY,
                              discrete=["b"])})


def _brute_force(y):
    """p(a, b | y) and log p(y) by Simpson's rule over x (error O(h^4), h = 5e-4; the
    integrands are negligible outside [-15, 15]), independent of the Gaussian algebra."""
    x = torch.linspace(-15, 15, 60_001, dtype=torch.float64)
    simpson = torch.ones_like(x)
    simpson[1:-1:2], simpson[2:-1:2] = 4.0, 2.0
    simpson *= (x[1] - x[0]) / 3
    joint = torch.zeros(2, 3, dtype=torch.float64)
    for a in range(2):
        for b in range(3):
            f = (Normal(MX[a], SX[a]).log_prob(x).exp()
                 * Normal(CY[b] + WY[b] * x, SY[b]).log_prob(torch.tensor(y, dtype=F64)).exp())
            joint[a, b] = PA[a] * PB[a, b] * (simpson * f).sum()
    return joint / joint.sum(), joint.sum().log()


def test_conditional_gaussian_selects_rows_in_sampling_and_log_prob():
    dag = _network()
    s = dag.sample(20_000, seed=0)
    for b in range(3):  # y - w_b x - c_b ~ N(0, s_b) within each b
        r = (s["y"] - WY[b] * s["x"] - CY[b])[s["b"] == b]
        n = r.numel()
        assert abs(float(r.mean())) < 4 * float(SY[b]) / math.sqrt(n)
        assert abs(float(r.std()) / float(SY[b]) - 1) < 4 / math.sqrt(2 * n)
    v = {"a": 1, "b": 2, "x": 0.5, "y": -1.0}
    x, y = torch.tensor(0.5, dtype=F64), torch.tensor(-1.0, dtype=F64)
    want = (PA[1].log() + PB[1, 2].log() + Normal(MX[1], SX[1]).log_prob(x)
            + Normal(CY[2] + WY[2] * x, SY[2]).log_prob(y))
    torch.testing.assert_close(dag.log_prob(v).double(), want)


def test_exact_posterior_of_discrete_nodes_matches_numerical_integration_batched():
    dag = _network()
    ys = [-2.0, 0.3, 4.0]
    post = dag.posterior(["a", "b"], {"y": torch.tensor(ys, dtype=F64)}, joint=True)
    marg = dag.posterior(["b", "a"], {"y": torch.tensor(ys, dtype=F64)})
    log_z = dag.log_evidence({"y": torch.tensor(ys, dtype=F64)})
    assert post.shape == (3, 2, 3)
    for i, y in enumerate(ys):
        ref, ref_log_z = _brute_force(y)
        torch.testing.assert_close(post[i], ref, atol=1e-9, rtol=0)
        torch.testing.assert_close(marg["a"][i], ref.sum(1), atol=1e-9, rtol=0)
        torch.testing.assert_close(marg["b"][i], ref.sum(0), atol=1e-9, rtol=0)
        torch.testing.assert_close(log_z[i], ref_log_z, atol=1e-9, rtol=0)
    # discrete evidence with continuous evidence: p(a | b=1, y) from the same joint
    ref, _ = _brute_force(0.3)
    got = dag.posterior("a", {"b": 1, "y": 0.3})["a"]
    torch.testing.assert_close(got, ref[:, 1] / ref[:, 1].sum(), atol=1e-9, rtol=0)


def test_exact_posterior_agrees_with_importance_sampling_within_standard_errors():
    dag = _network()
    exact = dag.posterior("b", {"y": 0.3})["b"]
    est = dag.posterior("b", {"y": 0.3}, method="importance", num_samples=40_000, seed=1)["b"]
    assert bool(((est.probs - exact).abs() < 4 * est.stderr).all()), (est, exact)


def test_a_discrete_parent_without_discrete_enters_as_its_index_in_exact_inference():
    dag = DAG({"a": cpt([], PA), "x": gaussian(["a"], [2.0], intercept=-1.0, scale=1.0)})
    lik = Normal(torch.tensor([-1.0, 1.0], dtype=torch.float64), 1.0).log_prob(
        torch.tensor(0.4, dtype=torch.float64)).exp() * PA
    torch.testing.assert_close(dag.posterior("a", {"x": 0.4})["a"], lik / lik.sum())


def test_errors_name_the_node_and_the_expected_shape():
    with pytest.raises(DAGError, match=r"expected coef of shape \[card\(b\), 1\]"):
        gaussian(["b", "x"], [1.0], discrete=["b"])
    with pytest.raises(DAGError, match="discrete must name parents"):
        gaussian(["x"], [1.0], discrete=["b"])
    with pytest.raises(DAGError, match=r"node 'x'.*expected coef of shape \(2, 0\)"):
        DAG({"a": cpt([], PA), "x": gaussian(["a"], [], intercept=[0.0, 1, 2], discrete=["a"])})
    with pytest.raises(DAGError, match=r"node 'y'.*expected discrete parents"):
        DAG({"x": gaussian([], []), "y": gaussian(["x"], [], intercept=[0.0, 1.0], discrete=["x"])})
    with pytest.raises(DAGError, match="scale must be positive"):
        gaussian(["a"], [], scale=[1.0, -1.0], discrete=["a"])
    many = {f"d{i}": cpt([], [0.5, 0.5]) for i in range(int(math.log2(MAX_CONFIGURATIONS)) + 1)}
    many["y"] = gaussian(["d0"], [], intercept=[0.0, 1.0], discrete=["d0"])
    many["z"] = gaussian(list(many)[1:-1] + ["y"], [1.0] * (len(many) - 1))
    with pytest.raises(InferenceError, match="configurations"):
        DAG(many).posterior("d0", {"z": 0.0})
