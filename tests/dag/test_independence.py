import itertools
import warnings

import pytest
import torch

from pgm_lab.dag import DAG, cpt, read_bif
from pgm_lab.dag.independence import is_backdoor
from pgm_lab.errors import DAGError

from ._oracles import brute_force, pgmpy_from_dag


def _lecture_dag():
    # a -> b, a -> c, c -> d, d -> e, d -> f
    t = [[0.7, 0.3], [0.2, 0.8]]
    return DAG({"a": cpt([], [0.6, 0.4]), "b": cpt(["a"], t), "c": cpt(["a"], t),
                "d": cpt(["c"], t), "e": cpt(["d"], t), "f": cpt(["d"], t)})


@pytest.mark.parametrize("name", ["asia", "alarm"])
def test_dseparation_and_markov_blanket_match_pgmpy(name):
    dag = read_bif(name)
    model = pgmpy_from_dag(dag)
    gen = torch.Generator().manual_seed(11)
    nodes = list(dag.nodes)
    for _ in range(60):
        perm = torch.randperm(len(nodes), generator=gen).tolist()
        k = int(torch.randint(0, 4, (1,), generator=gen))
        x, y, given = nodes[perm[0]], nodes[perm[1]], [nodes[i] for i in perm[2:2 + k]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = not model.is_dconnected(x, y, observed=given)
        assert dag.is_dseparated(x, y, given) == expected, (x, y, given)
    for v in nodes:
        assert set(dag.markov_blanket(v)) == set(model.get_markov_blanket(v))


def test_dseparation_on_the_lecture_network_and_by_brute_force_independence():
    dag = _lecture_dag()
    assert dag.is_dseparated("b", "d", "a") and not dag.is_dseparated("b", "d")
    assert dag.is_dseparated("e", "f", "d") and not dag.is_dseparated("e", "f", "a")
    assert dag.is_dseparated(["b", "c"], "e", ["a", "d"])
    joint = brute_force(dag)  # axes a b c d e f
    nodes = list(dag.nodes)
    for x, y in itertools.combinations(nodes, 2):
        rest = [n for n in nodes if n not in (x, y)]
        for k in range(3):
            for given in itertools.combinations(rest, k):
                p = _marginal(joint, nodes, [x, y, *given])
                pz = p.sum((0, 1), keepdim=True)
                indep = torch.allclose(p * pz, p.sum(1, keepdim=True) * p.sum(0, keepdim=True),
                                       atol=1e-12)
                if dag.is_dseparated(x, y, given):
                    assert indep, (x, y, given)
                else:  # these tables are generic: d-connected means dependent
                    assert not indep, (x, y, given)


def _marginal(joint, nodes, keep):
    """p(keep) with axes in the order of ``keep``."""
    letters = "abcdefghij"
    eq = "".join(letters[:len(nodes)]) + "->" + "".join(letters[nodes.index(v)] for v in keep)
    return torch.einsum(eq, joint)


def test_markov_blanket_and_local_independencies_of_the_lecture_network():
    dag = _lecture_dag()
    assert dag.markov_blanket("c") == ("a", "d")
    assert dag.markov_blanket("a") == ("b", "c")
    local = {v: (set(o), set(p)) for v, o, p in dag.independencies()}
    assert local["b"] == ({"c", "d", "e", "f"}, {"a"})
    assert local["e"] == ({"a", "b", "c", "f"}, {"d"})
    for v, others, parents in dag.independencies():
        assert dag.is_dseparated(v, others, parents)


def test_errors_name_the_bad_argument():
    dag = _lecture_dag()
    with pytest.raises(DAGError, match="unknown node 'g'"):
        dag.is_dseparated("a", "g")
    with pytest.raises(DAGError, match="disjoint"):
        dag.is_dseparated("a", "b", ["a"])
    with pytest.raises(DAGError, match="not an ancestor"):
        dag.adjustment_set("d", "a")
    with pytest.raises(DAGError, match="different treatment and outcome"):
        dag.adjustment_set("a", "a")


def _adjusted(dag, x, y, z, value):
    """sum_z p(y | x = value, z) p(z), exact, from the observational joint."""
    joint = dag.posterior([y, x, *z], joint=True) if z else dag.posterior([y, x], joint=True)
    pxz = joint.sum(0, keepdim=True)
    cond = joint / pxz
    pz = joint.sum((0, 1))
    return (cond[:, value] * pz).reshape(joint.shape[0], -1).sum(-1)


def _confounded():
    # u -> x, u -> y, x -> m -> y, w -> x (an instrument), y -> s (a descendant)
    g = torch.Generator().manual_seed(2)

    def table(*shape):
        t = torch.rand(*shape, generator=g, dtype=torch.float64) + 0.1
        return t / t.sum(-1, keepdim=True)

    return DAG({"u": cpt([], table(2)), "w": cpt([], table(3)),
                "x": cpt(["u", "w"], table(2, 3, 2)), "m": cpt(["x"], table(2, 2)),
                "y": cpt(["u", "m"], table(2, 2, 3)),
                "s": cpt(["y"], table(3, 2))})


@pytest.mark.parametrize("make,x,y", [(_confounded, "x", "y"), (_lecture_dag, "c", "f"),
                                      (lambda: read_bif("alarm"), "LVFAILURE", "BP"),
                                      (lambda: read_bif("asia"), "smoke", "dysp")])
def test_back_door_adjustment_equals_do(make, x, y):
    dag = make()
    z = dag.adjustment_set(x, y)
    assert is_backdoor(dag._parents, x, y, z)
    for value in range(len(dag.states(x))):
        truth = dag.do({x: value}).posterior(y)[y]
        torch.testing.assert_close(_adjusted(dag, x, y, z, value), truth, atol=1e-12, rtol=0)


def test_adjustment_set_is_minimal_and_avoids_descendants():
    dag = _confounded()
    assert dag.adjustment_set("x", "y") == ("u",)
    assert dag.adjustment_set("m", "y") in (("u",), ("x",))
    # unadjusted conditioning is biased here: the adjustment matters
    naive = dag.posterior("y", {"x": 1})["y"]
    assert (naive - dag.do({"x": 1}).posterior("y")["y"]).abs().max() > 1e-3
