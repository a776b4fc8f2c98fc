"""``pgm-lab bn``: inspect, query and sample Bayesian networks.

NETWORK is a BIF file (``.bif`` / ``.bif.gz``) or a bundled network name
(alarm, asia, cancer, child, earthquake, sachs, survey).

  pgm-lab bn info asia
  pgm-lab bn query asia lung bronc -e xray=yes -e smoke=no
  pgm-lab bn sample alarm -n 5 --seed 0 --out samples.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import sys

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("bn", help="inspect, query and sample Bayesian networks",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(title="actions", metavar="ACTION", dest="action")
    info = sub.add_parser("info", help="nodes, edges, states and factorization")
    query = sub.add_parser("query", help="exact posterior marginals given evidence")
    sample = sub.add_parser("sample", help="ancestral samples as CSV of state names")
    for q in (info, query, sample):
        q.add_argument("network", help="BIF path or bundled network name")
        q.add_argument("--json", action="store_true", help="machine-readable output")
    query.add_argument("variables", nargs="+", help="query nodes")
    query.add_argument("-e", "--evidence", action="append", default=[], metavar="NODE=STATE",
                       help="observed state (repeatable)")
    sample.add_argument("-n", "--num-samples", type=int, default=10)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--out", default=None, help="CSV path (default: stdout)")
    p.set_defaults(func=run, _parser=p)
    return p


def _evidence(items: list[str]) -> dict[str, str]:
    from ..errors import ConfigError

    out = {}
    for item in items:
        node, sep, state = item.partition("=")
        if not sep or not node or not state:
            raise ConfigError(f"evidence must look like NODE=STATE, got {item!r}; "
                              "try -e xray=yes")
        node, state = node.strip(), state.strip()
        if node in out and out[node] != state:
            raise ConfigError(f"expected one state per evidence node, got {node}={out[node]} "
                              f"and {node}={state}; try a single -e {node}=STATE")
        out[node] = state
    return out


def run(args: argparse.Namespace) -> int:
    from ..dag import read_bif
    from ..dag.render import to_text
    from ..errors import ConfigError

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
    samples = dag.sample(args.num_samples, seed=args.seed)
    columns = [[dag.states(n)[i] for i in samples[n].long().tolist()] for n in dag.nodes]
    rows = [list(r) for r in zip(*columns)]
    if args.json:
        print(json.dumps([dict(zip(dag.nodes, r)) for r in rows]))
        return 0
    try:
        f = open(args.out, "w", newline="") if args.out else sys.stdout
    except OSError as exc:
        raise ConfigError(f"expected a writable --out path, got {args.out!r} "
                          f"({exc.strerror}); try --out samples.csv") from exc
    try:
        w = csv.writer(f)
        w.writerow(dag.nodes)
        w.writerows(rows)
    finally:
        if args.out:
            f.close()
    return 0
