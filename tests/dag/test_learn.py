import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch

from pgm_lab.dag import DAG, cpt, read_bif
from pgm_lab.errors import ConfigError, DAGError

from ._oracles import pgmpy


def test_counts_equal_pgmpy_maximum_likelihood():
    pd = pytest.importorskip("pandas")
    asia = read_bif("asia")
    data = asia.sample(2000, seed=5)
    fitted = asia.fit(data)
    assert fitted is not asia
    assert torch.equal(asia.tables()["dysp"], read_bif("asia").tables()["dysp"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pgmpy()
        from pgmpy.models import DiscreteBayesianNetwork
        from pgmpy.parameter_estimator import DiscreteMLE

        # integer states: pgmpy sorts state names, so indices keep our order
        df = pd.DataFrame({n: data[n].numpy() for n in asia.nodes})
        model = DiscreteBayesianNetwork(list(asia.edges))
        model.fit(df, estimator=DiscreteMLE())
    for cpd in model.get_cpds():
        n = cpd.variable
        ps = list(asia.parents(n))
        if ps and list(cpd.variables[1:]) != ps:
            cpd.reorder_parents(ps)
        ours = fitted.tables([n])[n].reshape(-1, len(asia.states(n))).T
        torch.testing.assert_close(ours, torch.as_tensor(cpd.get_values(), dtype=torch.float64),
                                   atol=1e-12, rtol=0)


def test_dirichlet_pseudo_counts_and_unseen_configurations():
    dag = DAG({"a": cpt([], [0.5, 0.3, 0.2]), "b": cpt(["a"], [[0.5, 0.5]] * 3),
               "r": dist.Bernoulli(0.5)})
    data = {"a": torch.tensor([0, 0, 1, 0]), "b": torch.tensor([1, 1, 0, 0]),
            "r": torch.tensor([1.0, 0.0, 1.0, 1.0])}
    ml = dag.fit(data)
    f64 = torch.float64
    torch.testing.assert_close(ml.tables()["a"], torch.tensor([0.75, 0.25, 0.0], dtype=f64))
    torch.testing.assert_close(ml.tables()["b"], torch.tensor(
        [[1 / 3, 2 / 3], [1.0, 0.0], [0.5, 0.5]], dtype=torch.float64))  # a=2 unseen: uniform
    assert isinstance(ml.spec["r"].root, dist.Bernoulli)
    assert ml.spec["r"].root.probs.item() == pytest.approx(0.75)
    bayes = dag.fit(data, pseudo_count=1.0)
    torch.testing.assert_close(bayes.tables()["a"], torch.tensor([4, 2, 1], dtype=f64) / 7)
    torch.testing.assert_close(bayes.tables()["b"][0], torch.tensor([2 / 5, 3 / 5], dtype=f64))
    with pytest.raises(DAGError, match="missing \\['b'\\]"):
        dag.fit({"a": data["a"], "r": data["r"]}, method="counts")
    with pytest.raises(ConfigError, match="expected a finite pseudo_count >= 0"):
        dag.fit(data, pseudo_count=-1.0)
    with pytest.raises(ConfigError, match="expected a finite pseudo_count >= 0"):
        dag.fit(data, pseudo_count=float("nan"))  # was silently uniform tables
    with pytest.raises(DAGError, match="unknown node 'c'"):
        dag.fit({"c": data["a"]})


def test_svi_learns_a_linear_gaussian_conditional_by_maximum_likelihood():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, generator=gen)
    y = 1.5 * x - 0.7 + 0.8 * torch.randn(400, generator=gen)

    def y_given_x(x):
        w = pyro.param("w", torch.tensor(0.0))
        c = pyro.param("c", torch.tensor(0.0))
        s = pyro.param("s", torch.tensor(1.0), constraint=dist.constraints.positive)
        return dist.Normal(w * x + c, s)

    dag = DAG({"x": dist.Normal(0.0, 1.0), "y": y_given_x})
    out = dag.fit({"x": x, "y": y}, epochs=250, optim=pyro.optim.Adam({"lr": 0.05}),
                  progress=False)
    assert out is dag and dag.history_.loss[-1] < dag.history_.loss[0]
    design = torch.stack([x, torch.ones_like(x)], 1)
    beta = torch.linalg.lstsq(design, y[:, None]).solution[:, 0]  # OLS = Gaussian ML
    sigma = (y - design @ beta).pow(2).mean().sqrt()
    got = torch.stack([pyro.param("w"), pyro.param("c"), pyro.param("s")]).detach()
    torch.testing.assert_close(got, torch.stack([beta[0], beta[1], sigma]), atol=5e-3, rtol=0)


def test_svi_enumerates_a_discrete_latent_node_and_matches_em():
    gen = torch.Generator().manual_seed(1)
    z = (torch.rand(600, generator=gen) < 0.3).float()
    x = torch.where(z > 0, 2.0, -2.0) + torch.randn(600, generator=gen)

    def x_given_z(z):
        mu = pyro.param("mu", torch.tensor([-0.5, 0.5]))
        return dist.Normal(mu[z.long()], 1.0)

    dag = DAG({"z": lambda: dist.Bernoulli(pyro.param(
        "pi", torch.tensor(0.5), constraint=dist.constraints.unit_interval)), "x": x_given_z})
    dag.fit({"x": x}, epochs=300, optim=pyro.optim.Adam({"lr": 0.05}), progress=False)
    # EM for the same two-component mixture (unit variances) gives the ML estimate
    pi, mu = torch.tensor(0.5), torch.tensor([-0.5, 0.5])
    for _ in range(500):
        lik = torch.stack([(1 - pi) * dist.Normal(mu[0], 1.0).log_prob(x).exp(),
                           pi * dist.Normal(mu[1], 1.0).log_prob(x).exp()])
        r = lik / lik.sum(0)
        pi = r[1].mean()
        mu = (r * x).sum(1) / r.sum(1)
    torch.testing.assert_close(pyro.param("pi").detach(), pi, atol=1e-2, rtol=0)
    torch.testing.assert_close(pyro.param("mu").detach(), mu, atol=1e-2, rtol=0)


def test_svi_trains_a_pyro_module_conditional():
    from pyro.nn import PyroModule

    gen = torch.Generator().manual_seed(2)
    x = torch.randn(300, generator=gen)
    y = -0.8 * x + 0.3 + 0.5 * torch.randn(300, generator=gen)
    net = PyroModule[torch.nn.Linear](1, 1)
    dag = DAG({"x": dist.Normal(0.0, 1.0),
               "y": lambda x: dist.Normal(net(x.unsqueeze(-1)).squeeze(-1), 0.5)})
    dag.fit({"x": x, "y": y}, epochs=300, optim=pyro.optim.Adam({"lr": 0.05}), progress=False)
    design = torch.stack([x, torch.ones_like(x)], 1)
    beta = torch.linalg.lstsq(design, y[:, None]).solution[:, 0]
    got = torch.stack([net.weight.reshape(()), net.bias.reshape(())]).detach()
    torch.testing.assert_close(got, beta, atol=5e-3, rtol=0)


def test_svi_with_a_continuous_latent_node_uses_an_autonormal_guide():
    # z ~ N(0, 1) latent, x | z ~ N(w z, s^2): the marginal is N(0, w^2 + s^2), and a Gaussian
    # mean-field guide is exact here, so the ELBO optimum is the ML fit w^2 + s^2 = mean(x^2).
    gen = torch.Generator().manual_seed(3)
    x = 2.0 * torch.randn(200, generator=gen) + 0.5 * torch.randn(200, generator=gen)

    def x_given_z(z):
        w = pyro.param("w", torch.tensor(1.0))
        s = pyro.param("s", torch.tensor(1.0), constraint=dist.constraints.positive)
        return dist.Normal(w * z, s)

    dag = DAG({"z": dist.Normal(0.0, 1.0), "x": x_given_z})
    dag.fit({"x": x}, epochs=600, optim=pyro.optim.Adam({"lr": 0.05}), progress=False)
    assert type(dag.guide_).__name__ == "AutoNormal"
    var = pyro.param("w").detach() ** 2 + pyro.param("s").detach() ** 2
    assert abs(float(var) / float(x.pow(2).mean()) - 1) < 0.05


def test_auto_method_needs_complete_data_for_table_networks():
    asia = read_bif("asia")
    data = asia.sample(50, seed=0)
    del data["either"]
    with pytest.raises(DAGError, match="missing \\['either'\\].*method='svi'"):
        asia.fit(data)


def _brute_force_em(tables, r, x1, x2, iters):
    """EM by explicit per-row enumeration of the hidden z for r -> z -> (x1, x2)."""
    pr, pz, p1, p2 = (t.clone() for t in tables)
    for _ in range(iters):
        w = pz[r] * p1[:, x1].T * p2[:, x2].T  # [N, card z]: p(z, x1, x2 | r)
        w = w / w.sum(1, keepdim=True)
        cz = torch.zeros_like(pz).index_add_(0, r, w)
        c1 = torch.stack([torch.zeros(3, dtype=torch.float64).index_add_(0, x1, w[:, k])
                          for k in range(2)])
        c2 = torch.stack([torch.zeros(2, dtype=torch.float64).index_add_(0, x2, w[:, k])
                          for k in range(2)])
        pr = torch.bincount(r, minlength=2).double() / len(r)
        pz, p1, p2 = (c / c.sum(-1, keepdim=True) for c in (cz, c1, c2))
    return pr, pz, p1, p2


def test_em_with_a_hidden_node_matches_brute_force_em():
    truth = DAG({"r": cpt([], [0.4, 0.6]), "z": cpt(["r"], [[0.8, 0.2], [0.3, 0.7]]),
                 "x1": cpt(["z"], [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]),
                 "x2": cpt(["z"], [[0.9, 0.1], [0.25, 0.75]])})
    data = truth.sample(500, seed=0)
    del data["z"]
    init = [torch.tensor(t, dtype=torch.float64) for t in (
        [0.5, 0.5], [[0.6, 0.4], [0.45, 0.55]], [[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]],
        [[0.6, 0.4], [0.4, 0.6]])]
    start = DAG({"r": cpt([], init[0]), "z": cpt(["r"], init[1]), "x1": cpt(["z"], init[2]),
                 "x2": cpt(["z"], init[3])})
    em = start.fit(data, method="em", max_iter=7, tol=0.0)
    assert len(em.log_likelihood_) == 8  # initial + 7 updates
    assert em.log_likelihood_[-1] == pytest.approx(float(em.log_evidence(data).sum()))
    ref = _brute_force_em(init, data["r"], data["x1"], data["x2"], iters=7)
    for name, t in zip(("r", "z", "x1", "x2"), ref):
        torch.testing.assert_close(em.tables()[name], t, atol=1e-12, rtol=0)


def test_em_increases_the_likelihood_and_reduces_to_counts_on_complete_data():
    asia = read_bif("asia")
    data = asia.sample(2000, seed=0)
    complete = asia.fit(data, method="em")
    counts = asia.fit(data)
    for n in asia.nodes:
        torch.testing.assert_close(complete.tables()[n], counts.tables()[n], atol=1e-12, rtol=0)
    del data["either"], data["lung"]
    gen = torch.Generator().manual_seed(0)
    spec = {}
    for n, nd in asia.spec.items():  # perturbed start, away from the truth
        t = nd.table * (1 + torch.rand(nd.table.shape, generator=gen, dtype=torch.float64))
        spec[n] = cpt(nd.parents, t / t.sum(-1, keepdim=True), nd.states, nd.parent_states)
    em = DAG(spec, name="asia").fit(data, method="em", max_iter=30)
    ll = em.log_likelihood_
    assert all(b >= a - 1e-9 * abs(a) for a, b in zip(ll, ll[1:]))  # EM's monotonicity
    assert ll[-1] > ll[0]
    with pytest.raises(ConfigError, match="method='em' needs"):
        DAG({"a": dist.Normal(0.0, 1.0)}).fit({"a": torch.zeros(3)}, method="em")


def test_intervened_nodes_keep_their_one_hot_tables_when_fitting():
    asia = read_bif("asia")
    data = asia.sample(500, seed=2)
    done = asia.do({"smoke": "no"})
    one_hot = torch.tensor([0.0, 1.0], dtype=torch.float64)
    for method in ("auto", "counts"):  # observational data: smoke is "yes" in some rows
        fitted = done.fit(data, method=method)
        torch.testing.assert_close(fitted.tables(["smoke"])["smoke"], one_hot)
        assert torch.all(fitted.sample(50, seed=0)["smoke"] == 1)
    hidden = {k: v for k, v in done.sample(200, seed=3).items() if k != "lung"}
    torch.testing.assert_close(done.fit(hidden, method="em", max_iter=3).tables(["smoke"])
                               ["smoke"], one_hot)
    # the other tables are still learned from the data
    counts = done.fit(data)
    torch.testing.assert_close(counts.tables(["dysp"])["dysp"],
                               asia.fit(data).tables(["dysp"])["dysp"])


def test_tables_of_learnable_callables_follow_the_trained_parameters():
    def z():
        return dist.Bernoulli(pyro.param("pz", torch.tensor(0.5),
                                         constraint=dist.constraints.unit_interval))

    def x(z):
        p = pyro.param("px", torch.tensor([0.5, 0.5]), constraint=dist.constraints.unit_interval)
        return dist.Bernoulli(p[z.long()])

    dag = DAG({"z": z, "x": x})
    torch.testing.assert_close(dag.posterior("z", {"x": 1})["z"],
                               torch.tensor([0.5, 0.5], dtype=torch.float64))  # tables cached
    gen = torch.Generator().manual_seed(0)
    zs = (torch.rand(300, generator=gen) < 0.2).float()
    xs = (torch.rand(300, generator=gen) < 0.1 + 0.8 * zs).float()
    dag.fit({"z": zs, "x": xs}, method="svi", epochs=10, optim=pyro.optim.Adam({"lr": 0.1}),
            progress=False)
    pz, px = pyro.param("pz").item(), pyro.param("px").detach().double()
    assert abs(pz - 0.5) > 0.05  # training moved the parameters
    joint = torch.tensor([1 - pz, pz], dtype=torch.float64) * px
    torch.testing.assert_close(dag.posterior("z", {"x": 1})["z"], joint / joint.sum())
    assert f"{pz!r}" in dag.to_bif() or f"{1 - pz!r}" in dag.to_bif()


def test_svi_refuses_conditionals_whose_parameters_pyro_would_never_train():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(100, generator=gen)
    y = -0.8 * x + 0.3 + 0.5 * torch.randn(100, generator=gen)
    net = torch.nn.Linear(1, 1)  # a plain module: SVI only steps Pyro parameters
    before = [p.detach().clone() for p in net.parameters()]

    def y_given_x(x):
        return dist.Normal(net(x.unsqueeze(-1)).squeeze(-1), 0.5)

    dag = DAG({"x": dist.Normal(0.0, 1.0), "y": y_given_x})
    for data in ({"x": x, "y": y}, {"y": y}):  # x observed, or latent with an AutoNormal guide
        with pytest.raises(ConfigError, match="node 'y'.*shapes \\[\\[1, 1\\], \\[1\\]\\].*"
                                              "PyroModule.*pyro.module\\('net', net\\)"):
            dag.fit(data, epochs=5, progress=False)  # was: trained nothing, silently
    assert all(torch.equal(p, b) for p, b in zip(net.parameters(), before))

    def registered(x):
        pyro.module("net", net)
        return y_given_x(x)

    DAG({"x": dist.Normal(0.0, 1.0), "y": registered}).fit(
        {"x": x, "y": y}, epochs=5, optim=pyro.optim.Adam({"lr": 0.05}), progress=False)
    assert not any(torch.equal(p, b) for p, b in zip(net.parameters(), before))


def test_svi_with_nothing_to_train_is_an_error_but_fixed_nodes_beside_learnable_ones_are_fine():
    x = torch.linspace(-1.0, 1.0, 50)
    fixed = DAG({"x": dist.Normal(0.0, 1.0), "y": lambda x: dist.Normal(2.0 * x, 1.0)})
    with pytest.raises(ConfigError, match="expected Pyro parameters to train.*got none"):
        fixed.fit({"x": x, "y": 2.0 * x}, epochs=5, progress=False)
    frozen = torch.nn.Linear(1, 1).requires_grad_(False)  # kept fixed on purpose

    def learnable(x):
        return dist.Normal(pyro.param("w", torch.tensor(0.0)) * x, 1.0)

    dag = DAG({"x": dist.Normal(0.0, 1.0), "y": learnable,
               "u": lambda y: dist.Normal(frozen(y.unsqueeze(-1)).squeeze(-1), 1.0)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dag.fit({"x": x, "y": 2.0 * x, "u": x}, epochs=200,
                optim=pyro.optim.Adam({"lr": 0.05}), progress=False)
    assert abs(pyro.param("w").item() - 2.0) < 0.1  # the learnable node still trained
