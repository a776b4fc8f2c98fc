import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgm_lab.dag import DAG, cpt, read_bif
from pgm_lab.errors import DAGError, InferenceError

from ._oracles import brute_force as _brute_force
from ._oracles import (
    draw_evidence,
    pgmpy_file,
    pgmpy_from_dag,
    pgmpy_posterior,
    small_networks,
)

# Every bnlearn network in pgmpy's wheel up to win95pts/hepar2 size.
NETWORKS = ["asia", "cancer", "earthquake", "sachs", "survey", "alarm", "child", "insurance",
            "water", "hailfinder", "hepar2", "win95pts"]


def _random_evidence(dag, gen, rows, k):
    """``rows`` joint samples of ``k`` random nodes (evidence of positive probability)."""
    nodes = list(dag.nodes)
    perm = torch.randperm(len(nodes), generator=gen).tolist()
    observed = [nodes[i] for i in perm[:k]]
    free = [nodes[i] for i in perm[k:]]
    sample = dag.sample(rows, seed=int(torch.randint(1 << 30, (1,), generator=gen)))
    return {v: sample[v] for v in observed}, free


@pytest.mark.parametrize("name", NETWORKS)
def test_posterior_matches_pgmpy_variable_elimination(name):
    dag = read_bif(pgmpy_file(name))
    model = pgmpy_from_dag(dag)
    gen = torch.Generator().manual_seed(sum(map(ord, name)))
    for k in (1, 4):
        evidence, free = _random_evidence(dag, gen, rows=3, k=k)
        queries = [free[i] for i in torch.randperm(len(free), generator=gen)[:2].tolist()]
        ours = dag.posterior(queries, evidence)  # one batched contraction per query
        for q in queries:
            assert ours[q].shape == (3, len(dag.states(q)))
            assert ours[q].dtype == torch.float64
            for row in range(3):
                ev = {v: dag.states(v)[int(idx[row])] for v, idx in evidence.items()}
                expected = pgmpy_posterior(model, q, ev, dag.states(q))
                torch.testing.assert_close(ours[q][row], expected, atol=1e-6, rtol=0)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(small_networks(), st.data())
def test_posterior_and_evidence_match_brute_force_enumeration(net, data):
    dag, _ = net
    joint = _brute_force(dag)
    nodes = list(dag.nodes)
    observed = data.draw(st.lists(st.sampled_from(nodes), unique=True, max_size=len(nodes)))
    rows = data.draw(st.integers(1, 3))
    ev = {v: torch.tensor(data.draw(st.lists(st.integers(0, len(dag.states(v)) - 1),
                                             min_size=rows, max_size=rows)))
          for v in observed}
    for r in range(rows):
        idx = tuple(int(ev[n][r]) if n in ev else slice(None) for n in nodes)
        sub = joint[idx]
        kept = [n for n in nodes if n not in ev]
        pe = sub.sum()
        logz = dag.log_evidence({v: int(t[r]) for v, t in ev.items()})
        torch.testing.assert_close(logz, pe.log(), atol=1e-9, rtol=1e-9)
        if pe == 0:  # impossible evidence: no posterior, whichever node is queried
            for q in kept:
                with pytest.raises(DAGError, match="probability zero"):
                    dag.posterior(q, {v: int(t[r]) for v, t in ev.items()})
            continue
        if pe <= 1e-300:
            continue
        for q in kept:
            dims = tuple(i for i, n in enumerate(kept) if n != q)
            expected = (sub.sum(dims) if dims else sub) / pe  # sum(()) would reduce all
            got = dag.posterior(q, {v: int(t[r]) for v, t in ev.items()})[q]
            torch.testing.assert_close(got, expected, atol=1e-9, rtol=1e-9)
    if ev and all(_positive(joint, nodes, ev, r) for r in range(rows)):
        batched = dag.log_evidence(ev)
        rowwise = torch.stack([dag.log_evidence({v: int(t[r]) for v, t in ev.items()})
                               for r in range(rows)])
        torch.testing.assert_close(batched, rowwise, atol=1e-12, rtol=1e-12)


def _positive(joint, nodes, ev, r):
    idx = tuple(int(ev[n][r]) if n in ev else slice(None) for n in nodes)
    return bool(joint[idx].sum() > 0)


def test_long_chain_is_not_limited_like_enumeration():
    # 300 binary variables (TraceEnum_ELBO caps out near 25-64 enumerated sites).
    t = torch.tensor([[0.9, 0.1], [0.3, 0.7]], dtype=torch.float64)
    spec = {"x0": cpt([], [0.5, 0.5])}
    for i in range(1, 300):
        spec[f"x{i}"] = cpt([f"x{i - 1}"], t)
    dag = DAG(spec)
    forward = torch.tensor([0.0, 1.0], dtype=torch.float64) @ torch.linalg.matrix_power(t, 299)
    torch.testing.assert_close(dag.posterior("x299", {"x0": 1})["x299"], forward)
    # Bayes: p(x0 | x299 = 0) ∝ p(x0) [T^299]_{x0, 0}
    lik = torch.linalg.matrix_power(t, 299)[:, 0]
    torch.testing.assert_close(dag.posterior("x0", {"x299": 0})["x0"], lik / lik.sum())
    torch.testing.assert_close(dag.log_evidence({"x299": 0}), (0.5 * lik.sum()).log())


def test_evidence_of_probability_1e_minus_400_on_a_chain_matches_the_closed_form():
    # p(x0 = 1) = 0.01 and p(x_i = 1 | x_{i-1} = 1) = 0.01: all 200 nodes in state 1 has
    # p(e) = 1e-400, below float64's smallest number (products of probabilities give 0).
    t = torch.tensor([[0.95, 0.05], [0.99, 0.01]], dtype=torch.float64)
    spec = {"x0": cpt([], [0.99, 0.01])}
    for i in range(1, 200):
        spec[f"x{i}"] = cpt([f"x{i - 1}"], t)
    dag = DAG(spec)
    torch.testing.assert_close(dag.log_evidence({f"x{i}": 1 for i in range(200)}),
                               torch.tensor(200 * math.log(0.01), dtype=torch.float64),
                               atol=0, rtol=1e-12)
    # every other node observed: the hidden ones are summed out, p(x_{i+2} | x_i) = T^2
    two = t @ t
    rows = torch.tensor([[1] * 100, [0] * 100, [1, 0] * 50])
    ev = {f"x{2 * k}": rows[:, k] for k in range(100)}
    expected = torch.stack([math.log([0.99, 0.01][int(r[0])])
                            + two[r[:-1], r[1:]].log().sum() for r in rows])
    torch.testing.assert_close(dag.log_evidence(ev), expected, atol=0, rtol=1e-12)


def test_posterior_under_evidence_of_probability_below_1e_minus_308_matches_log_space_enumeration():
    # h0 -> h1 -> h2 (3 states each), 150 binary children of each h_j, all observed: the
    # query's contraction covers all 450 tiny factors (log p(e) near -1400 for row 0).
    gen = torch.Generator().manual_seed(0)

    def rows(shape):
        t = torch.rand(shape, generator=gen, dtype=torch.float64) + 0.5
        return t / t.sum(-1, keepdim=True)

    p0, t1, t2 = rows(3), rows((3, 3)), rows((3, 3))
    base = 0.02 + 0.08 * torch.rand(3, 150, generator=gen, dtype=torch.float64)
    on = base.unsqueeze(1) * (1 + 0.1 * (2 * torch.rand(3, 3, 150, generator=gen,
                                                        dtype=torch.float64) - 1))
    emit = torch.stack([1 - on, on], -1)  # emit[j, h, i] = p(o_ji | h_j = h)
    spec = {"h0": cpt([], p0), "h1": cpt(["h0"], t1), "h2": cpt(["h1"], t2),
            "never": cpt(["h2"], [[1.0, 0.0]] * 3)}
    for j in range(3):
        for i in range(150):
            spec[f"o{j}_{i}"] = cpt([f"h{j}"], emit[j, :, i])
    dag = DAG(spec)
    obs = torch.stack([torch.ones(3, 150, dtype=torch.long),
                       (torch.rand(3, 150, generator=gen) < 0.5).long()])  # [row, j, i]
    ev = {f"o{j}_{i}": obs[:, j, i] for j in range(3) for i in range(150)}
    # log p(h0, h1, h2, e) by enumeration of the 27 hidden configurations, in log space
    lik = emit.log().unsqueeze(0).expand(2, -1, -1, -1, -1).gather(
        -1, obs.unsqueeze(2).expand(-1, -1, 3, -1).unsqueeze(-1)).squeeze(-1).sum(-1)
    log_joint = (p0.log()[:, None, None] + t1.log()[:, :, None] + t2.log()[None]
                 + lik[:, 0, :, None, None] + lik[:, 1, None, :, None]
                 + lik[:, 2, None, None, :])  # [row, h0, h1, h2]
    log_pe = log_joint.flatten(1).logsumexp(-1)
    assert log_pe[0] < math.log(1e-308) < log_pe[1]
    torch.testing.assert_close(dag.log_evidence(ev), log_pe, atol=0, rtol=1e-12)
    post = dag.posterior(["h0", "h1", "h2"], ev)
    for q, dims in (("h0", (2, 3)), ("h1", (1, 3)), ("h2", (1, 2))):
        expected = (log_joint.logsumexp(dims) - log_pe[:, None]).exp()
        torch.testing.assert_close(post[q], expected, atol=0, rtol=1e-9)
    # impossible evidence in the same contraction is still -inf and refused
    scalar = {k: int(v[0]) for k, v in ev.items()}
    assert dag.log_evidence({**scalar, "never": 1}) == -math.inf
    with pytest.raises(DAGError, match="probability zero"):
        dag.posterior("h1", {**scalar, "never": 1})


def test_batched_evidence_is_one_contraction_per_pattern_and_matches_rows():
    dag = read_bif("alarm")
    gen = torch.Generator().manual_seed(0)
    ev, free = _random_evidence(dag, gen, rows=500, k=6)
    dag._expressions.clear()
    batched = dag.posterior(free[0], ev)[free[0]]
    # the query's contraction and the zero-evidence check of the factors outside its
    # component: two contraction expressions for 500 rows, none per row
    assert len(dag._expressions) <= 2
    assert batched.shape == (500, len(dag.states(free[0])))
    for r in (0, 123, 499):
        row = dag.posterior(free[0], {v: int(t[r]) for v, t in ev.items()})[free[0]]
        torch.testing.assert_close(batched[r], row)


def test_barren_nodes_are_pruned_before_contraction():
    # A continuous leaf is barren for queries about its discrete ancestors: exact inference
    # must ignore it rather than refuse the network.
    import pyro.distributions as dist

    dag = DAG({"a": cpt([], [0.3, 0.7]), "b": cpt(["a"], [[0.9, 0.1], [0.2, 0.8]]),
               "y": lambda b: dist.Normal(b.float(), 1.0)})
    post = dag.posterior("a", {"b": 1})["a"]
    expected = torch.tensor([0.3 * 0.1, 0.7 * 0.8], dtype=torch.float64)
    torch.testing.assert_close(post, expected / expected.sum())
    with pytest.raises(InferenceError, match="'y'"):
        dag.posterior("a", {"y": 0.5})


def test_observed_query_is_one_hot_and_no_evidence_gives_prior():
    dag = read_bif("asia")
    post = dag.posterior(["lung", "smoke"], {"lung": "no"})
    torch.testing.assert_close(post["lung"], torch.tensor([0.0, 1.0], dtype=torch.float64))
    prior = dag.posterior("smoke")["smoke"]
    torch.testing.assert_close(prior, torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert dag.log_evidence({}) == 0.0
    # p(smoke=yes, lung=yes) = 0.5 * 0.1
    assert math.isclose(dag.log_evidence({"smoke": "yes", "lung": "yes"}).item(), math.log(0.05))


def test_evidence_errors_name_the_culprit():
    dag = read_bif("asia")
    with pytest.raises(DAGError, match="unknown node 'smok'.*did you mean 'smoke'"):
        dag.posterior("lung", {"smok": "yes"})
    with pytest.raises(DAGError, match="no state 'maybe'.*states are \\['yes', 'no'\\]"):
        dag.posterior("lung", {"smoke": "maybe"})
    with pytest.raises(DAGError, match="got index 2; expected 0..1"):
        dag.posterior("lung", {"smoke": 2})
    with pytest.raises(DAGError, match="probability zero"):
        dag.posterior("lung", {"tub": "yes", "either": "no"})
    with pytest.raises(DAGError, match="one batch size B.*got lengths \\[2, 3\\]"):
        dag.posterior("xray", {"tub": torch.tensor([0, 1]), "smoke": torch.tensor([0, 1, 1])})
    assert dag.log_evidence({"tub": "yes", "either": "no"}) == -math.inf


def test_zero_probability_evidence_outside_the_query_component_is_detected():
    # a is observed, so its factor p(a = 1) = 0 is not connected to the query b
    dag = DAG({"a": cpt([], [1.0, 0.0]), "b": cpt(["a"], [[0.5, 0.5], [0.5, 0.5]])})
    with pytest.raises(DAGError, match="probability zero"):
        dag.posterior("b", {"a": 1})
    with pytest.raises(DAGError, match="probability zero"):
        dag.posterior("a", {"a": 1})  # an observed query is one-hot only for possible evidence
    with pytest.raises(DAGError, match="probability zero under the network \\(batch rows \\[1\\]"):
        dag.posterior("b", {"a": torch.tensor([0, 1, 0])})
    torch.testing.assert_close(dag.posterior("b", {"a": torch.tensor([0, 0])})["b"],
                               torch.full((2, 2), 0.5, dtype=torch.float64))
    # impossible only jointly: b = a and c = b are deterministic, d is unrelated
    eye = [[1.0, 0.0], [0.0, 1.0]]
    chain = DAG({"a": cpt([], [0.5, 0.5]), "b": cpt(["a"], eye), "c": cpt(["b"], eye),
                 "d": cpt([], [0.2, 0.8])})
    with pytest.raises(DAGError, match="probability zero under the network \\(batch rows \\[1\\]"):
        chain.posterior("d", {"a": torch.tensor([0, 0, 1]), "c": torch.tensor([0, 1, 1])})
    with pytest.raises(DAGError, match="probability zero"):
        chain.posterior("d", {"a": 0, "c": 1})
    torch.testing.assert_close(chain.posterior("d", {"a": 1, "c": 1})["d"],
                               torch.tensor([0.2, 0.8], dtype=torch.float64))
    # evidence contradicting an intervention is impossible too
    done = read_bif("asia").do({"either": "yes"})
    with pytest.raises(DAGError, match="probability zero"):
        done.posterior("lung", {"either": "no"})
    assert done.log_evidence({"either": "no"}) == -math.inf


def test_contractions_too_large_for_memory_are_refused(monkeypatch):
    import pgm_lab.dag.exact as exact

    dag = read_bif("alarm")
    monkeypatch.setattr(exact, "MAX_INTERMEDIATE", 8)
    with pytest.raises(InferenceError, match="treewidth is too large.*method='importance'"):
        dag.posterior("HR", {"BP": "LOW"})


def test_agrees_with_pyro_enumeration_on_the_model():
    # TraceEnum_ELBO with an empty guide enumerates every latent site of dag.model exactly:
    # its loss is -sum_rows log p(e_row), an independent check of the contraction and of
    # the Pyro program (CPT sites index their tables with enumerated parents).
    from pyro.infer import TraceEnum_ELBO, config_enumerate

    dag = read_bif("asia").condition({"xray": torch.tensor([0, 1, 0, 1]),
                                      "dysp": torch.tensor([1, 1, 0, 0]), "smoke": "yes"})
    loss = TraceEnum_ELBO(max_plate_nesting=1).loss(config_enumerate(dag.model), lambda: None)
    assert math.isclose(loss, -float(dag.log_evidence().sum()), rel_tol=1e-6)


# ---------------------------------------------------------------- all marginals at once
@pytest.mark.parametrize("name", ["asia", "alarm", "child"])
def test_marginals_equal_per_node_posteriors_for_batched_evidence(name):
    dag = read_bif(name)
    gen = torch.Generator().manual_seed(7)
    evidence, free = _random_evidence(dag, gen, rows=4, k=3)
    ours = dag.marginals(evidence)
    assert list(ours) == [n for n in dag.nodes if n in free]
    ref = dag.posterior(free, evidence)
    for v in free:
        assert ours[v].shape == (4, len(dag.states(v))) and ours[v].dtype == torch.float64
        torch.testing.assert_close(ours[v], ref[v], atol=1e-12, rtol=0)


def test_marginals_are_one_backward_pass_not_one_contraction_per_node(monkeypatch):
    from pgm_lab.dag import exact

    dag = read_bif("alarm")
    calls = []
    real = exact._contract
    monkeypatch.setattr(exact, "_contract", lambda *a, **k: calls.append(1) or real(*a, **k))
    out = dag.marginals({"HR": "HIGH"})
    assert len(calls) == 1 and len(out) == len(dag.nodes) - 1


@settings(max_examples=25, deadline=None)
@given(small_networks(), st.data())
def test_marginals_match_brute_force_enumeration(net, data):
    dag, _ = net
    joint = _brute_force(dag)
    ev, sub, kept = draw_evidence(data, dag, joint)
    if sub.sum() == 0:
        with pytest.raises(DAGError, match="probability zero"):
            dag.marginals(ev)
        return
    got = dag.marginals(ev)
    assert list(got) == kept
    for i, q in enumerate(kept):
        dims = tuple(j for j in range(len(kept)) if j != i)
        expected = (sub.sum(dims) if dims else sub) / sub.sum()
        torch.testing.assert_close(got[q], expected, atol=1e-9, rtol=1e-9)


def test_marginals_under_evidence_of_probability_1e_minus_400_use_log_space_and_stay_exact():
    # chain x0 -> ... -> x399, T = [[0.9, 0.1], [0.1, 0.9]], evidence: alternating states,
    # p(e) = 0.5 * 0.1^399 ~ 1e-399; posterior of the unobserved odd-free middle node closed form
    t = torch.tensor([[0.9, 0.1], [0.1, 0.9]], dtype=torch.float64)
    n = 401
    spec = {"x0": cpt([], [0.5, 0.5])}
    for i in range(1, n):
        spec[f"x{i}"] = cpt([f"x{i - 1}"], t)
    dag = DAG(spec)
    ev = {f"x{i}": i % 2 for i in range(n) if i != 200}
    # x199 = 1, x201 = 1: p(x200 = s) ∝ T[1, s] T[s, 1] = (0.1 * 0.1, 0.9 * 0.9)
    expected = torch.tensor([0.01, 0.81], dtype=torch.float64) / 0.82
    assert dag.log_evidence(ev) < math.log(1e-300)
    got = dag.marginals(ev)
    torch.testing.assert_close(got["x200"], expected, atol=1e-12, rtol=0)
    assert list(got) == ["x200"]


def test_joint_posterior_matches_brute_force_and_marginals():
    dag = read_bif("asia")
    joint = _brute_force(dag)
    nodes = list(dag.nodes)
    ev = {"dysp": 0, "xray": 1}
    sub = joint[tuple(ev.get(n, slice(None)) for n in nodes)]
    kept = [n for n in nodes if n not in ev]
    q = ["lung", "tub", "bronc"]
    keep = [kept.index(v) for v in q]
    expected = sub.sum(tuple(i for i in range(len(kept)) if i not in keep))
    expected = expected.permute(*torch.tensor(keep).argsort().tolist()) / sub.sum()
    got = dag.posterior(q, ev, joint=True)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)
    batched = dag.posterior(["lung", "xray"], {"dysp": torch.tensor([0, 1, 0]),
                                               "xray": torch.tensor([1, 1, 0])}, joint=True)
    assert batched.shape == (3, 2, 2)
    torch.testing.assert_close(batched[0].sum(-1), dag.posterior("lung", ev)["lung"])
    torch.testing.assert_close(batched[1, :, 0], torch.zeros(2, dtype=torch.float64))


def test_joint_posterior_refuses_empty_repeated_or_unknown_queries():
    dag = read_bif("asia")
    for bad, msg in (([], "non-empty list"), (["lung", "lung"], "distinct"),
                     (["lnug"], "did you mean 'lung'")):
        with pytest.raises(DAGError, match=msg):
            dag.posterior(bad, joint=True)
