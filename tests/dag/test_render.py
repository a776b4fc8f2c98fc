import shutil

import graphviz
import pytest

from pgm_lab.dag import read_bif
from pgm_lab.dag.render import to_text
from pgm_lab.errors import PgmLabWarning


def test_digraph_is_built_from_the_dag_edges():
    dag = read_bif("asia").condition({"xray": "yes"}).do({"either": "no"})
    g = dag.render()
    assert isinstance(g, graphviz.Digraph)
    src = g.source
    for p, c in dag.edges:
        assert f"{p} -> {c}" in src
    assert src.count("->") == len(dag.edges) == 6 and "lung -> either" not in src
    assert 'xray [label="xray\n(2 states)" fillcolor=gray80 style=filled]' in src
    assert "either [label=\"either\n(2 states)\" shape=box]" in src


def test_render_writes_an_image_or_falls_back_to_text(tmp_path):
    dag = read_bif("cancer")
    out = tmp_path / "pics" / "cancer"
    if shutil.which("dot"):
        dag.render(out, format="svg")
        assert (tmp_path / "pics" / "cancer.svg").exists()
    else:
        with pytest.warns(PgmLabWarning, match="'dot' binary not found") as record:
            dag.render(out)
        assert record[0].filename == __file__  # attributed to the caller's line
        assert "Pollution -> Cancer" in (tmp_path / "pics" / "cancer.gv").read_text()
        assert (tmp_path / "pics" / "cancer.txt").read_text() == to_text(dag) + "\n"


def test_text_picture_lists_parents_states_and_markers():
    import pyro.distributions as dist

    from pgm_lab.dag import DAG

    dag = DAG({"a": dist.Bernoulli(0.5), "y": lambda a: dist.Normal(a, 1.0)}).condition({"y": 0.3})
    assert to_text(dag) == "a [2 states]\ny [continuous] <- a  (observed)"


def test_an_unnamed_dag_renders_an_anonymous_digraph():
    import pyro.distributions as dist

    from pgm_lab.dag import DAG
    from pgm_lab.errors import DAGError

    spec = {"a": dist.Bernoulli(0.5), "b": lambda a: dist.Normal(a, 1.0)}
    assert DAG(spec).name is None
    assert DAG(spec).render().source.startswith("digraph {\n")
    assert DAG(spec, name="mine").render().source.startswith("digraph mine {\n")
    assert read_bif("asia").render().source.startswith("digraph asia {\n")
    with pytest.raises(DAGError, match="string or None, got int"):
        DAG(spec, name=3)
