"""``pgm-lab bn``: inspect, query and sample Bayesian networks.

NETWORK is a BIF file (``.bif`` / ``.bif.gz``) or a bundled network name
(alarm, asia, cancer, child, earthquake, sachs, survey).

  pgm-lab bn info asia
  pgm-lab bn query asia lung bronc -e xray=yes -e smoke=no
  pgm-lab bn sample alarm -n 5 --seed 0 --out samples.csv
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import torch

from ..dag import DAG
from ..errors import ConfigError
from ._args import SEED_MAX, HelpFormatter, int_in, output_file, plain, seed

__all__ = ["register", "run"]


MAX_SAMPLES = 10**8  # cap of -n; samples are drawn and written CHUNK rows at a time
CHUNK = 100_000


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("bn", help="inspect, query and sample Bayesian networks",
                              description=plain(__doc__), formatter_class=HelpFormatter)
    sub = p.add_subparsers(title="actions", metavar="ACTION", dest="action")
    info = sub.add_parser("info", help="nodes, edges, states and factorization",
                          formatter_class=HelpFormatter)
    query = sub.add_parser("query", help="exact posterior marginals given evidence",
                           formatter_class=HelpFormatter)
    sample = sub.add_parser("sample", help="ancestral samples as CSV of state names",
                            formatter_class=HelpFormatter)
    for q in (info, query, sample):
        q.add_argument("network", help="BIF path or bundled network name")
        q.add_argument("--json", action="store_true", help="machine-readable output")
    query.add_argument("variables", nargs="+", help="query nodes")
    query.add_argument("-e", "--evidence", action="append", default=[], metavar="NODE=STATE",
                       type=_evidence_item, help="observed state (repeatable)")
    sample.add_argument("-n", "--num-samples", type=int_in(1, MAX_SAMPLES), default=10,
                        help="number of samples, at most 10^8 (drawn and written 100000 at a "
                             "time, so memory stays bounded)")
    sample.add_argument("--seed", type=seed, default=0,
                        help=f"random seed, an integer in [0, {SEED_MAX}]")
    sample.add_argument("--out", type=output_file, default=None,
                        help="file to write the samples to (CSV, or JSON with --json); "
                             "standard output if not given")
    p.set_defaults(func=run, _parser=p)
    return p


def _evidence_item(text: str) -> tuple[str, str]:
    node, sep, state = text.partition("=")
    node, state = node.strip(), state.strip()
    if not sep or not node or not state:
        raise argparse.ArgumentTypeError(f"expected NODE=STATE, got {text!r}; try -e xray=yes")
    return node, state


def _evidence(items: list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for node, state in items:
        if node in out and out[node] != state:
            raise ConfigError(f"expected one state per evidence node, got {node}={out[node]} "
                              f"and {node}={state}; try a single -e {node}=STATE")
        out[node] = state
    return out


def run(args: argparse.Namespace) -> int:
    from ..dag import read_bif
    from ..dag.render import to_text

    if args.action is None:
        args._parser.print_help()
        return 0
    dag = read_bif(args.network)
    if args.action == "info":
        edges = dag.edges
        if args.json:
            print(json.dumps({"name": dag.name, "nodes": list(dag.nodes),
                              "edges": [list(e) for e in edges],
                              "states": {n: list(dag.states(n)) for n in dag.nodes},
                              "factorization": dag.factorization()}, indent=2))
            return 0
        n_params = sum(t.numel() - t.shape[:-1].numel() for t in dag.tables().values())
        print(f"network {dag.name}: {len(dag.nodes)} nodes, {len(edges)} edges, "
              f"{n_params} free parameters")
        print(dag.factorization())
        print(to_text(dag))
        return 0
    if args.action == "query":
        evidence = _evidence(args.evidence)
        post = dag.posterior(args.variables, evidence)
        log_z = float(dag.log_evidence(evidence))
        if args.json:
            print(json.dumps({"evidence": evidence, "log_evidence": log_z, "posterior": {
                q: dict(zip(dag.states(q), p.tolist())) for q, p in post.items()}}, indent=2))
            return 0
        print(f"log p(evidence) = {log_z:.6f}")
        for q, p in post.items():
            print(f"p({q} | evidence):")
            for s, v in zip(dag.states(q), p.tolist()):
                print(f"  {s:<16} {v:.6f}")
        return 0
    with _output(args.out) as f:
        _write_samples(f, dag, _sample_chunks(dag, args.num_samples, args.seed), args.json)
    return 0


def _sample_chunks(dag: DAG, n: int, seed: int) -> Iterator[list[list[str]]]:
    """``n`` ancestral samples as rows of state names, ``CHUNK`` rows at a time, from one torch
    RNG stream seeded with ``seed`` (``n <= CHUNK`` gives exactly ``dag.sample(n, seed)``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, n, CHUNK):
            draws = dag.sample(min(CHUNK, n - start))
            columns = [[dag.states(v)[i] for i in draws[v].long().tolist()] for v in dag.nodes]
            yield [list(r) for r in zip(*columns)]


def _write_samples(f: TextIO, dag: DAG, chunks: Iterator[list[list[str]]],
                   as_json: bool) -> None:
    """CSV with a header row, or one JSON array of ``{node: state}`` objects."""
    if not as_json:
        w = csv.writer(f)
        w.writerow(dag.nodes)
        for rows in chunks:
            w.writerows(rows)
        return
    sep = "["
    for rows in chunks:
        for r in rows:
            f.write(sep + json.dumps(dict(zip(dag.nodes, r))))
            sep = ", "
    f.write("]\n")


@contextlib.contextmanager
def _output(path: Path | None) -> Iterator[TextIO]:
    """Standard output, or the file ``--out`` (its folder created if missing); a failure to
    write it (e.g. a full disk) is a :class:`ConfigError` naming ``--out``."""
    if path is None:
        yield sys.stdout
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            yield f
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise ConfigError(f"expected a writable --out file, got {str(path)!r} "
                          f"({exc.strerror or exc}); try another path, or free disk space") \
            from exc
