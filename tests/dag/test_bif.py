import gzip
import warnings

import pytest
import torch

from pgm_lab.dag import DAG, available_networks, bif, cpt, parse_bif, read_bif
from pgm_lab.errors import DAGError

from ._oracles import pgmpy, pgmpy_file

BUNDLED = ["alarm", "asia", "cancer", "child", "earthquake", "sachs", "survey"]


def _same(a: DAG, b: DAG) -> None:
    """``b`` read back from ``a``'s BIF: an unnamed ``a`` is written as ``network unknown``."""
    name = "unknown" if a.name is None else a.name
    assert a.nodes == b.nodes and a.edges == b.edges and b.name == name
    for n in a.nodes:
        assert a.states(n) == b.states(n)
        assert torch.equal(a.tables([n])[n], b.tables([n])[n])  # bit-exact


def test_bundled_networks_are_loadable_by_name():
    assert list(available_networks()) == BUNDLED
    asia = read_bif("asia")
    assert len(asia.nodes) == 8 and asia.states("smoke") == ("yes", "no")
    assert asia.parents("either") == ("lung", "tub")
    with pytest.raises(DAGError, match="did you mean 'alarm'"):
        read_bif("alarn")


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_networks_carry_their_name_through_a_round_trip(name, tmp_path):
    # all were named "unknown", as bnlearn distributes them
    dag = read_bif(name)
    assert dag.name == name
    text = dag.to_bif(tmp_path / "net.bif")
    assert text.startswith(f"network {name} {{\n")
    assert read_bif(tmp_path / "net.bif").name == name


@pytest.mark.parametrize("name", BUNDLED)
def test_round_trip_is_exact(name, tmp_path):
    dag = read_bif(name)
    text = dag.to_bif(tmp_path / f"{name}.bif")
    again = read_bif(tmp_path / f"{name}.bif")
    _same(dag, again)
    assert again.to_bif() == text
    dag.to_bif(tmp_path / f"{name}.bif.gz")
    _same(dag, read_bif(tmp_path / f"{name}.bif.gz"))


def test_files_in_bnlearn_layout_are_reproduced_byte_for_byte():
    for name in ("asia", "cancer", "earthquake"):
        path = pgmpy_file(name)
        with gzip.open(path, "rt") as f:
            assert read_bif(path).to_bif() == f.read()


@pytest.mark.parametrize("name", ["asia", "win95pts"])
def test_parse_agrees_with_pgmpy_reader(name):
    _, _, _, BIFReader = pgmpy()
    path = pgmpy_file(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with gzip.open(path, "rt") as f:
            model = BIFReader(string=f.read()).get_model()
    dag = read_bif(path)
    assert set(dag.nodes) == set(model.nodes())
    assert set(dag.edges) == set(model.edges())
    for cpd in model.get_cpds():
        n = cpd.variable
        ps = list(dag.parents(n))
        ref = cpd.copy()
        if ps and list(ref.variables[1:]) != ps:
            ref.reorder_parents(ps)
        assert list(ref.state_names[n]) == list(dag.states(n))
        table = torch.as_tensor(ref.get_values(), dtype=torch.float64)
        ours = dag.tables([n])[n].reshape(-1, len(dag.states(n))).T
        assert torch.equal(ours, table)


def test_table_default_comments_and_properties_are_read_and_kept():
    text = """// a comment
network toy { property author = me; }
variable a { type discrete [ 2 ] { lo, hi }; property color = red; }
variable b { type discrete [ 3 ] { x, y, z }; }
/* block
   comment */
probability ( a ) { table 0.25 0.75; }
probability ( b | a ) {
  (hi) 0.1, 0.2, 0.7;
  default 0.5, 0.25, 0.25;
}
"""
    dag = parse_bif(text)
    assert dag.name == "toy" and dag.properties == ("author = me",)
    assert dag.spec["a"].properties == ("color = red",)
    torch.testing.assert_close(dag.tables(["b"])["b"], torch.tensor(
        [[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]], dtype=torch.float64))
    _same(dag, parse_bif(dag.to_bif()))
    assert "property color = red;" in dag.to_bif()
    # "table" with parents: child slowest, parent configurations fastest (BIF convention)
    two = parse_bif("variable a { type discrete [ 2 ] { u, v }; }\n"
                    "variable b { type discrete [ 2 ] { s, t }; }\n"
                    "probability ( a ) { table 0.5, 0.5; }\n"
                    "probability ( b | a ) { table 0.9, 0.2, 0.1, 0.8; }\n")
    torch.testing.assert_close(two.tables(["b"])["b"], torch.tensor(
        [[0.9, 0.1], [0.2, 0.8]], dtype=torch.float64))


_A = "variable a { type discrete [ 2 ] { x, y }; }\nprobability ( a ) { table 0.5, 0.5; }\n"
MALFORMED = [
    ("variable a { type discrete [ 2 ] { x, y };\nprobability ( a ) { table 0.5, 0.5; }\n",
     2, "expected 'type', 'property' or '}', got 'probability'"),
    ("variable a { type discrete [ 3 ] { x, y }; }\n", 1, "declares \\[ 3 \\] states but lists 2"),
    ("variable a { type discrete [ 2 ] { x, y }; }\n\nprobability ( a ) { table 0.5, 0.7; }\n",
     3, "sums to 1.2"),
    ("variable a { type discrete [ 2 ] { x, y }; }\nprobability ( a | b ) { table 0.5; }\n",
     2, "variable 'b', which is not declared"),
    ("variable a { type discrete [ 2 ] { x, y }; }\nvariable b { type discrete [ 2 ] { x, y }; }\n"
     "probability ( a ) { table 0.5, 0.5; }\nprobability ( b | a ) {\n  (x) 0.5, 0.5;\n}\n",
     4, "no row for parent configuration \\(a=y\\)"),
    ("variable a { type discrete [ 2 ] { x, y }; }\nvariable b { type discrete [ 2 ] { x, y }; }\n"
     "probability ( a ) { table 0.5, 0.5; }\nprobability ( b | a ) {\n  (q) 0.5, 0.5;\n}\n",
     5, "'q' is not a state of 'a'"),
    ("variable a { type discrete [ 2 ] { x, y }; }\nprobability ( a ) { table 0.5, abc; }\n",
     2, "expected a number, got 'abc'"),
    ("variable a { type discrete [ 2 ] { x, y }; }\n", 1, "has no probability block"),
    ("variable a { type discrete [ 2 ] { x, y }; }\nprobability ( a ) { table 0.5, 0.5;\n",
     3, "expected '}' closing the probability block of 'a' \\(line 2\\), got end of file"),
    ("network x {}\nnode a;\n", 2, "expected 'network', 'variable' or 'probability', got 'node'"),
    ("variable a { type discrete [ 2 ] { x y }; }\n", 1, "expected ',' or '}', got 'y'"),
    ("variable a { type discrete [ 2 ] { x, y }; }\nprobability ( a ) { table 0.5,, 0.5; }\n",
     2, "expected a number or ';', got ','"),
    ("variable a { type discrete [ 2 ] { x, y }; }\nprobability ( a ) {\n table ; }\n",
     3, "expected at least one number"),
    # each of these was a builtin exception (ValueError, OverflowError, MemoryError), a hang
    # or silently accepted
    (_A + "\n/* comment never closed\n" + "\n" * 100, 4, "expected '\\*/' closing this comment"),
    (_A + "/*/\n", 3, "expected '\\*/' closing this comment"),
    (_A + "\nproperty never ended\n", 4, "expected ';' ending this property"),
    ("variable a { type discrete [ \u00b2 ] { x, y }; }\n", 1,
     "expected the number of states as ASCII digits in \\[ \\], got '\u00b2'"),
    ("variable a { type discrete [ \u0662 ] { x, y }; }\n", 1, "as ASCII digits"),
    ("variable a {\n type discrete [ " + "9" * 5000 + " ] { x, y }; }\n", 2,
     "declares 99999999999999999999... states and lists 2, expected at most MAX_STATES = 65536"),
    ("variable a { type discrete [ 70000 ] { x, y }; }\n", 1, "at most MAX_STATES = 65536"),
    ("variable a { type discrete [ 00002 ] { x, y }; }\n", 1, "has no probability block"),
    ("variable a { type discrete [ 2 ] { x, y }; }\nprobability ( a ) { table 0.5, \u0660.5; }\n",
     2, "expected a number written with ASCII digits, got '\u0660.5'"),
    ("variable a { type discrete [ 2 ] { x, y }; }\nprobability ( a ) { table 0.5, 0_5; }\n",
     2, "expected a number written with ASCII digits, got '0_5'"),
    ("variable a { type discrete [ 2 ] { x, y }; }\nprobability ( a ) { table 0.5 0.5 0.5; }\n",
     2, "expected ';' after 2 numbers \\(2 states x 1 parent configurations of 'a'\\), got"),
    (_A + "variable b { type discrete [ 2 ] { x, y }; }\n"
     "probability ( b | a, a ) { default 0.5, 0.5; }\n", 4, "lists a parent twice: \\['a', 'a'\\]"),
    (_A + "variable b { type discrete [ 2 ] { x, y }; }\n"
     "probability ( b | a ) { default 0.5, 0.5; }\n\nprobability ( b ) { table 0.5, 0.5; }\n",
     6, "second probability block for 'b' \\(first on line 4\\)"),
    (_A + "variable b { type discrete [ 1 ] { x }; }\n"
     "probability ( b | b ) { (x) 1.0; }\n", 4, "cycle b -> b"),
    ("".join(f"variable v{i} {{ type discrete [ 2 ] {{ x, y }}; }}\n"
             f"probability ( v{i} ) {{ table 0.5, 0.5; }}\n" for i in range(40))
     + "variable c { type discrete [ 2 ] { x, y }; }\n\n"
     + f"probability ( c | {', '.join(f'v{i}' for i in range(40))} ) {{ default 0.5, 0.5; }}\n",
     83, "table of 'c' \\(2 states, 40 parents\\) has more than the 16777136 entries left "
     "of MAX_TABLE_ENTRIES = 16777216"),
]


@pytest.mark.parametrize("text, line, message", MALFORMED)
def test_malformed_files_raise_with_line_number(text, line, message, tmp_path):
    path = tmp_path / "bad.bif"
    path.write_text(text)
    with pytest.raises(DAGError, match=f"bad.bif:{line}: .*{message}"):
        read_bif(path)


def test_reading_is_bounded_by_max_file_bytes(tmp_path, monkeypatch):
    # /dev/zero hung: the whole file was read before parsing
    with pytest.raises(DAGError, match="zero:1: expected a BIF file of at most MAX_FILE_BYTES "
                                       f"= {bif.MAX_FILE_BYTES} bytes, got more"):
        read_bif("/dev/zero")
    text = read_bif("asia").to_bif()
    monkeypatch.setattr(bif, "MAX_FILE_BYTES", len(text))
    for suffix in (".bif", ".bif.gz"):  # the limit counts decompressed bytes (gzip bombs)
        path = tmp_path / f"net{suffix}"
        read_bif("asia").to_bif(path)
        assert read_bif(path).name == "asia"  # at the limit
        DAG(read_bif("asia").spec, name="asia", properties=["x=1"]).to_bif(path)
        with pytest.raises(DAGError, match=f"net{suffix}:\\d+: .*at most MAX_FILE_BYTES"):
            read_bif(path)
    with pytest.raises(DAGError, match="<string>:\\d+: expected at most MAX_FILE_BYTES = "
                                       f"{len(text)} characters of BIF, got {len(text) + 12}"):
        parse_bif(text.replace("{\n", "{\nproperty x;\n", 1))
    bad = tmp_path / "cut.bif.gz"
    bad.write_bytes(gzip.compress(text.encode())[:-20])
    with pytest.raises(DAGError, match="cannot read BIF file .*cut.bif.gz"):  # was EOFError
        read_bif(bad)


def test_table_entries_are_bounded_for_the_whole_network(monkeypatch):
    # a 'default' row fills a table far larger than its text: 26 binary parents took 23 s and
    # 3.5 GB, 40 a MemoryError; the bound holds for all tables together
    monkeypatch.setattr(bif, "MAX_TABLE_ENTRIES", 10)
    text = "".join(f"variable {v} {{ type discrete [ 2 ] {{ x, y }}; }}\n" for v in "abc")
    ok = text + "".join(f"probability ( {v} ) {{ table 0.5, 0.5; }}\n" for v in "abc")
    assert parse_bif(ok).nodes == ("a", "b", "c")
    grown = ok.replace("( c ) { table", "( c | a, b ) { default")
    with pytest.raises(DAGError, match="<string>:6: the table of 'c' \\(2 states, 2 parents\\) "
                                       "has more than the 6 entries left of MAX_TABLE_ENTRIES"):
        parse_bif(grown)


def test_properties_round_trip_exactly_or_are_refused():
    dag = read_bif("cancer")
    multi = DAG(dag.spec, name="cancer", properties=["note = two\n  lines // /* x */ {}"])
    assert parse_bif(multi.to_bif()).properties == multi.properties
    # the reader ends a property at ';' and strips it: such properties were written anyway
    for prop in ("a = 1; b = 2", " padded", "crlf\r\nline", 3):
        with pytest.raises(DAGError, match="cannot be written to BIF: expected a string without "
                                           "';'"):
            DAG(dag.spec, properties=[prop]).to_bif()


def test_cycle_in_file_and_unwritable_networks():
    with pytest.raises(DAGError, match="cycle"):
        parse_bif("variable a { type discrete [ 1 ] { x }; }\n"
                  "variable b { type discrete [ 1 ] { x }; }\n"
                  "probability ( a | b ) { (x) 1.0; }\nprobability ( b | a ) { (x) 1.0; }\n")
    import pyro.distributions as dist

    with pytest.raises(DAGError, match="discrete networks only; nodes \\['y'\\]"):
        DAG({"a": dist.Bernoulli(0.5), "y": lambda a: dist.Normal(a, 1.0)}).to_bif()
    with pytest.raises(DAGError, match="not a valid BIF name"):
        DAG({"a": cpt([], [0.5, 0.5], states=["no way", "ok"])}).to_bif()
    # the scanner reads "property ...;" as a property line: such names cannot round-trip
    for spec in ({"property": cpt([], [0.5, 0.5])},
                 {"a": cpt([], [0.5, 0.5], states=["x", "property"])}):
        with pytest.raises(DAGError, match="'property'.*not a valid BIF name"):
            DAG(spec).to_bif()
    ok = DAG({"properties": cpt([], [0.5, 0.5], states=["property_x", "y"])})
    _same(ok, parse_bif(ok.to_bif()))


def test_tabulated_callables_and_bernoulli_roots_are_written_as_tables():
    import pyro.distributions as dist

    dag = DAG({"a": dist.Bernoulli(0.25), "b": lambda a: dist.Bernoulli(0.1 + 0.8 * a)})
    back = parse_bif(dag.to_bif())
    torch.testing.assert_close(back.tables(["b"])["b"], torch.tensor(
        [[0.9, 0.1], [0.1, 0.9]], dtype=torch.float64))
    torch.testing.assert_close(back.posterior("a", {"b": "1"})["a"],
                               dag.posterior("a", {"b": 1})["a"])


def test_files_with_a_byte_order_mark_or_crlf_line_ends_are_read(tmp_path):
    dag = read_bif("cancer")
    bom = tmp_path / "bom.bif"
    bom.write_text(dag.to_bif(), encoding="utf-8-sig")  # as Windows editors save UTF-8
    _same(dag, read_bif(bom))
    crlf = tmp_path / "crlf.bif"
    crlf.write_bytes(dag.to_bif().replace("\n", "\r\n").encode())
    _same(dag, read_bif(crlf))


def test_probability_blocks_may_precede_the_variables_they_use():
    # BIF does not order the blocks (pgmpy's reader accepts this file too)
    text = ("network toy { }\n"
            "probability ( b | a ) { (u) 0.9, 0.1; (v) 0.2, 0.8; }\n"
            "variable b { type discrete [ 2 ] { s, t }; }\n"
            "probability ( a ) { table 0.3, 0.7; }\n"
            "variable a { type discrete [ 2 ] { u, v }; }\n")
    dag = parse_bif(text)
    assert dag.nodes == ("a", "b") and dag.states("b") == ("s", "t")
    torch.testing.assert_close(dag.tables(["b"])["b"], torch.tensor(
        [[0.9, 0.1], [0.2, 0.8]], dtype=torch.float64))
    _same(dag, parse_bif(dag.to_bif()))
    with pytest.raises(DAGError, match="<string>:2: .*variable 'c', which is not declared"):
        parse_bif(text.replace("( b | a )", "( b | c )"))


def test_undeclared_long_variable_name_is_clipped_in_the_hint_too():
    name = "v" * 5000
    text = f"network n {{}}\nprobability ( {name} ) {{\n  table 0.5, 0.5;\n}}\n"
    with pytest.raises(DAGError, match="not declared") as info:
        parse_bif(text)
    assert len(str(info.value)) < 400 and "'variable <name> { type discrete" in str(info.value)


def test_an_unnamed_dag_is_written_with_the_placeholder_name_pgmpy_reads():
    # the grammar needs a network name; bnlearn and pgmpy's writer use "unknown"
    dag = DAG({"a": cpt([], [0.25, 0.75]), "b": cpt(["a"], [[0.5, 0.5], [0.1, 0.9]])})
    assert dag.name is None
    text = dag.to_bif()
    assert text.startswith("network unknown {\n}\n")
    back = parse_bif(text)
    _same(dag, back)
    assert back.to_bif() == text
    named = DAG(dag.spec, name="mine")
    assert parse_bif(named.to_bif()).name == "mine"
    _, _, _, BIFReader = pgmpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = BIFReader(string=text).get_model()
    assert model.name == "unknown" and sorted(model.nodes()) == ["a", "b"]
