import math

import numpy as np
import pytest
import torch
from pyro.distributions import Categorical, MixtureSameFamily, MultivariateNormal
from torch.distributions import Normal

from pgm_lab.dag import DAG, clg, cpt, gaussian, lingauss
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


# ---------------------------------------------------------------- continuous queries
NODES = ("x", "y", "z", "u")  # topological order of the continuous nodes of _hybrid()


def _hybrid():
    """_network() plus z = 1 + 2x + 0.5 eps and u = 0.2 + 0.7 a - 0.4 z + 0.9 eps (a enters u
    as its state index)."""
    spec = dict(_network().spec)
    spec["z"] = gaussian(["x"], [2.0], intercept=1.0, scale=0.5)
    spec["u"] = gaussian(["a", "z"], [0.7, -0.4], intercept=0.2, scale=0.9)
    return DAG(spec)


def _hand_normal(a, b):
    """Mean [4] and covariance [4, 4] of (x, y, z, u) given a, b, written out from the linear
    equations x = W x + c + diag(s) eps in numpy float64."""
    w = np.zeros((4, 4))
    w[1, 0], w[2, 0], w[3, 2] = float(WY[b]), 2.0, -0.4
    c = np.array([float(MX[a]), float(CY[b]), 1.0, 0.2 + 0.7 * a])
    s = np.array([float(SX[a]), float(SY[b]), 0.5, 0.9])
    inv = np.linalg.inv(np.eye(4) - w)
    return inv @ c, inv @ np.diag(s**2) @ inv.T


def _log_normal(x, mean, cov):
    d = np.asarray(x) - mean
    return -0.5 * (d @ np.linalg.solve(cov, d) + np.linalg.slogdet(2 * np.pi * cov)[1])


def _brute_mixture(queries, cont, disc):
    """Weights [6] and the Gaussian (mean [k], cov [k, k]) of the queries per configuration
    (a, b), given continuous evidence ``cont`` (name -> float) and discrete ``disc``."""
    q = [NODES.index(n) for n in queries]
    e = [NODES.index(n) for n in cont]
    xe = np.array([cont[n] for n in cont])
    log_w, comps = [], []
    for a in range(2):
        for b in range(3):
            mean, cov = _hand_normal(a, b)
            lw = math.log(PA[a] * PB[a, b])
            if disc.get("a", a) != a or disc.get("b", b) != b:
                lw = -math.inf
            m, s = mean[q], cov[np.ix_(q, q)]
            if e:
                see = cov[np.ix_(e, e)]
                lw += _log_normal(xe, mean[e], see)
                gain = cov[np.ix_(q, e)] @ np.linalg.inv(see)
                m, s = m + gain @ (xe - mean[e]), s - gain @ cov[np.ix_(e, q)]
            log_w.append(lw)
            comps.append((m, s))
    log_w = np.array(log_w)
    w = np.exp(log_w - log_w.max())
    return w / w.sum(), comps


def _check_mixture(got, w, comps, points):
    """Mean, covariance, log density and (1-D) cdf of ``got`` against the hand mixture."""
    mean = sum(wi * m for wi, (m, _) in zip(w, comps))
    second = sum(wi * (s + np.outer(m, m)) for wi, (m, s) in zip(w, comps))
    k = len(mean)
    got_mean = got.mean.reshape(k).numpy()
    got_var = got.variance.reshape(k).numpy()
    np.testing.assert_allclose(got_mean, mean, rtol=0, atol=1e-10)
    np.testing.assert_allclose(got_var, np.diag(second - np.outer(mean, mean)), rtol=1e-10,
                               atol=1e-12)
    for t in points:
        t = np.atleast_1d(np.asarray(t, dtype=float))
        dens = sum(wi * math.exp(_log_normal(t, m, s)) for wi, (m, s) in zip(w, comps))
        lp = got.log_prob(torch.tensor(t if k > 1 else t[0], dtype=F64))
        torch.testing.assert_close(lp, torch.tensor(math.log(dens), dtype=F64), rtol=0,
                                   atol=1e-10)
        if k == 1:
            cdf = sum(wi * 0.5 * (1 + math.erf((t[0] - m[0]) / math.sqrt(2 * s[0, 0])))
                      for wi, (m, s) in zip(w, comps))
            torch.testing.assert_close(got.cdf(torch.tensor(t[0], dtype=F64)),
                                       torch.tensor(cdf, dtype=F64), rtol=0, atol=1e-10)


CASES = [  # query, continuous evidence, discrete evidence
    ("x", {}, {}),
    ("x", {"y": 0.3}, {}),
    ("z", {"y": -2.0}, {"b": 2}),
    ("x", {"y": 4.0, "u": -1.0}, {}),
    ("u", {"y": 0.3}, {"a": 1}),
    ("y", {"u": 0.5}, {"b": 0}),
]


@pytest.mark.parametrize(("query", "cont", "disc"), CASES)
def test_continuous_posterior_is_the_brute_force_mixture(query, cont, disc):
    post = _hybrid().posterior(query, {**cont, **disc})[query]
    assert isinstance(post, MixtureSameFamily) and post.batch_shape == ()
    assert isinstance(post.component_distribution, Normal)
    w, comps = _brute_mixture([query], cont, disc)
    torch.testing.assert_close(post.mixture_distribution.probs.sum(), torch.tensor(1.0, dtype=F64))
    _check_mixture(post, w, comps, [-3.0, -0.4, 0.0, 1.7, 5.0])


def test_batched_rows_match_the_brute_force_row_by_row():
    ys, bs = [-2.0, 0.3, 4.0], [0, 2, 1]
    dag = _hybrid()
    post = dag.posterior(["z", "a", "x"], {"y": torch.tensor(ys, dtype=F64),
                                           "b": torch.tensor(bs)})
    assert post["z"].batch_shape == (3,) and post["x"].batch_shape == (3,)
    assert post["a"].shape == (3, 2)
    for i, (y, b) in enumerate(zip(ys, bs)):
        for q in ("z", "x"):
            w, comps = _brute_mixture([q], {"y": y}, {"b": b})
            row = MixtureSameFamily(
                Categorical(logits=post[q].mixture_distribution.logits[i]),
                torch.distributions.Normal(post[q].component_distribution.loc[i],
                                           post[q].component_distribution.scale[i]))
            _check_mixture(row, w, comps, [-1.0, 2.5])
        torch.testing.assert_close(post["a"][i], dag.posterior("a", {"y": y, "b": b})["a"])


def test_joint_continuous_posterior_is_a_mixture_of_multivariate_normals():
    dag = _hybrid()
    post = dag.posterior(["u", "x", "z"], {"y": 0.3}, joint=True)
    assert isinstance(post.component_distribution, MultivariateNormal)
    assert post.batch_shape == () and post.event_shape == (3,)
    w, comps = _brute_mixture(["u", "x", "z"], {"y": 0.3}, {})
    _check_mixture(post, w, comps, [[0.0, 0.0, 0.0], [-0.5, 1.2, 3.0], [1.0, -2.0, -3.0]])
    # the covariance of the mixture, not only its diagonal
    mean = sum(wi * m for wi, (m, _) in zip(w, comps))
    cov = sum(wi * (s + np.outer(m - mean, m - mean)) for wi, (m, s) in zip(w, comps))
    comp = post.component_distribution
    probs = post.mixture_distribution.probs
    got_cov = (probs[:, None, None] * (comp.covariance_matrix
                                       + (comp.loc - post.mean)[:, :, None]
                                       * (comp.loc - post.mean)[:, None, :])).sum(0)
    np.testing.assert_allclose(got_cov.numpy(), cov, rtol=0, atol=1e-10)
    batched = dag.posterior(["u", "x"], {"y": torch.tensor([0.3, 1.0], dtype=F64)}, joint=True)
    assert batched.batch_shape == (2,) and batched.event_shape == (2,)
    w, comps = _brute_mixture(["u", "x"], {"y": 1.0}, {})
    torch.testing.assert_close(batched.mean[1], torch.tensor(
        sum(wi * m for wi, (m, _) in zip(w, comps)), dtype=F64), rtol=0, atol=1e-10)


def test_without_discrete_nodes_the_mixture_is_the_linear_gaussian_posterior():
    dag = DAG({"x": gaussian([], [], intercept=0.5, scale=1.3),
               "z": gaussian(["x"], [2.0], intercept=1.0, scale=0.5),
               "v": gaussian(["x", "z"], [-0.3, 0.8], intercept=0.0, scale=0.7)})
    ev = {"v": torch.tensor([-1.0, 0.2, 2.5], dtype=F64)}
    ref = lingauss.posterior(dag, ["x", "z"], ev)
    got = clg.posterior(dag, ["x", "z"], ev)
    for q in ("x", "z"):
        assert got[q].mixture_distribution.probs.shape == (3, 1)
        torch.testing.assert_close(got[q].component_distribution.loc[:, 0], ref[q].loc)
        torch.testing.assert_close(got[q].component_distribution.scale[:, 0], ref[q].scale)
        t = torch.tensor([0.1, -0.7, 1.9], dtype=F64)
        torch.testing.assert_close(got[q].log_prob(t), ref[q].log_prob(t))
    ref_j = lingauss.posterior(dag, ["z", "x"], ev, joint=True)
    got_j = clg.posterior(dag, ["z", "x"], ev, joint=True)
    torch.testing.assert_close(got_j.mean, ref_j.mean)
    torch.testing.assert_close(got_j.component_distribution.covariance_matrix[:, 0],
                               ref_j.covariance_matrix)
    # and DAG.posterior still answers a purely linear-Gaussian query with lingauss
    assert isinstance(dag.posterior("x", ev)["x"], Normal)


def test_continuous_posterior_agrees_with_likelihood_weighting_within_standard_errors():
    dag = _hybrid()
    ev = {"y": 0.3, "u": -0.5}
    post = dag.posterior(["x", "z"], ev)
    cond = dag.condition(ev)
    obs = {k: cond._to_value(k, v) for k, v in cond._evidence.items()}
    k = 200_000
    with torch.no_grad():
        values, log_w = cond._ancestral((k,), obs)  # the hybrid likelihood weighting
    w = (log_w - log_w.max()).exp()
    ess = float(w.sum() ** 2 / (w**2).sum())
    assert ess > 1000, ess
    for q in ("x", "z"):
        x = values[q].to(F64)
        # self-normalized estimates of E[x] and P(x <= t), delta-method standard errors
        for f, exact in [(x, post[q].mean)] + [
                ((x <= t).to(F64), post[q].cdf(torch.tensor(t, dtype=F64)))
                for t in (-1.0, 1.0, 3.0)]:
            est = (w * f).sum() / w.sum()
            se = ((w**2 * (f - est) ** 2).sum()).sqrt() / w.sum()
            assert abs(float(est - exact)) < 4 * float(se), (q, float(est), float(exact),
                                                              float(se))


def test_a_linear_gaussian_query_with_a_discrete_parent_is_a_mixture():
    dag = DAG({"a": cpt([], PA), "x": gaussian(["a"], [2.0], intercept=-1.0, scale=1.0),
               "v": gaussian(["x"], [1.0], scale=0.5)})
    post = dag.posterior("x", {"v": 0.4})["x"]
    w = dag.posterior("a", {"v": 0.4})["a"]
    var = 1.0 * 0.25 / 1.25  # x | a, v: prior N(-1 + 2a, 1), v | x ~ N(x, 0.25)
    loc = torch.tensor([(-1.0 * 0.25 + 0.4) / 1.25, (1.0 * 0.25 + 0.4) / 1.25], dtype=F64)
    torch.testing.assert_close(post.mixture_distribution.probs, w)
    torch.testing.assert_close(post.component_distribution.loc, loc)
    torch.testing.assert_close(post.component_distribution.scale,
                               torch.full((2,), math.sqrt(var), dtype=F64))


def test_continuous_query_errors_say_what_is_supported():
    dag = _hybrid()
    with pytest.raises(DAGError, match="discrete and continuous queries.*joint=False"):
        dag.posterior(["x", "a"], {"y": 0.3}, joint=True)
    with pytest.raises(DAGError, match="distinct continuous queries"):
        dag.posterior(["x", "x"], {"y": 0.3}, joint=True)
    with pytest.raises(DAGError, match="expected unobserved query nodes"):
        dag.posterior("x", {"x": 0.3, "y": 0.1})
    with pytest.raises(DAGError, match="probability zero"):
        DAG({**_hybrid().spec, "a": cpt([], [1.0, 0.0])}).posterior("x", {"a": 1, "y": 0.3})
    many = {f"d{i}": cpt([], [0.5, 0.5]) for i in range(int(math.log2(MAX_CONFIGURATIONS)) + 1)}
    many["y"] = gaussian(["d0"], [], intercept=[0.0, 1.0], discrete=["d0"])
    many["z"] = gaussian(list(many)[1:-1] + ["y"], [1.0] * (len(many) - 1))
    with pytest.raises(InferenceError, match="configurations"):
        DAG(many).posterior("y", {"z": 0.0})
