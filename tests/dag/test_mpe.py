import itertools
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pgm_lab.dag import DAG, cpt, maxplus, read_bif
from pgm_lab.errors import DAGError

from ._oracles import brute_force, draw_evidence, pgmpy, pgmpy_from_dag, small_networks


@settings(max_examples=30, deadline=None)
@given(small_networks(), st.data())
def test_mpe_and_marginal_map_match_brute_force_enumeration(net, data):
    dag, _ = net
    joint = brute_force(dag)
    ev, sub, kept = draw_evidence(data, dag, joint)
    if sub.sum() == 0:
        with pytest.raises(DAGError, match="probability zero"):
            dag.map(ev)
        return
    assignment, log_prob = dag.map(ev)
    assert list(assignment) == kept
    torch.testing.assert_close(log_prob, sub.max().log(), atol=1e-12, rtol=1e-12)
    # the decoded assignment attains the maximum (robust to ties)
    idx = tuple(int(assignment[n]) for n in kept)
    torch.testing.assert_close(sub[idx].log(), log_prob, atol=1e-12, rtol=1e-12)
    if kept:
        query = data.draw(st.lists(st.sampled_from(kept), unique=True, min_size=1))
        summed = sub.sum(tuple(i for i, n in enumerate(kept) if n not in query)) \
            if len(query) < len(kept) else sub
        order = [n for n in kept if n in query]
        best, lp = dag.map(ev, query=query)
        assert list(best) == query
        torch.testing.assert_close(lp, summed.max().log(), atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(summed[tuple(int(best[n]) for n in order)].log(), lp,
                                   atol=1e-12, rtol=1e-12)


def test_marginal_map_and_mpe_differ_from_the_per_variable_argmax():
    # p(a, b): (0,0) .3, (0,1) .3, (1,0) .4, (1,1) 0: marginals argmax a=0 (.6), b=0 (.7),
    # MPE (1, 0) with .4; marginal MAP over a is a=0 (.6), unlike the MPE's a=1.
    dag = DAG({"a": cpt([], [0.6, 0.4]), "b": cpt(["a"], [[0.5, 0.5], [1.0, 0.0]])})
    mpe, lp = dag.map()
    assert (int(mpe["a"]), int(mpe["b"])) == (1, 0)
    torch.testing.assert_close(lp, torch.tensor(0.4, dtype=torch.float64).log())
    mmap, lp_a = dag.map(query="a")
    assert int(mmap["a"]) == 0
    torch.testing.assert_close(lp_a, torch.tensor(0.6, dtype=torch.float64).log())
    m = dag.marginals()
    assert (int(m["a"].argmax()), int(m["b"].argmax())) == (0, 0)


@pytest.mark.parametrize("name", ["asia", "survey", "earthquake"])
def test_mpe_matches_pgmpy_map_query(name):
    dag = read_bif(name)
    model = pgmpy_from_dag(dag)
    _, VE, _, _ = pgmpy()
    sample = dag.sample(3, seed=3)
    observed = list(dag.nodes)[-2:]
    ev = {v: sample[v] for v in observed}
    assignment, log_prob = dag.map(ev)
    assert log_prob.shape == (3,) and all(assignment[v].shape == (3,) for v in assignment)
    for r in range(3):
        row = {v: dag.states(v)[int(ev[v][r])] for v in observed}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = VE(model).map_query([n for n in dag.nodes if n not in observed],
                                      evidence=row, show_progress=False)
        ref_idx = {v: torch.tensor([dag.states(v).index(s)]) for v, s in ref.items()}
        ref_lp = dag.log_prob({**ref_idx, **{v: ev[v][r:r + 1] for v in observed}})
        torch.testing.assert_close(log_prob[r], ref_lp[0], atol=1e-9, rtol=0)
        ours = {v: assignment[v][r:r + 1] for v in assignment}
        ours.update({v: ev[v][r:r + 1] for v in observed})
        torch.testing.assert_close(dag.log_prob(ours)[0], log_prob[r], atol=1e-9, rtol=0)


def test_mpe_on_a_chain_with_evidence_below_1e_minus_308_is_exact():
    t = torch.tensor([[0.9, 0.1], [0.1, 0.9]], dtype=torch.float64)
    spec = {"x0": cpt([], [0.5, 0.5])}
    for i in range(1, 401):
        spec[f"x{i}"] = cpt([f"x{i - 1}"], t)
    ev = {f"x{i}": i % 2 for i in range(401) if i != 200}
    assignment, lp = DAG(spec).map(ev)
    assert int(assignment["x200"]) == 1  # 0.9 * 0.9 beats 0.1 * 0.1
    expected = torch.tensor(0.5, dtype=torch.float64).log() + 398 * torch.tensor(
        0.1, dtype=torch.float64).log() + 2 * torch.tensor(0.9, dtype=torch.float64).log()
    torch.testing.assert_close(lp, expected, atol=1e-9, rtol=0)


def test_impossible_evidence_and_bad_queries_are_refused():
    dag = DAG({"a": cpt([], [1.0, 0.0]), "b": cpt(["a"], [[1.0, 0.0], [0.5, 0.5]])})
    with pytest.raises(DAGError, match="probability zero"):
        dag.map({"b": 1})
    with pytest.raises(DAGError, match="batch rows \\[1\\]"):
        dag.map({"b": torch.tensor([0, 1])})
    with pytest.raises(DAGError, match="unknown node 'c'"):
        dag.map(query=["c"])
    with pytest.raises(DAGError, match="expected query=None"):
        dag.map(query=[1])


def test_maxplus_einsum_is_max_of_sums_with_argmax_gradients():
    a = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, 5, dtype=torch.float64)
    out = maxplus.einsum("ij,jk->ik", a, b)
    torch.testing.assert_close(out, (a[:, :, None] + b[None]).amax(1))
    (g,) = torch.autograd.grad(out[0, 0], a)
    j = int((a[0] + b[:, 0]).argmax())
    assert g[0, j] == 1 and g.sum() == 1
    x = a.detach()
    brute = max(float(x[i, j] + b[j, k])
                for i, j, k in itertools.product(range(3), range(4), range(5)))
    assert float(maxplus.einsum("ij,jk->", x, b)) == pytest.approx(brute)
