import pyro.distributions as dist
import pytest
import torch

from pgm_lab import DAG, DAGError, cpt
from pgm_lab.dag import to_pgmpy

from ._oracles import pgmpy, pgmpy_posterior


def test_to_pgmpy_keeps_names_states_and_answers():
    pgmpy()  # skips without pgmpy
    dag = DAG({"a": cpt([], [0.3, 0.7], states=["lo", "hi"]),
               "b": cpt(["a"], [[0.9, 0.05, 0.05], [0.2, 0.3, 0.5]], states=["x", "y", "z"])})
    model = to_pgmpy(dag)
    assert set(model.nodes()) == {"a", "b"} and set(model.edges()) == {("a", "b")}
    assert model.get_cpds("b").state_names["b"] == ["x", "y", "z"]
    ours = dag.posterior("a", {"b": "z"})["a"]
    theirs = pgmpy_posterior(model, "a", {"b": "z"}, dag.states("a"))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


def test_to_pgmpy_refuses_continuous_nodes():
    dag = DAG({"a": dist.Bernoulli(0.5), "b": lambda a: dist.Normal(a, 1.0)})
    with pytest.raises(DAGError, match=r"\['b'\] are not discrete"):
        to_pgmpy(dag)
