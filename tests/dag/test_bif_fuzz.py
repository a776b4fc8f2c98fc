"""Fuzzing and scaling of the BIF reader: every input parses or raises DAGError with a line,
in time linear in its size."""

import re
import time
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgm_lab.dag import DAG, available_networks, parse_bif
from pgm_lab.dag.networks import network_path
from pgm_lab.errors import DAGError

SMALL = ["asia", "cancer", "earthquake", "survey"]
TEXTS = {name: network_path(name).read_text() for name in available_networks()}
# fragments that once broke the reader: openers left open, non-ASCII digits, huge counts
CHUNKS = ["{", "}", "[", "]", "(", ")", ";", ",", "|", "/*", "*/", "//", "\n", "property ",
          "table", "default", "variable", "probability", "type", "discrete", "²", "٣", "1_0",
          "nan", "-0.5", "1e400", "0", "9" * 5000, "\x00", "\ufeff", "\r", "\u2028"]
RUNS = ["\n", " ", "\t", "/*", "/* ", "//", "property ", "(", "{"]


@st.composite
def mutated_bif(draw) -> str:
    """A bundled network with up to four edits: insert a fragment or a long run of one,
    delete or duplicate a span."""
    text = TEXTS[draw(st.sampled_from(SMALL))]
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "run", "delete", "duplicate", "char"]))
        if op == "insert":
            piece = draw(st.sampled_from(CHUNKS))
        elif op == "run":
            piece = draw(st.sampled_from(RUNS)) * draw(st.sampled_from([100, 3000, 30_000]))
        elif op == "char":
            piece = draw(st.characters())
        else:
            span = text[pos:pos + draw(st.integers(1, 200))]
            piece = span * draw(st.integers(1, 30)) if op == "duplicate" else ""
            text = text[:pos] + text[pos + len(span):] if op == "delete" else text
        text = text[:pos] + piece + text[pos:]
    return text


@settings(max_examples=300, deadline=timedelta(seconds=2),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(mutated_bif())
def test_mutated_files_parse_or_raise_dag_error_with_a_line(text):
    # builtin ValueError, OverflowError, MemoryError or a hang were all seen before
    try:
        dag = parse_bif(text, source="f.bif")
    except DAGError as exc:
        msg = str(exc)  # one line that names the place, of readable length
        assert re.match(r"f\.bif:\d+: ", msg) and "\n" not in msg and len(msg) < 1000, msg
    else:
        assert isinstance(dag, DAG)


TINY = ("variable a { type discrete [ 2 ] { x, y }; }\n"
        "probability ( a ) { table 0.5, 0.5; }\n")


def _many_rows(n: int) -> str:
    names = [f"s{i}" for i in range(n // 20)]
    rows = "".join(f"  ({s}) 0.5, 0.5;\n" for s in names)
    return (f"variable p {{ type discrete [ {len(names)} ] {{ {', '.join(names)} }}; }}\n"
            f"probability ( p ) {{ table {', '.join(['0'] * (len(names) - 1))}, 1; }}\n"
            f"variable c {{ type discrete [ 2 ] {{ x, y }}; }}\n"
            f"probability ( c | p ) {{\n{rows}}}\n")


# Each input of about n characters; the quadratic scanner took seconds at n = 20_000 (asia
# + 16k newlines: 7.5 s), a linear one takes milliseconds.
GROWING = {
    "trailing whitespace": lambda n: TINY + "\n" * n,
    "whitespace before a token": lambda n: TINY.replace("table", " " * n + "table"),
    "unclosed comment": lambda n: TINY + "/*" + " " * n,
    "many unclosed comment openers": lambda n: TINY + "/* " * (n // 3),
    "unterminated property": lambda n: TINY + "property " + "x " * (n // 2),
    "many property words": lambda n: TINY + "property " * (n // 9),
    "many comments": lambda n: TINY + "/**/ // x\n" * (n // 10),
    "long word": lambda n: TINY + "x" * n,
    "long number": lambda n: TINY.replace("0.5, 0.5", "0.5" + "0" * n + ", 0.5"),
    "many rows": _many_rows,
}


def _seconds(text: str) -> float:
    """Fastest of five parses (raising DAGError counts as a parse)."""
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        try:
            parse_bif(text)
        except DAGError:
            pass
        best = min(best, time.perf_counter() - t0)
    return best


@pytest.mark.parametrize("case", list(GROWING))
def test_parse_time_grows_linearly_with_the_input(case):
    make = GROWING[case]
    small, large = make(2_000), make(20_000)
    ratio = _seconds(large) / _seconds(small)
    # linear: ~10 (less where fixed costs dominate the small input); quadratic: ~100
    assert ratio < 30, f"{case}: 10x the input took {ratio:.0f}x the time"
