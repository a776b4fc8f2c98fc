"""Reading and writing the BIF format of the bnlearn repository.

Our own scanner and recursive-descent parser (one regular expression pass over the text)
instead of pgmpy's pyparsing grammar, which is slow and pulls in heavy dependencies. The
grammar handled::

    network NAME { property ... ; }
    variable NAME { type discrete [ K ] { s_1, ..., s_K }; property ... ; }
    probability ( X | P_1, ..., P_m ) {
        ( p_1, ..., p_m ) v_1, ..., v_K;    # one row per parent configuration
        table v_1, ...;                     # whole table, X slowest, last parent fastest
        default v_1, ..., v_K;              # rows not listed otherwise
        property ... ;
    }

with ``//`` and ``/* */`` comments, blocks in any order (a probability block may come before
the variable blocks it uses; probability blocks are parsed after all variables are read).
Numbers are parsed with Python's ``float`` (correctly rounded) and written with ``repr``
(shortest string that round-trips), so ``read_bif(to_bif(dag))`` reproduces every float64
exactly; rows are written first parent fastest, like bnlearn and pgmpy, so files in that
layout are reproduced byte for byte.

Reference: F. G. Cozman, "The Interchange Format for Bayesian Networks", 1998
(http://www.cs.cmu.edu/~fgcozman/Research/InterchangeFormat/); bnlearn repository,
https://www.bnlearn.com/bnrepository/.
"""

from __future__ import annotations

import bisect
import gzip
import math
import os
import re
from pathlib import Path

import torch

from ..errors import DAGError
from .core import DAG, ROW_SUM_ATOL
from .graph import suggest
from .spec import CPT

__all__ = ["parse_bif", "read_bif", "to_bif"]

_TOKEN = re.compile(
    r"\s*(?:(//[^\n]*|/\*.*?\*/)|(property\s[^;]*;)|([{}\[\]();,|])|([^\s{}\[\]();,|]+))",
    re.DOTALL,
)
_KINDS = (None, "comment", "prop", "punct", "word")
# a BIF token: no whitespace or punctuation, no comment opener, and not the keyword "property"
# (the scanner reads "property ...;" as a property line wherever it appears)
_SAFE_NAME = re.compile(r"(?!.*//)(?!.*/\*)(?!property$)[^\s{}\[\]();,|]+")


class _Scanner:
    """Tokens ``(kind, value, offset)``; line numbers are computed only for messages."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        kinds, vals, pos = [], [], []
        for m in _TOKEN.finditer(text):
            g = m.lastindex
            if g == 1:
                continue
            val = m.group(g)
            kinds.append(_KINDS[g])
            vals.append(val[len("property"):-1].strip() if g == 2 else val)
            pos.append(m.start(g))
        self.kinds, self.vals, self.pos = kinds, vals, pos
        self.n = len(vals)
        self.i = 0
        self.newlines = [m.start() for m in re.finditer("\n", text)]
        self.end = len(text)

    def line(self, offset: int) -> int:
        return bisect.bisect_left(self.newlines, offset) + 1

    @property
    def last_line(self) -> int:
        return self.line(self.end)

    def peek(self) -> tuple[str, str, int] | None:
        i = self.i
        return (self.kinds[i], self.vals[i], self.pos[i]) if i < self.n else None

    def error(self, expected: str, tok: tuple[str | None, str, int] | None = None) -> DAGError:
        tok = tok if tok is not None else self.peek()
        got = "end of file" if tok is None else repr(tok[1])
        line = self.last_line if tok is None else self.line(tok[2])
        return DAGError(f"{self.source}:{line}: malformed BIF: expected {expected}, got {got}")

    def next(self, expected: str) -> tuple[str, str, int]:
        tok = self.peek()
        if tok is None:
            raise self.error(expected)
        self.i += 1
        return tok

    def expect(self, value: str) -> None:
        tok = self.next(repr(value))
        if tok[1] != value or tok[0] == "prop":
            raise self.error(repr(value), tok)

    def word(self, what: str) -> tuple[str, int]:
        """The next word and its line."""
        tok = self.next(what)
        if tok[0] != "word":
            raise self.error(what, tok)
        return tok[1], self.line(tok[2])

    def accept(self, value: str) -> bool:
        i = self.i
        if i < self.n and self.kinds[i] == "punct" and self.vals[i] == value:
            self.i = i + 1
            return True
        return False

    def skip_block(self) -> None:
        """Move past the next ``{ ... }`` (to the end of the text if it is not closed)."""
        i = self.i
        for brace in ("{", "}"):
            try:  # list.index runs in C; a match must also be punctuation, not a property
                i = self.vals.index(brace, i)
                while self.kinds[i] != "punct":
                    i = self.vals.index(brace, i + 1)
            except ValueError:
                self.i = self.n
                return
        self.i = i + 1

    def names(self, close: str, what: str) -> list[str]:
        """``a, b, c`` up to the closing punctuation ``close`` (consumed)."""
        kinds, vals, i, n = self.kinds, self.vals, self.i, self.n
        out = []
        while True:
            if i >= n or kinds[i] != "word":
                self.i = i
                raise self.error(what)
            out.append(vals[i])
            if i + 1 < n and kinds[i + 1] == "punct" and vals[i + 1] in (",", close):
                i += 2
                if vals[i - 1] == close:
                    self.i = i
                    return out
            else:
                self.i = i + 1
                raise self.error(f"',' or {close!r}")

    def numbers(self) -> tuple[list[float], int]:
        """``v1, v2, ...;`` (commas optional), the terminating ``;`` consumed."""
        # The hot loop of parsing: tables are most of a BIF file, so it reads the token lists
        # directly instead of going through peek/next.
        kinds, vals, i, n = self.kinds, self.vals, self.i, self.n
        line = self.line(self.pos[i]) if i < n else self.last_line
        out: list[float] = []
        comma_ok = False
        while i < n:
            v = vals[i]
            if kinds[i] == "punct":
                if v == ";":
                    break
                if v == "," and comma_ok:
                    comma_ok = False
                    i += 1
                    continue
                self.i = i
                raise self.error("a number or ';'")
            try:
                out.append(float(v))
            except ValueError:
                self.i = i
                raise self.error("a number") from None
            comma_ok = True
            i += 1
        else:
            self.i = i
            raise self.error("';'")
        self.i = i + 1
        if not out:
            raise self.error("at least one number", (None, ";", self.pos[i]))
        return out, line


def parse_bif(text: str, source: str = "<string>") -> DAG:
    """Parse BIF text into a :class:`~pgm_lab.dag.DAG` (see :func:`read_bif`).

    Args:
        text: the contents of a BIF file (grammar in the module docstring).
        source: a name for error messages, which read ``source:line: ...``.

    Raises:
        DAGError: malformed text (with the line), or an invalid network (cycles, rows that
            do not sum to 1, ...).
    """
    sc = _Scanner(text, source)
    name = "unknown"
    net_props: list[str] = []
    states: dict[str, tuple[str, ...]] = {}
    var_props: dict[str, list[str]] = {}
    var_line: dict[str, int] = {}
    blocks: dict[str, tuple] = {}
    prob_starts: list[int] = []
    while sc.peek() is not None:
        kw, line = sc.word("'network', 'variable' or 'probability'")
        if kw == "network":
            name = sc.word("a network name")[0]
            sc.expect("{")
            while not sc.accept("}"):
                tok = sc.next("'property' or '}'")
                if tok[0] != "prop":
                    raise sc.error("'property' or '}'", tok)
                net_props.append(tok[1])
        elif kw == "variable":
            var, vline = sc.word("a variable name")
            if var in states:
                raise DAGError(f"{source}:{vline}: variable {var!r} is declared twice "
                               f"(first on line {var_line[var]})")
            sc.expect("{")
            var_props[var], var_line[var] = [], vline
            while not sc.accept("}"):
                tok = sc.next("'type', 'property' or '}'")
                if tok[0] == "prop":
                    var_props[var].append(tok[1])
                    continue
                if tok[1] != "type":
                    raise sc.error("'type', 'property' or '}'", tok)
                kind = sc.word("'discrete'")
                if kind[0] != "discrete":
                    raise DAGError(f"{source}:{kind[1]}: only discrete variables are supported, "
                                   f"got type {kind[0]!r}")
                sc.expect("[")
                k_tok = sc.word("the number of states")
                sc.expect("]")
                sc.expect("{")
                names = sc.names("}", "a state name")
                sc.accept(";")
                if not k_tok[0].isdigit() or int(k_tok[0]) != len(names):
                    raise DAGError(f"{source}:{k_tok[1]}: variable {var!r} declares "
                                   f"[ {k_tok[0]} ] states but lists {len(names)}: {names}")
                if len(set(names)) != len(names):
                    raise DAGError(f"{source}:{k_tok[1]}: variable {var!r} has repeated state "
                                   f"names {names}")
                states[var] = tuple(names)
            if var not in states:
                raise DAGError(f"{source}:{vline}: variable {var!r} has no 'type discrete' line")
        elif kw == "probability":
            # parsed after every variable is declared: BIF does not order the blocks
            prob_starts.append(sc.i)
            sc.skip_block()
        else:
            raise DAGError(f"{source}:{line}: malformed BIF: expected 'network', 'variable' or "
                           f"'probability', got {kw!r}")
    for start in prob_starts:
        sc.i = start
        sc.expect("(")
        child, cline = sc.word("a variable name")
        parents: list[str] = []
        if sc.accept("|"):
            parents = sc.names(")", "a parent name")
        else:
            sc.expect(")")
        for v in (child, *parents):
            if v not in states:
                raise DAGError(f"{source}:{cline}: probability block uses variable {v!r}, "
                               f"which is not declared{suggest(v, states)}; try adding "
                               f"'variable {v} {{ type discrete [ K ] {{ ... }}; }}'")
        if child in blocks:
            raise DAGError(f"{source}:{cline}: second probability block for {child!r}")
        blocks[child] = _read_block(sc, child, parents, states, cline)
    for var in states:
        if var not in blocks:
            raise DAGError(f"{source}:{var_line[var]}: variable {var!r} has no probability block")
    spec = {}
    for var in states:
        # properties of a probability block are kept with the variable's own properties
        parents, table, props = blocks[var]
        spec[var] = CPT(tuple(parents), table, states[var],
                        {p: states[p] for p in parents}, tuple(var_props[var] + props))
    try:
        return DAG(spec, name=name, properties=net_props)
    except DAGError as exc:
        raise DAGError(f"{source}: {exc}") from exc


def _read_block(sc: _Scanner, child: str, parents: list[str],
                states: dict[str, tuple[str, ...]], line: int
                ) -> tuple[list[str], torch.Tensor, list[str]]:
    k = len(states[child])
    cards = [len(states[p]) for p in parents]
    rows = math.prod(cards)
    table: list[list[float] | None] = [None] * rows
    props: list[str] = []
    default = None
    sc.expect("{")
    while not sc.accept("}"):
        tok = sc.peek()
        if tok is None:
            raise DAGError(f"{sc.source}:{sc.last_line}: malformed BIF: expected '}}' closing "
                           f"the probability block of {child!r} (line {line}), got end of file")
        if tok[0] == "prop":
            sc.i += 1
            props.append(tok[1])
        elif tok[1] == "(":
            sc.i += 1
            config = sc.names(")", "a parent state")
            if len(config) != len(parents):
                raise DAGError(f"{sc.source}:{sc.line(tok[2])}: row of {child!r} names "
                               f"{len(config)} parent states {config}, expected {len(parents)} "
                               f"for {parents}")
            flat = 0
            for p, s in zip(parents, config):
                if s not in states[p]:
                    raise DAGError(f"{sc.source}:{sc.line(tok[2])}: {s!r} is not a state "
                                   f"of {p!r} {list(states[p])}")
                flat = flat * len(states[p]) + states[p].index(s)
            vals, vline = sc.numbers()
            _check_row(sc, child, vals, k, vline, f"({', '.join(config)})")
            table[flat] = vals
        elif tok[1] in ("table", "default"):
            sc.i += 1
            vals, vline = sc.numbers()
            if tok[1] == "default":
                _check_row(sc, child, vals, k, vline, "default")
                default = vals
                continue
            if len(vals) != rows * k:
                raise DAGError(f"{sc.source}:{vline}: table of {child!r} has {len(vals)} "
                               f"numbers, expected {rows * k} ({k} states x {rows} parent "
                               "configurations)")
            table = [vals[r::rows] for r in range(rows)]  # child slowest in the file
            for row in table:
                _check_row(sc, child, row, k, vline, "table")
        else:
            raise sc.error("'(', 'table', 'default', 'property' or '}'", tok)
    missing = [r for r, row in enumerate(table) if row is None]
    if missing and default is not None:
        table = [default if row is None else row for row in table]
    elif missing:
        r = missing[0]
        config = []
        for p, c in zip(reversed(parents), reversed(cards)):
            config.append(f"{p}={states[p][r % c]}")
            r //= c
        raise DAGError(f"{sc.source}:{line}: probability block of {child!r} has no row for "
                       f"parent configuration ({', '.join(reversed(config))}) and no default")
    return parents, torch.tensor(table, dtype=torch.float64).reshape(*cards, k), props


def _check_row(sc: _Scanner, child: str, vals: list[float], k: int, line: int,
               where: str) -> None:
    if len(vals) != k:
        raise DAGError(f"{sc.source}:{line}: row {where} of {child!r} has {len(vals)} numbers, "
                       f"expected {k} (one per state)")
    if any(not math.isfinite(v) or v < 0 for v in vals):
        raise DAGError(f"{sc.source}:{line}: row {where} of {child!r} has a negative or "
                       f"non-finite probability: {vals}")
    if abs(math.fsum(vals) - 1.0) > ROW_SUM_ATOL:
        raise DAGError(f"{sc.source}:{line}: row {where} of {child!r} sums to "
                       f"{math.fsum(vals):.6g}, expected 1")


def read_bif(path: str | os.PathLike) -> DAG:
    """Read a Bayesian network from a BIF file (``.bif`` or ``.bif.gz``) or a bundled name.

    Args:
        path: a file path, or the name of a bundled network (``"asia"``, ``"alarm"``, ...;
            see :func:`pgm_lab.dag.networks.available`).

    Returns:
        a :class:`~pgm_lab.dag.DAG` of :class:`~pgm_lab.dag.spec.CPT` nodes with the file's
        state names, in the file's variable order.

    Raises:
        DAGError: a malformed file (the message gives ``file:line``), or an unknown name.
    """
    p = Path(path)
    if not p.exists():
        from .networks import network_path

        p = network_path(str(path))
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rt", encoding="utf-8-sig") as f:  # -sig: skip a byte-order mark
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise DAGError(f"cannot read BIF file {p}: {exc}") from exc
    return parse_bif(text, source=str(p))


def _fmt(x: float) -> str:
    return repr(float(x))


def to_bif(dag: DAG, path: str | os.PathLike | None = None) -> str:
    """The network as BIF text (written to ``path`` if given; ``.gz`` is gzip-compressed).

    Every node must be discrete (a finite table given discrete parents). Rows are listed
    first parent fastest; numbers use the shortest repr that round-trips float64 exactly.

    Raises:
        DAGError: a continuous node, or a name that is not a BIF token.
    """
    info = dag._discrete()
    cont = [n for n in dag.nodes if info[n] is None]
    if cont:
        raise DAGError(f"BIF holds discrete networks only; nodes {cont} are not discrete")
    order = list(dag.spec)
    if not _SAFE_NAME.fullmatch(dag.name):
        raise DAGError(f"network name {dag.name!r} is not a valid BIF name (no spaces or "
                       "{}[]();,| characters)")
    for n in order:
        for s in (n, *info[n].states):
            if not _SAFE_NAME.fullmatch(s):
                raise DAGError(f"{s!r} (node {n!r}) is not a valid BIF name: expected no spaces "
                               "or {}[]();,| characters, no // or /*, and not 'property', got "
                               f"{s!r}; try renaming it")
    lines = [f"network {dag.name} {{"]
    lines += [f"  property {p};" for p in dag.properties]
    lines.append("}")
    for n in order:
        lines.append(f"variable {n} {{")
        lines.append(f"  type discrete [ {info[n].card} ] {{ {', '.join(info[n].states)} }};")
        nd = dag.spec[n]
        lines += [f"  property {p};" for p in getattr(nd, "properties", ())]
        lines.append("}")
    for n in order:
        parents = dag.parents(n)
        table = dag.tables([n])[n]
        if not parents:
            lines.append(f"probability ( {n} ) {{")
            lines.append(f"  table {', '.join(_fmt(v) for v in table.tolist())};")
        else:
            lines.append(f"probability ( {n} | {', '.join(parents)} ) {{")
            pstates = [info[p].states for p in parents]
            # first parent fastest: iterate the reversed axes in C order
            flat = table.permute(*reversed(range(len(parents))), len(parents))
            flat = flat.reshape(-1, table.shape[-1]).tolist()
            cards = [len(s) for s in pstates]
            for r, row in enumerate(flat):
                config, rem = [], r
                for s, c in zip(pstates, cards):
                    config.append(s[rem % c])
                    rem //= c
                lines.append(f"  ({', '.join(config)}) {', '.join(_fmt(v) for v in row)};")
        lines.append("}")
    text = "\n".join(lines) + "\n"
    if path is not None:
        p = Path(path)
        if p.suffix == ".gz":
            with gzip.open(p, "wt", encoding="utf-8") as f:
                f.write(text)
        else:
            p.write_text(text, encoding="utf-8")
    return text
