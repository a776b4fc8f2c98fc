import warnings

import pytest
import torch
from pyro.distributions import MultivariateNormal, Normal

from pgm_lab.dag import DAG, gaussian
from pgm_lab.dag.lingauss import joint_normal
from pgm_lab.errors import DAGError, InferenceError


def _network(seed=0):
    """x0 -> x2 <- x1, x2 -> x3, x1 -> x4, x3 -> x5 <- x4: random weights and scales."""
    g = torch.Generator().manual_seed(seed)
    parents = {"x0": [], "x1": [], "x2": ["x0", "x1"], "x3": ["x2"], "x4": ["x1"],
               "x5": ["x3", "x4"]}
    spec = {}
    for v, ps in parents.items():
        w = torch.randn(len(ps), generator=g, dtype=torch.float64)
        b, s = torch.randn(2, generator=g, dtype=torch.float64)
        spec[v] = gaussian(ps, w, intercept=float(b), scale=float(s.abs() + 0.5))
    return DAG(spec)


def _pgmpy(dag):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pytest.importorskip("pgmpy")
        from pgmpy.factors.continuous import LinearGaussianCPD
        from pgmpy.models import LinearGaussianBayesianNetwork
    model = LinearGaussianBayesianNetwork(list(dag.edges))
    model.add_nodes_from(dag.nodes)
    for v in dag.nodes:
        nd = dag.spec[v]
        model.add_cpds(LinearGaussianCPD(v, [nd.intercept, *nd.coef.tolist()], nd.scale,
                                         list(nd.parents)))
    return model


def test_joint_normal_matches_pgmpy_and_the_lecture_example():
    dag = DAG({"x1": gaussian([], [], 1.0, 4.0), "x2": gaussian(["x1"], [0.5], -5.0, 4.0),
               "x3": gaussian(["x2"], [-1.0], 4.0, 3.0)})
    mean, cov = joint_normal(dag, list(dag.nodes))
    torch.testing.assert_close(mean, torch.tensor([1.0, -4.5, 8.5], dtype=torch.float64))
    torch.testing.assert_close(cov, torch.tensor([[16.0, 8, -8], [8, 20, -20], [-8, -20, 29]],
                                                 dtype=torch.float64))
    dag = _network()
    model = _pgmpy(dag)
    ref_mean, ref_cov = model.to_joint_gaussian()  # rounded to 8 decimals
    import networkx as nx

    mean, cov = joint_normal(dag, list(nx.topological_sort(model)))  # pgmpy's order
    torch.testing.assert_close(mean, torch.as_tensor(ref_mean), atol=1e-8, rtol=0)
    torch.testing.assert_close(cov, torch.as_tensor(ref_cov), atol=1e-8, rtol=0)


def test_posterior_matches_pgmpy_predict_probability_for_batched_evidence():
    import pandas as pd

    dag = _network()
    x = dag.sample(4, seed=1)
    ev = {"x3": x["x3"], "x4": x["x4"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        names, mu, cov = _pgmpy(dag).predict_probability(
            pd.DataFrame({k: v.numpy() for k, v in ev.items()}))
    post = dag.posterior(names, ev, joint=True)
    assert isinstance(post, MultivariateNormal) and post.batch_shape == (4,)
    torch.testing.assert_close(post.mean, torch.as_tensor(mu), atol=1e-8, rtol=0)
    torch.testing.assert_close(post.covariance_matrix[0], torch.as_tensor(cov), atol=1e-8,
                               rtol=0)
    single = dag.posterior("x0", ev)["x0"]
    assert isinstance(single, Normal) and single.loc.shape == (4,)
    i = names.index("x0")
    torch.testing.assert_close(single.loc, torch.as_tensor(mu[:, i]), atol=1e-8, rtol=0)
    torch.testing.assert_close(single.scale ** 2, torch.as_tensor(cov[i, i]).expand(4),
                               atol=1e-8, rtol=0)


def test_log_evidence_is_the_exact_density_and_importance_sampling_agrees():
    import pandas as pd

    dag = _network()
    x = dag.sample(3, seed=2)
    full = dag.log_evidence(x)
    torch.testing.assert_close(full, dag.log_prob(x), atol=1e-10, rtol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = _pgmpy(dag).log_likelihood(pd.DataFrame({k: v[:1].numpy() for k, v in x.items()}))
    torch.testing.assert_close(full[0], torch.tensor(float(ref), dtype=torch.float64),
                               atol=1e-6, rtol=0)
    ev = {"x5": x["x5"][0]}
    exact = dag.log_evidence(ev)
    res = dag.log_evidence(ev, method="importance", num_samples=20_000, seed=0,
                           return_info=True)
    assert abs(float(res.log_evidence) - float(exact)) < 4 * float(res.stderr)


def test_fit_is_least_squares_and_matches_pgmpy_mle():
    import pandas as pd

    dag = _network()
    data = dag.sample(2000, seed=3)
    fitted = dag.fit(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = _pgmpy(dag)
        model.cpds = []
        model.fit(pd.DataFrame({k: v.numpy() for k, v in data.items()}))
    for v in dag.nodes:
        ref = model.get_cpds(v)
        nd = fitted.spec[v]
        order = [list(ref.evidence).index(p) for p in nd.parents]
        beta = torch.as_tensor(ref.beta, dtype=torch.float64)
        torch.testing.assert_close(nd.intercept, float(beta[0]), atol=1e-8, rtol=0)
        torch.testing.assert_close(nd.coef, beta[1:][order], atol=1e-8, rtol=0)
        # our scale is the maximum-likelihood one: sqrt(mean squared residual)
        y = data[v]
        pred = nd.intercept + sum(c * data[p] for c, p in zip(nd.coef, nd.parents))
        torch.testing.assert_close(nd.scale, float((y - pred).pow(2).mean().sqrt()))


def test_errors():
    with pytest.raises(DAGError, match="needs 1 coef, got 2"):
        gaussian(["a"], [1.0, 2.0])
    with pytest.raises(DAGError, match="positive float"):
        gaussian([], [], scale=0.0)
    dag = DAG({"a": Normal(0.0, 1.0), "b": gaussian(["a"], [1.0])})
    with pytest.raises(InferenceError, match="linear-Gaussian nodes, got \\['a'\\]"):
        dag.posterior("b", {"a": 0.3})
    dag = _network()
    with pytest.raises(DAGError, match="unobserved query"):
        dag.posterior("x3", {"x3": 0.0})
    with pytest.raises(DAGError, match="one batch size"):
        dag.posterior("x0", {"x3": torch.zeros(2), "x4": torch.zeros(3)})


def test_fit_of_a_mixed_network_uses_counts_for_tables_and_least_squares_for_gaussians():
    from pgm_lab.dag import cpt

    dag = DAG({"a": cpt([], [0.3, 0.7], states=["off", "on"]),
               "x": gaussian([], [], intercept=1.0, scale=0.5),
               "y": gaussian(["x", "a"], [2.0, -1.0], intercept=0.5, scale=0.3),
               "b": cpt(["a"], [[0.9, 0.1], [0.4, 0.6]])})
    data = dag.sample(4000, seed=4)
    fitted = dag.fit(data)  # auto: closed form
    a, b = data["a"], data["b"]
    torch.testing.assert_close(fitted.tables(["a"])["a"][1], a.double().mean())
    torch.testing.assert_close(fitted.tables(["b"])["b"][1, 1], b[a == 1].double().mean())
    y = data["y"]
    design = torch.stack([torch.ones_like(y), data["x"], a.double()], -1)
    beta = torch.linalg.lstsq(design, y.unsqueeze(-1)).solution.squeeze(-1)
    nd = fitted.spec["y"]
    torch.testing.assert_close(nd.coef, beta[1:])
    torch.testing.assert_close(nd.intercept, float(beta[0]))
    names = {**data, "a": [dag.states("a")[int(i)] for i in a]}  # state names work too
    torch.testing.assert_close(dag.fit(names).spec["y"].coef, beta[1:])


def test_fit_of_conditional_gaussian_nodes_is_least_squares_per_discrete_configuration():
    from pgm_lab.dag import cpt

    dag = DAG({"a": cpt([], [0.4, 0.6]), "b": cpt(["a"], [[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]]),
               "x": gaussian(["a"], [], intercept=[-1.0, 2.0], scale=[0.8, 1.5], discrete=["a"]),
               "y": gaussian(["b", "x"], [[1.5], [-0.5], [0.3]], intercept=[0.0, 1.0, -2.0],
                             scale=[0.5, 1.0, 0.7], discrete=["b"])})
    data = dag.sample(3000, seed=5)
    fitted = dag.fit(data)  # auto: closed form, tables by counts
    nd = fitted.spec["y"]
    assert nd.discrete == ("b",) and nd.coef.shape == (3, 1)
    for b in range(3):
        rows = data["b"] == b
        y, x = data["y"][rows], data["x"][rows].double()
        design = torch.stack([torch.ones_like(y), x], -1)
        beta = torch.linalg.lstsq(design, y.unsqueeze(-1)).solution.squeeze(-1)
        torch.testing.assert_close(nd.coef[b], beta[1:])
        torch.testing.assert_close(nd.intercept[b], beta[0])
        torch.testing.assert_close(nd.scale[b], (y - design @ beta).pow(2).mean().sqrt())
    for a in range(2):
        x = data["x"][data["a"] == a].double()
        torch.testing.assert_close(fitted.spec["x"].intercept[a], x.mean())
    torch.testing.assert_close(fitted.tables(["a"])["a"][1], data["a"].double().mean())
    few = {k: v[:4] for k, v in data.items()}
    with pytest.raises(DAGError, match=r"fitting '[xy]' where \{'[ab]': \d\} by least squares"):
        dag.fit(few, method="closed-form")
