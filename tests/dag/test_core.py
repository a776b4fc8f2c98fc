import math
import re

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.inspect import get_model_relations
from pyro.poutine.util import site_is_subsample

from pgm_lab import DAG, DAGError, PgmLabError, cpt, node, read_bif
from pgm_lab.errors import InferenceError

SEED_SPEC = {
    "a": cpt([], [0.6, 0.4]),
    "b": cpt(["a"], [[0.7, 0.3], [0.2, 0.8]]),
    "c": cpt(["a"], [[0.5, 0.5], [0.1, 0.9]]),
    "d": cpt(["c"], [[0.3, 0.7], [0.6, 0.4]]),
    "e": cpt(["d"], [[0.9, 0.1], [0.4, 0.6]]),
    "f": cpt(["d"], [[0.25, 0.75], [0.5, 0.5]]),
}


def test_seed_example_factorization():
    dag = DAG(SEED_SPEC)
    assert dag.factorization() == "p(a) p(b | a) p(c | a) p(d | c) p(e | d) p(f | d)"
    assert dag.nodes == ("a", "b", "c", "d", "e", "f")
    assert dag.parents("d") == ("c",) and dag.children("d") == ("e", "f")
    assert dag.edges == (("a", "b"), ("a", "c"), ("c", "d"), ("d", "e"), ("d", "f"))


def test_order_is_derived_from_any_listing():
    dag = DAG(dict(reversed(list(SEED_SPEC.items()))))
    pos = {n: i for i, n in enumerate(dag.nodes)}
    assert all(pos[p] < pos[c] for p, c in dag.edges)
    terms = re.findall(r"p\([^)]*\)", dag.factorization())
    assert sorted(terms) == sorted(re.findall(r"p\([^)]*\)", DAG(SEED_SPEC).factorization()))
    assert len(terms) == 6


def test_cycle_is_printed_as_a_path():
    spec = {"a": lambda c: dist.Normal(c, 1.0), "b": lambda a: dist.Normal(a, 1.0),
            "c": lambda b: dist.Normal(b, 1.0), "r": dist.Normal(0.0, 1.0)}
    cycles = "a -> b -> c -> a|b -> c -> a -> b|c -> a -> b -> c"
    with pytest.raises(DAGError, match=f"cycle: ({cycles})"):
        DAG(spec)
    with pytest.raises(DAGError, match="cycle a -> a"):
        DAG({"a": lambda a: dist.Normal(a, 1.0)})


def test_unknown_parent_suggests_close_names():
    msg = "node 'y' has unknown parent 'smoking'; did you mean 'smoker'"
    with pytest.raises(DAGError, match=msg):
        DAG({"smoker": dist.Bernoulli(0.3), "y": lambda smoking: dist.Normal(smoking, 1.0)})
    with pytest.raises(DAGError, match="unknown parent 'A'; did you mean 'a'"):
        DAG({"a": dist.Bernoulli(0.3), "y": node(lambda v: dist.Normal(v, 1.0), ["A"])})


def test_cpt_shape_and_normalization_errors_name_the_culprit():
    with pytest.raises(DAGError, match="parent 'a'\\) has 3 states but 'a' has 2"):
        DAG({"a": cpt([], [0.5, 0.5]), "b": cpt(["a"], [[1.0, 0.0]] * 3)})
    with pytest.raises(DAGError, match="must have 2 dimensions"):
        cpt(["a"], [0.5, 0.5])
    with pytest.raises(DAGError, match="node 'c'.*parent configuration \\(a='hi', b='0'\\) sums "
                                       "to 0.9, expected 1"):
        DAG({"a": cpt([], [0.5, 0.5], states=["lo", "hi"]), "b": dist.Bernoulli(0.5),
             "c": cpt(["a", "b"], [[[0.5, 0.5], [0.5, 0.5]], [[0.45, 0.45], [0.5, 0.5]]])})
    with pytest.raises(DAGError, match="negative entry"):
        DAG({"a": cpt([], [1.5, -0.5])})
    with pytest.raises(DAGError, match="names the states of 'a' as \\['x', 'y'\\], but 'a' has "
                                       "states \\['lo', 'hi'\\]"):
        DAG({"a": cpt([], [0.5, 0.5], states=["lo", "hi"]),
             "b": cpt(["a"], [[0.5, 0.5]] * 2, parent_states={"a": ["x", "y"]})})
    with pytest.raises(DAGError, match="parent 'y' is not a discrete node"):
        DAG({"y": dist.Normal(0.0, 1.0), "b": cpt(["y"], [[0.5, 0.5]])})
    with pytest.raises(DAGError, match="expected a Distribution"):
        DAG({"a": 3.0})
    with pytest.raises(DAGError, match="try node\\(fn, parents"):
        DAG({"a": lambda *xs: dist.Normal(0.0, 1.0)})


def test_model_relations_equal_dag_edges():
    for dag in (read_bif("asia"), read_bif("child"), _mixed()):
        rel = get_model_relations(dag.model)
        # sample_sample maps each site to the upstream sites its distribution depends on
        pyro_edges = {(p, c) for c, ps in rel["sample_sample"].items() for p in ps}
        assert pyro_edges == set(dag.edges)
        assert rel["observed"] == []
    cond = read_bif("asia").condition({"xray": "yes"})
    assert get_model_relations(cond.model)["observed"] == ["xray"]
    src = pyro.render_model(cond.model).source  # Pyro's own picture shows the same edges
    assert {tuple(line.strip().split(" -> ")) for line in src.splitlines() if "->" in line} \
        == set(cond.edges)
    assert "subgraph cluster_data" in src


def _mixed():
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    return DAG({
        "z": dist.Bernoulli(0.4),
        "u": dist.Normal(0.0, 1.0),
        "w": cpt(["z"], [[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]], states=["lo", "mid", "hi"]),
        "y": lambda u, w: dist.Normal(
            net(torch.stack(torch.broadcast_tensors(u, w.float()), -1)).squeeze(-1), 1.0),
        "x": node(lambda a, b: dist.Normal(a + b, 0.5), ["u", "z"]),
    })


def test_sampling_is_vectorized_seeded_and_leaves_global_rng_alone():
    dag = _mixed()
    state = torch.get_rng_state()
    s1, s2 = dag.sample(1000, seed=3), dag.sample(1000, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    for n in dag.nodes:
        assert s1[n].shape == (1000,) and torch.equal(s1[n], s2[n])
    assert s1["w"].dtype == torch.long and s1["z"].dtype == torch.float32
    assert not torch.equal(dag.sample(1000, seed=4)["u"], s1["u"])
    # x | u, z ~ N(u + z, 0.5^2): E[x] = 0.4, Var[x] = 1 + 0.4 * 0.6 + 0.25
    big = dag.sample(40_000, seed=5)["x"]
    assert abs(float(big.mean()) - 0.4) / (1.49 / 40_000) ** 0.5 < 4
    assert abs(float(big.var()) - 1.49) / (1.49 * (2 / 40_000) ** 0.5) < 4


def test_sampling_frequencies_match_exact_marginals():
    dag = read_bif("alarm")
    n = 20_000
    s = dag.sample(n, seed=0)
    z_max = 0.0
    for v in dag.nodes:
        p = dag.posterior(v)[v]
        freq = torch.bincount(s[v], minlength=p.shape[0]).double() / n
        se = (p * (1 - p) / n).sqrt()
        ok = se > 0
        assert torch.all(freq[~ok] == p[~ok])
        z_max = max(z_max, float(((freq - p).abs()[ok] / se[ok]).max()))
    assert z_max < 4.5  # ~100 states: Bonferroni-level threshold


def test_log_prob_normalizes_and_matches_closed_forms():
    dag = DAG(SEED_SPEC)
    grid = torch.cartesian_prod(*[torch.arange(2)] * 6)
    values = {n: grid[:, i] for i, n in enumerate(dag.nodes)}
    lp = dag.log_prob(values)
    assert lp.shape == (64,) and lp.dtype == torch.float64
    torch.testing.assert_close(lp.exp().sum(), torch.tensor(1.0, dtype=torch.float64))
    p0 = torch.tensor(0.6 * 0.7 * 0.5 * 0.3 * 0.9 * 0.25, dtype=torch.float64)
    torch.testing.assert_close(lp[0], p0.log())
    g = DAG({"a": dist.Normal(1.0, 2.0), "b": lambda a: dist.Normal(3.0 * a, 0.5)})
    a, b = torch.tensor([0.3, -1.0]), torch.tensor([1.0, 2.0])
    expected = dist.Normal(1.0, 2.0).log_prob(a) + dist.Normal(3 * a, 0.5).log_prob(b)
    torch.testing.assert_close(g.log_prob({"a": a, "b": b}), expected)
    with pytest.raises(DAGError, match="missing \\['b'\\]"):
        g.log_prob({"a": a})
    # state names are accepted
    asia = read_bif("asia")
    row = {n: ["yes"] for n in asia.nodes}
    assert asia.log_prob(row).shape == (1,)


def test_condition_and_do_return_new_dags():
    asia = read_bif("asia")
    cond = asia.condition({"xray": "yes"})
    assert cond is not asia and asia.evidence == {} and int(cond.evidence["xray"]) == 0
    torch.testing.assert_close(cond.posterior("lung")["lung"],
                               asia.posterior("lung", {"xray": "yes"})["lung"])
    done = asia.do({"either": "yes"})
    assert ("lung", "either") not in done.edges and done.parents("either") == ()
    assert done.states("either") == ("yes", "no")
    # intervening on either tells nothing about its causes, observing it does
    torch.testing.assert_close(done.posterior("lung", {"either": "yes"})["lung"],
                               asia.posterior("lung")["lung"])
    torch.testing.assert_close(done.posterior("xray")["xray"],
                               asia.posterior("xray", {"either": "yes"})["xray"])
    s = done.sample(100, seed=0)
    assert torch.all(s["either"] == 0)
    with pytest.raises(DAGError, match="is observed \\(condition\\): expected interventions"):
        cond.do({"xray": "no"})
    g = DAG({"a": dist.Normal(0.0, 1.0), "b": lambda a: dist.Normal(a, 1.0)}).do({"a": 2.0})
    assert torch.all(g.sample(10, seed=0)["a"] == 2.0) and g.parents("b") == ("a",)


def test_model_is_a_pyro_program_for_predictive_condition_and_nuts():
    asia = read_bif("asia")
    tr = pyro.poutine.trace(asia.model).get_trace(size=7)
    sites = [n for n, s in tr.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)]
    assert sites == list(asia.nodes)
    for n in asia.nodes:
        assert tr.nodes[n]["value"].shape == (7,)
        assert [f.name for f in tr.nodes[n]["cond_indep_stack"]] == ["data"]
    pred = pyro.infer.Predictive(asia.model, num_samples=5)(size=3)
    assert pred["dysp"].shape == (5, 3)
    forced = pyro.poutine.condition(asia.model, data={"smoke": torch.zeros(4, dtype=torch.long)})
    assert torch.all(forced(size=4)["smoke"] == 0)
    intervened = pyro.poutine.do(asia.model, data={"either": torch.zeros(4, dtype=torch.long)})
    assert torch.all(intervened(size=4)["either"] == 0)  # children see the intervened value
    # NUTS on a continuous latent: a ~ N(0, 1), b | a ~ N(a, 1), b = 1 -> a | b ~ N(0.5, 0.5)
    g = DAG({"a": dist.Normal(0.0, 1.0), "b": lambda a: dist.Normal(a, 1.0)}).condition({"b": 1.0})
    mcmc = pyro.infer.MCMC(pyro.infer.NUTS(g.model), num_samples=400, warmup_steps=200,
                           disable_progbar=True)
    mcmc.run()
    a = mcmc.get_samples()["a"].reshape(-1)
    ess = float(pyro.ops.stats.effective_sample_size(a.reshape(1, -1, 1))[0])
    z = abs(float(a.mean()) - 0.5) / (math.sqrt(0.5) / math.sqrt(ess))
    assert z < 4.0


def test_states_and_encode():
    dag = _mixed()
    assert dag.states("w") == ("lo", "mid", "hi") and dag.states("z") == ("0", "1")
    with pytest.raises(DAGError, match="not discrete"):
        dag.states("u")
    assert torch.equal(dag.encode("w", ["hi", "lo"]), torch.tensor([2, 0]))
    assert dag.encode("z", 1).dtype == torch.float32
    with pytest.raises(DAGError, match="no state 'med'; did you mean 'mid'"):
        dag.encode("w", "med")
    with pytest.raises(DAGError, match="unknown node 'ww'.*did you mean 'w'"):
        dag.states("ww")


def test_callable_discrete_conditionals_are_tabulated_for_exact_inference():
    dag = DAG({"a": dist.Categorical(torch.tensor([0.2, 0.3, 0.5])),
               "b": lambda a: dist.Bernoulli(torch.tensor([0.1, 0.5, 0.9])[a]),
               "c": lambda a, b: dist.Categorical(
                   torch.stack([0.5 + 0.1 * a.float() + 0.2 * b, 0.5 - 0.1 * a.float() - 0.2 * b],
                               -1).expand(*torch.broadcast_shapes(a.shape, b.shape), 2))})
    tables = dag.tables()
    assert tables["c"].shape == (3, 2, 2)
    pa = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    pb1 = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    joint = pa * pb1  # p(a, b = 1)
    torch.testing.assert_close(dag.posterior("a", {"b": 1})["a"], joint / joint.sum())


def test_callables_that_reject_the_parent_grid_are_not_discrete_but_still_run():
    # written for batches [N] only: the grid [2] of parent states makes it fail
    def b(a):
        if a.dim() != 1 or a.shape[0] < 3:
            raise RuntimeError("needs a batch of at least 3 rows")
        return dist.Bernoulli(0.2 + 0.6 * a)

    dag = DAG({"a": dist.Bernoulli(0.5), "b": b})
    assert not dag.is_discrete("b")
    assert dag.sample(5, seed=0)["b"].shape == (5,)
    with pytest.raises(InferenceError, match="'b' is not.*needs a batch of at least 3 rows"):
        dag.posterior("a", {"b": 1.0})


def test_spec_entries_are_validated_with_clear_errors():
    # arguments with defaults are settings, not parents (as TFP's JointDistributionNamed)
    dag = DAG({"a": dist.Normal(0.0, 1.0), "b": lambda a, scale=0.5: dist.Normal(a, scale)})
    assert dag.parents("b") == ("a",)
    s = dag.sample(3, seed=0)
    torch.testing.assert_close(dag.log_prob(s), dist.Normal(0.0, 1.0).log_prob(s["a"])
                               + dist.Normal(s["a"], 0.5).log_prob(s["b"]))

    def positional_only(a, /):
        return dist.Normal(a, 1.0)

    with pytest.raises(DAGError, match="node 'b': parents are passed by keyword.*'a'.*try node"):
        DAG({"a": dist.Normal(0.0, 1.0), "b": positional_only})
    with pytest.raises(DAGError, match="got one with \\*\\*kw; try node\\(fn, parents"):
        DAG({"a": lambda **kw: dist.Normal(0.0, 1.0)})
    # a conditional must return a distribution, whichever method calls it
    bad = DAG({"a": dist.Normal(0.0, 1.0), "b": lambda a: a + 1.0})
    msg = "node 'b': expected its conditional to return a torch/Pyro Distribution, got Tensor"
    for call in (lambda: bad.sample(2), lambda: bad.log_prob({"a": [0.0], "b": [1.0]}),
                 lambda: pyro.poutine.trace(bad.model).get_trace(size=2),
                 lambda: bad.log_evidence({"b": 1.0}, method="importance", num_samples=5)):
        with pytest.raises(DAGError, match=msg):
            call()
    # a root with a batch shape would silently fight the plate "data"
    with pytest.raises(DAGError, match="expected a root distribution with batch_shape \\(\\), "
                                       "got batch_shape \\(2,\\).*to_event"):
        DAG({"a": dist.Bernoulli(torch.tensor([0.3, 0.4]))})
    vec = DAG({"a": dist.Bernoulli(torch.tensor([0.3, 0.4])).to_event(1)})
    assert vec.sample(5, seed=0)["a"].shape == (5, 2)


def test_sample_sizes_and_evidence_values_are_validated():
    dag = read_bif("asia")
    assert dag.sample(np_int(3), seed=0)["lung"].shape == (3,)
    assert dag.sample(torch.tensor(2), seed=0)["lung"].shape == (2,)
    for bad in (0, -5, True, 2.5, "10"):
        with pytest.raises(DAGError, match="expected n to be a positive int, got"):
            dag.sample(bad)
    for bad in (None, ["yes", 1], object()):
        with pytest.raises(DAGError, match="node 'xray': expected a state name, an index"):
            dag.posterior("lung", {"xray": bad})
    with pytest.raises(DAGError, match="node 'a': expected a state name"):
        DAG({"a": dist.Normal(0.0, 1.0)}).condition({"a": None})
    for bad in (3, None, [], ["lung", 3]):
        with pytest.raises(DAGError, match="expected a query node name or a non-empty list"):
            dag.posterior(bad)
    both = dag.posterior(("lung", "lung", "smoke"))
    assert list(both) == ["lung", "smoke"]


def np_int(n):
    import numpy as np

    return np.int64(n)


def test_conflicting_evidence_is_an_error_not_a_silent_override():
    asia = read_bif("asia")
    cond = asia.condition({"smoke": "yes"})
    msg = "node 'smoke' is already observed \\(condition\\) with value 0; expected new evidence"
    with pytest.raises(DAGError, match=msg):
        cond.posterior("lung", {"smoke": "no"})
    with pytest.raises(DAGError, match=msg):
        cond.log_evidence({"smoke": 1})
    with pytest.raises(DAGError, match=msg):
        cond.condition({"smoke": "no"})
    with pytest.raises(DAGError, match=msg):
        cond.log_evidence({"smoke": "no"}, method="importance", num_samples=10)
    # repeating the same observation is fine
    torch.testing.assert_close(cond.posterior("lung", {"smoke": 0})["lung"],
                               asia.posterior("lung", {"smoke": "yes"})["lung"])
    assert int(cond.condition({"smoke": "yes", "xray": "no"}).evidence["smoke"]) == 0


def test_do_value_must_have_the_node_event_shape():
    g = DAG({"a": dist.Normal(0.0, 1.0), "b": lambda a: dist.Normal(a, 1.0)})
    # a [3] tensor on a scalar node used to turn 'a' into a 3-vector node silently
    with pytest.raises(DAGError, match="expected a value with 0 dims.*got shape \\(3,\\)"):
        g.do({"a": torch.tensor([1.0, 2.0, 3.0])})
    with pytest.raises(DAGError, match="expected a value with 0 dims.*got shape \\(2,\\)"):
        g.do({"b": torch.tensor([1.0, 2.0])})  # b is a callable: shape from its distribution
    v = DAG({"m": dist.Normal(torch.zeros(2), 1.0).to_event(1),
             "y": lambda m: dist.Normal(m.sum(-1), 1.0)})
    s = v.do({"m": torch.tensor([1.0, 2.0])}).sample(4, seed=0)
    assert s["m"].shape == (4, 2) and torch.all(s["m"] == torch.tensor([1.0, 2.0]))
    with pytest.raises(DAGError, match="expected a value with 1 dims"):
        v.do({"m": 1.0})


def test_node_checks_that_fn_takes_one_argument_per_parent():
    with pytest.raises(DAGError, match="expected fn to accept 2 \\(\\['a', 'b'\\]\\)"):
        node(lambda a: dist.Normal(a, 1.0), ["a", "b"])
    with pytest.raises(DAGError, match="expected fn to accept 0"):
        node(lambda a: dist.Normal(a, 1.0))
    net = torch.nn.Linear(2, 1)  # modules take *args via forward: accepted
    n = node(lambda *xs: dist.Normal(net(torch.stack(xs, -1)).squeeze(-1), 1.0), ["a", "b"])
    dag = DAG({"a": dist.Normal(0.0, 1.0), "b": dist.Normal(0.0, 1.0), "c": n,
               "d": node(lambda x, scale=2.0: dist.Normal(x, scale), ["c"])})
    assert dag.sample(3, seed=0)["d"].shape == (3,)


def test_error_messages_say_what_was_expected_what_came_and_what_to_try():
    asia = read_bif("asia")
    g = DAG({"a": dist.Normal(0.0, 1.0), "b": lambda a: dist.Normal(a, 1.0)})
    bad_calls = [
        lambda: g.condition({"a": "high"}),
        lambda: asia.do({"xray": "yes"}).condition({"xray": "no"}),
        lambda: asia.condition({"xray": "yes"}).do({"xray": "no"}),
        lambda: asia.do({"xray": torch.tensor([0, 1])}),
        lambda: asia.condition({"xray": torch.tensor([0, 1])}).sample(3),
        lambda: g.log_evidence({}, method="importance"),
        lambda: g.log_evidence({"b": 1.0}, method="importance", num_samples=0),
        lambda: g.log_evidence({"a": torch.zeros(2), "b": torch.zeros(3)}, method="importance"),
        lambda: asia.posterior("lung", {"xray": torch.tensor([0, 1]), "dysp": torch.tensor([0])}),
        lambda: g.fit({"a": torch.zeros(3), "b": torch.zeros(3)}, method="svi",
                      pseudo_count=1.0),
    ]
    for call in bad_calls:
        with pytest.raises(PgmLabError) as info:
            call()
        msg = str(info.value)
        assert "expected" in msg and "got" in msg and "try" in msg, msg


def test_do_with_evidence_on_descendants_and_ancestors_matches_the_mutilated_joint():
    # u -> x -> y, u -> y, y -> s: p(u | do(x=1), s=1) and p(y | do(x=1), s=1) by
    # enumeration of the mutilated network p(u) [x=1] p(y | x, u) p(s | y)
    pu = torch.tensor([0.3, 0.7], dtype=torch.float64)
    px = torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=torch.float64)
    py = torch.tensor([[[0.8, 0.2], [0.4, 0.6]], [[0.5, 0.5], [0.1, 0.9]]], dtype=torch.float64)
    ps = torch.tensor([[0.7, 0.3], [0.25, 0.75]], dtype=torch.float64)
    dag = DAG({"u": cpt([], pu), "x": cpt(["u"], px), "y": cpt(["u", "x"], py),
               "s": cpt(["y"], ps)})
    joint = pu[:, None] * py[:, 1, :] * ps[:, 1][None, :]  # [u, y] with x = 1, s = 1
    joint = joint / joint.sum()
    post = dag.do({"x": 1}).posterior(["u", "y"], {"s": 1})
    torch.testing.assert_close(post["u"], joint.sum(1))
    torch.testing.assert_close(post["y"], joint.sum(0))
    # conditioning instead of intervening changes p(u): x = 1 is evidence about u
    assert (dag.posterior("u", {"x": 1, "s": 1})["u"] - joint.sum(1)).abs().max() > 0.05
