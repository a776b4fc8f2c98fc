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

Untrusted input is safe to read: every text either parses or raises
:class:`~pgm_lab.errors.DAGError` naming the line, in time linear in its length (the scanner
never backtracks; a comment or property left open is refused, not rescanned), and memory is
bounded by :data:`MAX_FILE_BYTES`, :data:`MAX_STATES` and :data:`MAX_TABLE_ENTRIES`.

Reference: F. G. Cozman, "The Interchange Format for Bayesian Networks", 1998
(http://www.cs.cmu.edu/~fgcozman/Research/InterchangeFormat/); bnlearn repository,
https://www.bnlearn.com/bnrepository/.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import zlib
from collections.abc import Sequence
from itertools import islice
from pathlib import Path

import torch

from ..errors import DAGError
from .core import DAG, ROW_SUM_ATOL
from .graph import suggest
from .spec import CPT

__all__ = ["MAX_FILE_BYTES", "MAX_STATES", "MAX_TABLE_ENTRIES", "parse_bif", "read_bif",
           "to_bif"]

MAX_FILE_BYTES = 2**24
"""Largest BIF input read, in bytes (in characters for :func:`parse_bif`).

16 MiB, three times the largest network of the bnlearn repository (diabetes, 5.5 MB).
:func:`read_bif` reads at most one byte more than this, so ``/dev/zero`` or a gzip bomb costs
16 MiB instead of a hang, and refuses a longer file. Parsing keeps the text, one byte and one
pointer per token, the token strings and the numbers read, about 30 bytes per byte of input
at worst: below 1 GB at the limit (480 MB measured for 16 MiB of table numbers).
"""

MAX_STATES = 2**16
"""Most states a variable may declare (bnlearn networks have at most 100, in mildew)."""

MAX_TABLE_ENTRIES = 2**24
"""Most probability-table entries of a whole network, summed over its variables.

An entry is one state of a variable for one configuration of its parents; the limit is 128
MiB of float64 (the most in a bnlearn network is 0.55 million, in mildew). A
``default`` row fills a table much larger than its text (40 binary parents in a 4 KB file),
so this, not the file size, bounds the memory of the tables.
"""

# One scan, linear in the text: whitespace is skipped possessively (no backtracking into it),
# and a comment or property that is never closed extends to the end of the text (and is then
# refused) instead of failing and being retried at every later offset. Groups: 1 comment,
# 2 property line, 3 punctuation, 4 word; no group: whitespace at the end of the text.
_TOKEN = re.compile(
    r"\s*+(?:(//[^\n]*+|/\*.*?(?:\*/|\Z))|(property\s[^;]*+;?)|([{}\[\]();,|])"
    r"|([^\s{}\[\]();,|]++)|\Z)",
    re.DOTALL,
)
_COMMENT, _PROP, _PUNCT, _WORD = 1, 2, 3, 4
# a BIF token: no whitespace or punctuation, no comment opener, and not the keyword "property"
# (the scanner reads "property ...;" as a property line wherever it appears)
_SAFE_NAME = re.compile(r"(?!.*//)(?!.*/\*)(?!property$)[^\s{}\[\]();,|]+")


def _clip(x: object, limit: int = 60) -> str:
    """``repr(x)`` for a message, a long string cut after ``limit`` characters."""
    if isinstance(x, str) and len(x) > limit:
        return f"{x[:limit]!r}... ({len(x)} characters)"
    return repr(x)


def _short(items: Sequence, limit: int = 8) -> str:
    """``items`` as a list for a message, elided after ``limit`` entries."""
    shown = ", ".join(_clip(x) for x in items[:limit])
    more = f", ... ({len(items)} in all)" if len(items) > limit else ""
    return f"[{shown}{more}]"


class _Scanner:
    """The tokens of a BIF text, scanned once: ``kinds[i]`` (group number) and ``vals[i]``.

    Tokens are referred to by index; a line number is found by rescanning the text up to the
    token, which only error messages need (so no offset or line is stored per token).
    """

    def __init__(self, text: str, source: str) -> None:
        self.source, self.text = source, text
        kinds, vals = bytearray(), []
        for m in _TOKEN.finditer(text):
            g = m.lastindex
            if g is None:
                continue
            val = m.group(g)
            if g == _COMMENT:
                if val[1] == "*" and (len(val) < 4 or not val.endswith("*/")):
                    raise DAGError(f"{source}:{self._line_at(m.start(g))}: malformed BIF: "
                                   "expected '*/' closing this comment, got end of file")
                continue
            if g == _PROP:
                if not val.endswith(";"):
                    raise DAGError(f"{source}:{self._line_at(m.start(g))}: malformed BIF: "
                                   "expected ';' ending this property, got end of file")
                val = val[len("property"):-1].strip()
            kinds.append(g)
            vals.append(val)
        self.kinds, self.vals = kinds, vals
        self.n = len(vals)
        self.i = 0

    def _line_at(self, offset: int) -> int:
        return self.text.count("\n", 0, offset) + 1

    def line(self, index: int) -> int:
        """Line of token ``index`` (the last line for ``index >= n``)."""
        if index >= self.n:
            return self._line_at(len(self.text))
        tokens = (m for m in _TOKEN.finditer(self.text) if m.lastindex not in (None, _COMMENT))
        m = next(islice(tokens, index, None))
        return self._line_at(m.start(m.lastindex))

    def peek(self) -> tuple[int, str] | None:
        i = self.i
        return (self.kinds[i], self.vals[i]) if i < self.n else None

    def error(self, expected: str, index: int | None = None) -> DAGError:
        """``source:line: malformed BIF: expected ..., got`` the token at ``index`` (the
        current one by default)."""
        index = self.i if index is None else index
        got = "end of file" if index >= self.n else _clip(self.vals[index])
        return DAGError(f"{self.source}:{self.line(index)}: malformed BIF: expected "
                        f"{expected}, got {got}")

    def next(self, expected: str) -> int:
        """Index of the next token (consumed)."""
        if self.i >= self.n:
            raise self.error(expected)
        self.i += 1
        return self.i - 1

    def expect(self, value: str) -> None:
        i = self.next(repr(value))
        if self.vals[i] != value or self.kinds[i] == _PROP:
            raise self.error(repr(value), i)

    def word(self, what: str) -> tuple[str, int]:
        """The next word and its token index."""
        i = self.next(what)
        if self.kinds[i] != _WORD:
            raise self.error(what, i)
        return self.vals[i], i

    def accept(self, value: str) -> bool:
        i = self.i
        if i < self.n and self.kinds[i] == _PUNCT and self.vals[i] == value:
            self.i = i + 1
            return True
        return False

    def skip_block(self) -> None:
        """Move past the next ``{ ... }`` (to the end of the text if it is not closed)."""
        i = self.i
        for brace in ("{", "}"):
            try:  # list.index runs in C; a match must also be punctuation, not a property
                i = self.vals.index(brace, i)
                while self.kinds[i] != _PUNCT:
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
            if i >= n or kinds[i] != _WORD:
                self.i = i
                raise self.error(what)
            out.append(vals[i])
            if i + 1 < n and kinds[i + 1] == _PUNCT and vals[i + 1] in (",", close):
                i += 2
                if vals[i - 1] == close:
                    self.i = i
                    return out
            else:
                self.i = i + 1
                raise self.error(f"',' or {close!r}")

    def numbers(self, limit: int, why: str) -> tuple[list[float], int]:
        """``v1, v2, ...;`` (commas optional), the terminating ``;`` consumed; returns the
        numbers and the index of the first token. More than ``limit`` numbers (``why`` says
        whose) are refused as soon as the first extra one is read.

        A number is an ASCII decimal literal as Python's ``float`` reads it, without ``_``
        (so ``1_0`` and non-ASCII digits such as ``٣`` are refused).
        """
        # The hot loop of parsing: tables are most of a BIF file, so it reads the token lists
        # directly instead of going through peek/next.
        kinds, vals, i, n = self.kinds, self.vals, self.i, self.n
        first = i
        out: list[float] = []
        comma_ok = False
        while i < n:
            v = vals[i]
            if kinds[i] == _PUNCT:
                if v == ";":
                    break
                if v == "," and comma_ok:
                    comma_ok = False
                    i += 1
                    continue
                self.i = i
                raise self.error("a number or ';'")
            if len(out) == limit:
                self.i = i
                raise self.error(f"';' after {limit} numbers ({why})")
            try:
                out.append(float(v))
            except ValueError:
                self.i = i
                raise self.error("a number") from None
            if not v.isascii() or "_" in v:
                self.i = i
                raise self.error("a number written with ASCII digits")
            comma_ok = True
            i += 1
        else:
            self.i = i
            raise self.error("';'")
        self.i = i + 1
        if not out:
            raise self.error("at least one number", i)
        return out, first


def parse_bif(text: str, source: str = "<string>") -> DAG:
    """Parse BIF text into a :class:`~pgm_lab.dag.DAG` (see :func:`read_bif`).

    Time is linear in ``len(text)`` plus the number of table entries; memory is bounded by
    :data:`MAX_FILE_BYTES`, :data:`MAX_STATES` and :data:`MAX_TABLE_ENTRIES`.

    Args:
        text: the contents of a BIF file (grammar in the module docstring), at most
            :data:`MAX_FILE_BYTES` characters.
        source: a name for error messages, which read ``source:line: ...``.

    Raises:
        DAGError: malformed text, an invalid network (cycles, rows that do not sum to 1,
            ...) or a limit exceeded; the message gives the line.
    """
    if len(text) > MAX_FILE_BYTES:
        line = text.count("\n", 0, MAX_FILE_BYTES) + 1  # where the limit falls
        raise DAGError(f"{source}:{line}: expected at most MAX_FILE_BYTES = {MAX_FILE_BYTES} "
                       f"characters of BIF, got {len(text)}; try a smaller network")
    sc = _Scanner(text, source)
    name = "unknown"
    net_props: list[str] = []
    states: dict[str, tuple[str, ...]] = {}
    var_props: dict[str, list[str]] = {}
    var_tok: dict[str, int] = {}
    prob_starts: list[int] = []
    while sc.peek() is not None:
        kw, kw_tok = sc.word("'network', 'variable' or 'probability'")
        if kw == "network":
            name = sc.word("a network name")[0]
            sc.expect("{")
            while not sc.accept("}"):
                i = sc.next("'property' or '}'")
                if sc.kinds[i] != _PROP:
                    raise sc.error("'property' or '}'", i)
                net_props.append(sc.vals[i])
        elif kw == "variable":
            var, tok = sc.word("a variable name")
            if var in states:
                raise DAGError(f"{source}:{sc.line(tok)}: variable {_clip(var)} is declared twice "
                               f"(first on line {sc.line(var_tok[var])})")
            sc.expect("{")
            var_props[var], var_tok[var] = [], tok
            while not sc.accept("}"):
                i = sc.next("'type', 'property' or '}'")
                if sc.kinds[i] == _PROP:
                    var_props[var].append(sc.vals[i])
                    continue
                if sc.vals[i] != "type" or sc.kinds[i] != _WORD:
                    raise sc.error("'type', 'property' or '}'", i)
                states[var] = _read_states(sc, var)
            if var not in states:
                raise DAGError(f"{source}:{sc.line(tok)}: variable {_clip(var)} has no 'type "
                               "discrete' line")
        elif kw == "probability":
            # parsed after every variable is declared: BIF does not order the blocks
            prob_starts.append(sc.i)
            sc.skip_block()
        else:
            raise sc.error("'network', 'variable' or 'probability'", kw_tok)
    blocks: dict[str, tuple[list[str], torch.Tensor, list[str]]] = {}
    block_tok: dict[str, int] = {}
    entries_left = MAX_TABLE_ENTRIES
    for start in prob_starts:
        sc.i = start
        sc.expect("(")
        child, ctok = sc.word("a variable name")
        parents: list[str] = []
        if sc.accept("|"):
            parents = sc.names(")", "a parent name")
        else:
            sc.expect(")")
        for v in (child, *parents):
            if v not in states:
                raise DAGError(f"{source}:{sc.line(ctok)}: probability block uses variable "
                               f"{_clip(v)}, which is not declared{suggest(v, states)}; try adding "
                               f"'variable {v if len(v) <= 60 else '<name>'} "
                               "{ type discrete [ K ] { ... }; }'")
        if len(set(parents)) != len(parents):
            raise DAGError(f"{source}:{sc.line(ctok)}: probability block of {_clip(child)} lists a "
                           f"parent twice: {_short(parents)}")
        if child in blocks:
            raise DAGError(f"{source}:{sc.line(ctok)}: second probability block for {_clip(child)} "
                           f"(first on line {sc.line(block_tok[child])})")
        entries = _table_entries(sc, child, parents, states, ctok, entries_left)
        entries_left -= entries
        blocks[child], block_tok[child] = _read_block(sc, child, parents, states, ctok), ctok
    for var in states:
        if var not in blocks:
            raise DAGError(f"{source}:{sc.line(var_tok[var])}: variable {_clip(var)} has no "
                           "probability block")
    spec = {}
    for var in states:
        # properties of a probability block are kept with the variable's own properties
        parents, table, props = blocks[var]
        spec[var] = CPT(tuple(parents), table, states[var],
                        {p: states[p] for p in parents}, tuple(var_props[var] + props))
    try:
        return DAG(spec, name=name, properties=net_props)
    except DAGError as exc:
        # the parser has checked the tables (bar rounding at the row-sum tolerance), so this
        # is a cycle: point at the probability block of a node on it
        on_cycle = _node_on_cycle({v: blocks[v][0] for v in states})
        tok = block_tok[on_cycle] if on_cycle is not None else 0
        raise DAGError(f"{source}:{sc.line(tok)}: {exc}") from exc


def _read_states(sc: _Scanner, var: str) -> tuple[str, ...]:
    """``discrete [ K ] { s_1, ..., s_K };`` after ``type``, checked against :data:`MAX_STATES`."""
    kind, tok = sc.word("'discrete'")
    if kind != "discrete":
        raise DAGError(f"{sc.source}:{sc.line(tok)}: only discrete variables are supported, "
                       f"got type {_clip(kind)}")
    sc.expect("[")
    k, tok = sc.word("the number of states")
    sc.expect("]")
    sc.expect("{")
    names = sc.names("}", "a state name")
    sc.accept(";")
    # ASCII digits only (str.isdigit also takes '²' and '٣'); long strings are not int()-ed
    digits = k.lstrip("0") or "0"
    declared = (int(digits) if k.isascii() and k.isdigit() and len(digits) <= 9
                else MAX_STATES + 1 if k.isascii() and k.isdigit() else None)
    if declared is None:
        raise DAGError(f"{sc.source}:{sc.line(tok)}: variable {_clip(var)}: expected the number "
                       f"of states as ASCII digits in [ ], got {_clip(k)}")
    if max(declared, len(names)) > MAX_STATES:
        raise DAGError(f"{sc.source}:{sc.line(tok)}: variable {_clip(var)} declares "
                       f"{k if len(k) <= 20 else k[:20] + '...'} states and lists {len(names)}, "
                       f"expected at most MAX_STATES = {MAX_STATES}; try merging states")
    if declared != len(names):
        raise DAGError(f"{sc.source}:{sc.line(tok)}: variable {_clip(var)} declares "
                       f"[ {k[:20]} ] states but lists {len(names)}: {_short(names)}")
    if len(set(names)) != len(names):
        raise DAGError(f"{sc.source}:{sc.line(tok)}: variable {_clip(var)} has repeated state "
                       f"names {_short(names)}")
    return tuple(names)


def _table_entries(sc: _Scanner, child: str, parents: list[str],
                   states: dict[str, tuple[str, ...]], tok: int, budget: int) -> int:
    """States x parent configurations of ``child``'s table, refused beyond ``budget`` (what
    :data:`MAX_TABLE_ENTRIES` leaves after the blocks read so far)."""
    entries = 1
    for card in (len(states[child]), *(len(states[p]) for p in parents)):
        entries *= card
        if entries > budget:  # checked per factor, so the product never gets large
            raise DAGError(f"{sc.source}:{sc.line(tok)}: the table of {_clip(child)} ("
                           f"{len(states[child])} states, {len(parents)} parents) has more "
                           f"than the {budget} entries left of MAX_TABLE_ENTRIES = "
                           f"{MAX_TABLE_ENTRIES}, the limit for the whole network; expected a "
                           "smaller table, try fewer parents or states")
    return entries


def _node_on_cycle(parents: dict[str, list[str]]) -> str | None:
    """A node on a directed cycle of ``child -> parents`` links (depth-first), or None."""
    state = dict.fromkeys(parents, 0)  # 0 unseen, 1 on the current path, 2 finished
    for root in parents:
        if state[root]:
            continue
        state[root] = 1
        stack = [(root, iter(parents[root]))]
        while stack:
            v, todo = stack[-1]
            for p in todo:
                if state[p] == 1:
                    return p
                if state[p] == 0:
                    state[p] = 1
                    stack.append((p, iter(parents[p])))
                    break
            else:
                state[v] = 2
                stack.pop()
    return None


def _read_block(sc: _Scanner, child: str, parents: list[str],
                states: dict[str, tuple[str, ...]], ctok: int
                ) -> tuple[list[str], torch.Tensor, list[str]]:
    """The ``{ ... }`` of ``probability ( child | parents )``: rows, ``table``, ``default``."""
    k = len(states[child])
    cards = [len(states[p]) for p in parents]
    index = [{s: j for j, s in enumerate(states[p])} for p in parents]
    rows = math.prod(cards)
    table: list[list[float] | None] = [None] * rows
    props: list[str] = []
    default = None
    per_state = f"one per state of {_clip(child)}"
    sc.expect("{")
    while not sc.accept("}"):
        tok = sc.peek()
        if tok is None:
            raise DAGError(f"{sc.source}:{sc.line(sc.n)}: malformed BIF: expected '}}' closing "
                           f"the probability block of {_clip(child)} (line {sc.line(ctok)}), got "
                           "end of file")
        kind, val = tok
        start = sc.i
        if kind == _PROP:
            sc.i += 1
            props.append(val)
        elif val == "(" and kind == _PUNCT:
            sc.i += 1
            config = sc.names(")", "a parent state")
            if len(config) != len(parents):
                raise DAGError(f"{sc.source}:{sc.line(start)}: row of {_clip(child)} names "
                               f"{len(config)} parent states {_short(config)}, expected "
                               f"{len(parents)} for {_short(parents)}")
            flat = 0
            for p, s, card, idx in zip(parents, config, cards, index):
                j = idx.get(s)
                if j is None:
                    raise DAGError(f"{sc.source}:{sc.line(start)}: {_clip(s)} is not a state "
                                   f"of {_clip(p)} {_short(states[p])}")
                flat = flat * card + j
            vals, vtok = sc.numbers(k, per_state)
            _check_row(sc, child, vals, k, vtok, f"({', '.join(config)})")
            table[flat] = vals
        elif val in ("table", "default") and kind == _WORD:
            sc.i += 1
            if val == "default":
                vals, vtok = sc.numbers(k, per_state)
                _check_row(sc, child, vals, k, vtok, "default")
                default = vals
                continue
            vals, vtok = sc.numbers(rows * k, f"{k} states x {rows} parent configurations "
                                              f"of {_clip(child)}")
            if len(vals) != rows * k:
                raise DAGError(f"{sc.source}:{sc.line(vtok)}: table of {_clip(child)} has "
                               f"{len(vals)} numbers, expected {rows * k} ({k} states x {rows} "
                               "parent configurations)")
            table = [vals[r::rows] for r in range(rows)]  # child slowest in the file
            for row in table:
                _check_row(sc, child, row, k, vtok, "table")
        else:
            raise sc.error("'(', 'table', 'default', 'property' or '}'")
    missing = [r for r, row in enumerate(table) if row is None]
    if missing and default is not None:
        table = [default if row is None else row for row in table]
    elif missing:
        r = missing[0]
        config = []
        for p, c in zip(reversed(parents), reversed(cards)):
            config.append(f"{p}={states[p][r % c]}")
            r //= c
        raise DAGError(f"{sc.source}:{sc.line(ctok)}: probability block of {_clip(child)} has no "
                       f"row for parent configuration ({', '.join(reversed(config))}) and no "
                       "default")
    return parents, torch.tensor(table, dtype=torch.float64).reshape(*cards, k), props


def _check_row(sc: _Scanner, child: str, vals: list[float], k: int, tok: int,
               where: str) -> None:
    if len(vals) != k:
        raise DAGError(f"{sc.source}:{sc.line(tok)}: row {where} of {_clip(child)} has {len(vals)} "
                       f"numbers, expected {k} (one per state)")
    if any(not math.isfinite(v) or v < 0 for v in vals):
        raise DAGError(f"{sc.source}:{sc.line(tok)}: row {where} of {_clip(child)} has a negative "
                       f"or non-finite probability: {_short(vals)}")
    if abs(math.fsum(vals) - 1.0) > ROW_SUM_ATOL:
        raise DAGError(f"{sc.source}:{sc.line(tok)}: row {where} of {_clip(child)} sums to "
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
        DAGError: a malformed file (the message gives ``file:line``), a file (after gzip
            decompression) longer than :data:`MAX_FILE_BYTES`, or an unknown name.
    """
    p = Path(path)
    if not p.exists():
        from .networks import network_path

        p = network_path(str(path))
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)  # bounded: /dev/zero or a gzip bomb ends here
        if len(data) > MAX_FILE_BYTES:
            line = data.count(b"\n", 0, MAX_FILE_BYTES) + 1  # where the limit falls
            raise DAGError(f"{p}:{line}: expected a BIF file of at most MAX_FILE_BYTES = "
                           f"{MAX_FILE_BYTES} bytes, got more; try a smaller network")
        text = data.decode("utf-8-sig")  # -sig: skip a byte-order mark
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise DAGError(f"cannot read BIF file {p}: {exc}") from exc
    # universal newlines, as text mode reads them
    return parse_bif(text.replace("\r\n", "\n").replace("\r", "\n"), source=str(p))


def _check_property(prop: object, owner: str) -> None:
    """Refuse a property that ``property ...;`` cannot carry exactly: the reader ends it at
    the first ``;``, strips surrounding whitespace and reads line ends as ``\\n``."""
    if (not isinstance(prop, str) or ";" in prop or "\r" in prop or prop != prop.strip()):
        raise DAGError(f"property {prop!r} of {owner} cannot be written to BIF: expected a "
                       "string without ';' or '\\r' and without surrounding whitespace; try "
                       "replacing ';' by ','")


def _fmt(x: float) -> str:
    return repr(float(x))


def to_bif(dag: DAG, path: str | os.PathLike | None = None) -> str:
    """The network as BIF text (written to ``path`` if given; ``.gz`` is gzip-compressed).

    Every node must be discrete (a finite table given discrete parents). Rows are listed
    first parent fastest; numbers use the shortest repr that round-trips float64 exactly.

    Raises:
        DAGError: a continuous node, a name that is not a BIF token, or a property that
            would not read back as written (one holding ``;``).
    """
    info = dag._discrete()
    cont = [n for n in dag.nodes if info[n] is None]
    if cont:
        raise DAGError(f"BIF holds discrete networks only; nodes {cont} are not discrete")
    order = list(dag.spec)
    name = "unknown" if dag.name is None else dag.name  # the grammar needs a name
    if not _SAFE_NAME.fullmatch(name):
        raise DAGError(f"network name {name!r} is not a valid BIF name (no spaces or "
                       "{}[]();,| characters)")
    for n in order:
        for s in (n, *info[n].states):
            if not _SAFE_NAME.fullmatch(s):
                raise DAGError(f"{s!r} (node {n!r}) is not a valid BIF name: expected no spaces "
                               "or {}[]();,| characters, no // or /*, and not 'property', got "
                               f"{s!r}; try renaming it")
    props = {"the network": dag.properties}
    props.update((f"node {n!r}", getattr(dag.spec[n], "properties", ())) for n in order)
    for owner, ps in props.items():
        for prop in ps:
            _check_property(prop, owner)
    lines = [f"network {name} {{"]
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
