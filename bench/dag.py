"""Benchmark: pgm_lab.dag vs pgmpy, measured back to back in one process.

1. Single exact posterior query (alarm, win95pts, hepar2): median latency over random
   evidence sets of 5 sampled nodes, one query node. pgmpy: ``VariableElimination.query``
   (the inference object built once). Ours: ``dag.posterior`` *cold* (contraction-path cache
   cleared before every call, so path search is included) and *warm* (path cached for the
   evidence pattern, as in repeated queries).
2. 1000 evidence rows on alarm: ours is one batched call (index tensors ``[1000]``, one
   contraction); pgmpy is a loop of 1000 queries.
3. 100k ancestral samples of alarm: ``dag.sample`` vs pgmpy ``BayesianModelSampling
   .forward_sample`` (``n_jobs=1``); best of 3 runs each.
4. BIF parsing: ``read_bif`` vs pgmpy ``BIFReader(...).get_model()`` on the same text; best
   of 3 runs each.

Ratios are pgmpy time / our time (> 1: we are faster). Usage:
``python bench/dag.py [--quick] [--out bench/results/dag.json]``. The machine (2 CPU cores)
is shared with other jobs, so absolute times are noisy; the two sides run back to back.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import importlib.util
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch

from pgm_lab.dag import read_bif, to_pgmpy
from pgm_lab.dag.bif import parse_bif

ROOT = Path(__file__).resolve().parent

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from pgmpy.inference import VariableElimination
    from pgmpy.readwrite import BIFReader
    from pgmpy.sampling import BayesianModelSampling

PGMPY_MODELS = Path(importlib.util.find_spec("pgmpy").origin).parent / "utils" / "example_models"


def _text(name: str) -> str:
    with gzip.open(PGMPY_MODELS / f"{name}.bif.gz", "rt") as f:
        return f.read()


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0




def _evidence_sets(dag, count: int, k: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    nodes = list(dag.nodes)
    perm = torch.randperm(len(nodes), generator=gen).tolist()
    observed, query = [nodes[i] for i in perm[:k]], nodes[perm[k]]
    s = dag.sample(count, seed=seed)
    return query, observed, s


def bench_single_query(name: str, reps: int) -> dict:
    dag = read_bif(PGMPY_MODELS / f"{name}.bif.gz")
    ve = VariableElimination(to_pgmpy(dag))
    query, observed, s = _evidence_sets(dag, reps, 5, seed=1)
    t_pg, t_cold, t_warm = [], [], []
    for r in range(reps):
        ev = {v: dag.states(v)[int(s[v][r])] for v in observed}
        ref, t = _timed(lambda ev=ev: ve.query([query], evidence=ev, show_progress=False))
        t_pg.append(t)
        dag._expressions.clear()
        ours, t = _timed(lambda ev=ev: dag.posterior(query, ev))
        t_cold.append(t)
        _, t = _timed(lambda ev=ev: dag.posterior(query, ev))
        t_warm.append(t)
        order = [ref.state_names[query].index(x) for x in dag.states(query)]
        err = float((ours[query] - torch.as_tensor(ref.values[order])).abs().max())
        assert err < 1e-6, f"{name}: disagreement {err}"
    med = statistics.median
    return {"pgmpy_s": med(t_pg), "ours_cold_s": med(t_cold), "ours_warm_s": med(t_warm)}


def bench_batch(rows: int) -> dict:
    dag = read_bif("alarm")
    ve = VariableElimination(to_pgmpy(dag))
    query, observed, s = _evidence_sets(dag, rows, 5, seed=2)
    batch = {v: s[v] for v in observed}
    dag._expressions.clear()
    ours, t_ours = _timed(lambda: dag.posterior(query, batch)[query])

    def loop():
        out = []
        for r in range(rows):
            ev = {v: dag.states(v)[int(s[v][r])] for v in observed}
            out.append(ve.query([query], evidence=ev, show_progress=False))
        return out

    refs, t_pg = _timed(loop)
    order = [refs[0].state_names[query].index(x) for x in dag.states(query)]
    ref = torch.stack([torch.as_tensor(f.values[order]) for f in refs])
    assert float((ours - ref).abs().max()) < 1e-6
    return {"pgmpy_s": t_pg, "ours_s": t_ours}


def bench_sampling(n: int, reps: int) -> dict:
    dag = read_bif("alarm")
    dag.sample(1000, seed=0)  # build the inverse-CDF tables once
    t_ours = min(_timed(lambda: dag.sample(n, seed=0))[1] for _ in range(reps))
    sampler = BayesianModelSampling(to_pgmpy(dag))
    t_pg = min(_timed(lambda: sampler.forward_sample(size=n, seed=0, show_progress=False,
                                                     n_jobs=1))[1] for _ in range(reps))
    return {"pgmpy_s": t_pg, "ours_s": t_ours}


def bench_parse(name: str, reps: int) -> dict:
    text = _text(name)
    t_ours = min(_timed(lambda: parse_bif(text))[1] for _ in range(reps))
    t_pg = min(_timed(lambda: BIFReader(string=text).get_model())[1] for _ in range(reps))
    return {"pgmpy_s": t_pg, "ours_s": t_ours}


def _ms(s: float) -> str:
    return f"{1e3 * s:.2f} ms" if s < 1 else f"{s:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--out", default=str(ROOT / "results" / "dag.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    reps = 5 if args.quick else 30
    rows = []
    results = {"date": datetime.date.today().isoformat(),
               "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs)",
               "torch_threads": 1, "pgmpy": __import__("pgmpy").__version__, "benchmarks": {}}
    for name in ("alarm", "win95pts", "hepar2"):
        r = bench_single_query(name, reps)
        results["benchmarks"][f"single_query_{name}"] = r
        rows.append((f"single query, {name} (cold)", _ms(r["pgmpy_s"]), _ms(r["ours_cold_s"]),
                     r["pgmpy_s"] / r["ours_cold_s"]))
        rows.append((f"single query, {name} (warm path)", _ms(r["pgmpy_s"]),
                     _ms(r["ours_warm_s"]), r["pgmpy_s"] / r["ours_warm_s"]))
    n_rows = 200 if args.quick else 1000
    r = bench_batch(n_rows)
    results["benchmarks"][f"batch_{n_rows}_rows_alarm"] = r
    rows.append((f"{n_rows} evidence rows, alarm", _ms(r["pgmpy_s"]), _ms(r["ours_s"]),
                 r["pgmpy_s"] / r["ours_s"]))
    n = 10_000 if args.quick else 100_000
    r = bench_sampling(n, 1 if args.quick else 3)
    results["benchmarks"][f"sample_{n}_alarm"] = r
    rows.append((f"{n // 1000}k ancestral samples, alarm", _ms(r["pgmpy_s"]), _ms(r["ours_s"]),
                 r["pgmpy_s"] / r["ours_s"]))
    for name in ("alarm", "child", "win95pts", "hepar2", "water"):
        r = bench_parse(name, 1 if args.quick else 3)
        results["benchmarks"][f"parse_{name}"] = r
        rows.append((f"BIF parse, {name}", _ms(r["pgmpy_s"]), _ms(r["ours_s"]),
                     r["pgmpy_s"] / r["ours_s"]))
    table = ["| benchmark | pgmpy | pgm_lab | speed-up (pgmpy / ours) |", "|---|---|---|---|"]
    table += [f"| {b} | {p} | {o} | {ratio:.1f}x |" for b, p, o, ratio in rows]
    print("\n".join(table))
    results["table"] = [dict(zip(("benchmark", "pgmpy", "ours", "speedup"), r)) for r in rows]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
