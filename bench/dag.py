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

5. All posterior marginals of alarm for 1000 evidence rows (5 observed nodes): ours is
   ``dag.marginals`` (one contraction and its gradient for the whole batch); pgmpy is
   ``VariableElimination.query`` per unobserved node and row, timed on the first
   ``PER_NODE_ROWS`` rows and scaled linearly to all rows (stated in the row's name).
6. MPE (most probable explanation, 3 observed nodes): ``dag.map`` vs pgmpy
   ``VariableElimination.map_query`` over every unobserved node, a single query (median) and
   a batch of rows (pgmpy: the median single query times the rows). pgmpy runs in a forked
   process limited to ``MPE_MEMORY`` more bytes and ``MPE_LIMIT_S`` seconds: on alarm, win95pts
   and hepar2 it runs out of memory (it multiplies factors into one table over many query
   variables), so asia and child are timed too.
7. Structure learning from 10,000 samples of alarm: Chow-Liu vs pgmpy ``TreeSearch``
   (``n_jobs=1``), hill climbing with BIC vs pgmpy ``HillClimbSearch`` + ``BIC`` (same state
   names); the learned scores are printed next to the times.

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
import math
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


PER_NODE_ROWS = 10  # rows of the pgmpy per-node marginal loop actually timed


def bench_marginals(rows: int) -> dict:
    dag = read_bif("alarm")
    ve = VariableElimination(to_pgmpy(dag))
    _, observed, s = _evidence_sets(dag, rows, 5, seed=3)
    batch = {v: s[v] for v in observed}
    dag._expressions.clear()
    ours, t_ours = _timed(lambda: dag.marginals(batch))
    free = [n for n in dag.nodes if n not in observed]

    def loop():
        out = []
        for r in range(PER_NODE_ROWS):
            ev = {v: dag.states(v)[int(s[v][r])] for v in observed}
            out.append({q: ve.query([q], evidence=ev, show_progress=False) for q in free})
        return out

    refs, t_pg = _timed(loop)
    for r, ref in enumerate(refs):
        for q in free:
            order = [ref[q].state_names[q].index(x) for x in dag.states(q)]
            err = float((ours[q][r] - torch.as_tensor(ref[q].values[order])).abs().max())
            assert err < 1e-6, f"marginal of {q}: disagreement {err}"
    return {"pgmpy_s": t_pg * rows / PER_NODE_ROWS, "pgmpy_timed_rows": PER_NODE_ROWS,
            "ours_s": t_ours, "nodes": len(free)}


MPE_LIMIT_S = 60.0  # a pgmpy map_query still running after this is stopped (a lower bound)
MPE_MEMORY = 4 << 30  # bytes the pgmpy map_query process may map beyond what it inherits


def _pgmpy_map_query(ve, free, ev):
    """``(assignment, seconds)`` of pgmpy's ``map_query`` in a forked process limited to
    ``MPE_MEMORY`` more bytes and ``MPE_LIMIT_S`` seconds: ``(None, MPE_LIMIT_S)`` when stopped at
    the limit, ``(MemoryError, nan)`` when it runs out of memory (pgmpy multiplies factors
    into one table over many query variables, e.g. 64 GiB on win95pts)."""
    import multiprocessing as mp
    import resource

    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)

    def child():
        with open("/proc/self/status") as f:  # the address space already mapped (~3.5 GB)
            mapped = next(int(x.split()[1]) << 10 for x in f if x.startswith("VmSize"))
        resource.setrlimit(resource.RLIMIT_AS, (mapped + MPE_MEMORY, mapped + MPE_MEMORY))
        try:
            send.send(_timed(lambda: ve.map_query(free, evidence=ev, show_progress=False)))
        except MemoryError:
            send.send((MemoryError, math.nan))

    proc = ctx.Process(target=child)
    proc.start()
    got = recv.recv() if recv.poll(MPE_LIMIT_S) else (None, MPE_LIMIT_S)
    proc.kill()
    proc.join()
    return got


def _mpe_check(dag, ref: dict, log_prob, r: int, ev_idx: dict) -> None:
    """pgmpy's assignment must score the same log joint as ours (ties may differ)."""
    ref_idx = {v: torch.tensor([dag.states(v).index(x)]) for v, x in ref.items()}
    lp = dag.log_prob({**ref_idx, **{v: t[r:r + 1] for v, t in ev_idx.items()}})
    assert abs(float(lp[0]) - float(log_prob[r] if log_prob.dim() else log_prob)) < 1e-6


def bench_mpe(name: str, reps: int, rows: int) -> dict:
    dag = read_bif(PGMPY_MODELS / f"{name}.bif.gz")
    ve = VariableElimination(to_pgmpy(dag))
    _, observed, s = _evidence_sets(dag, max(reps, rows), 3, seed=4)
    free = [n for n in dag.nodes if n not in observed]
    t_pg, t_ours, stopped = [], [], False
    for r in range(reps):
        ev = {v: dag.states(v)[int(s[v][r])] for v in observed}
        dag._expressions.clear()
        (_, lp), t = _timed(lambda ev=ev: dag.map(ev))
        t_ours.append(t)
        if stopped:
            continue
        ref, t = _pgmpy_map_query(ve, free, ev)
        t_pg.append(t)
        stopped = ref is None or ref is MemoryError
        if not stopped:
            _mpe_check(dag, ref, lp.reshape(1), 0, {v: s[v][r:r + 1] for v in observed})
    batch = {v: s[v][:rows] for v in observed}
    dag._expressions.clear()
    (_, lp), t_batch = _timed(lambda: dag.map(batch))
    assert lp.shape == (rows,)
    med = statistics.median
    return {"pgmpy_single_s": med(t_pg), "ours_single_s": med(t_ours),
            "pgmpy_batch_s": med(t_pg) * rows, "ours_batch_s": t_batch, "rows": rows,
            "pgmpy_stopped_at_limit": stopped and t_pg[-1] == MPE_LIMIT_S,
            "pgmpy_out_of_memory": stopped and math.isnan(t_pg[-1])}


def bench_structure(n: int) -> dict:
    import pandas as pd
    from pgmpy.estimators import BIC, HillClimbSearch, TreeSearch

    from pgm_lab.dag import learn_structure

    dag = read_bif("alarm")
    data = dag.sample(n, seed=5)
    states = {k: dag.states(k) for k in dag.nodes}
    df = pd.DataFrame({k: v.numpy() for k, v in data.items()})
    names = {k: list(range(len(v))) for k, v in states.items()}
    out = {}
    cl, t = _timed(lambda: learn_structure(data, method="chow-liu", states=states))
    ref, t_pg = _timed(lambda: TreeSearch(df, n_jobs=1).estimate(show_progress=False))
    assert set(ref.edges()) == set(cl.edges)
    out["chow_liu"] = {"pgmpy_s": t_pg, "ours_s": t}
    hc, t = _timed(lambda: learn_structure(data, method="hill-climb", score="bic",
                                           states=states))
    ref, t_pg = _timed(lambda: HillClimbSearch(df, state_names=names).estimate(
        scoring_method=BIC(df, state_names=names), show_progress=False))
    out["hill_climb_bic"] = {"pgmpy_s": t_pg, "ours_s": t, "ours_score": hc.score_,
                             "pgmpy_score": BIC(df, state_names=names).score(ref)}
    return out


def _ms(s: float) -> str:
    if math.isnan(s):
        return ""
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
    n_rows = 100 if args.quick else 1000
    r = bench_marginals(n_rows)
    results["benchmarks"][f"marginals_{n_rows}_rows_alarm"] = r
    rows.append((f"all {r['nodes']} marginals x {n_rows} evidence rows, alarm (pgmpy: VE per "
                 f"node, {PER_NODE_ROWS} rows timed, scaled)", _ms(r["pgmpy_s"]),
                 _ms(r["ours_s"]), r["pgmpy_s"] / r["ours_s"]))
    for name in ("asia", "child", "alarm", "win95pts", "hepar2"):
        r = bench_mpe(name, reps=3 if args.quick else 5, rows=n_rows)
        results["benchmarks"][f"mpe_{name}"] = r
        at_least = ">= " if r["pgmpy_stopped_at_limit"] else (
            "out of memory " if r["pgmpy_out_of_memory"] else "")
        rows.append((f"MPE single query, {name} (cold)", at_least + _ms(r["pgmpy_single_s"]),
                     _ms(r["ours_single_s"]), r["pgmpy_single_s"] / r["ours_single_s"],
                     at_least))
        rows.append((f"MPE {n_rows} evidence rows, {name} (pgmpy: median single x rows)",
                     at_least + _ms(r["pgmpy_batch_s"]), _ms(r["ours_batch_s"]),
                     r["pgmpy_batch_s"] / r["ours_batch_s"], at_least))
    n = 2_000 if args.quick else 10_000
    r = bench_structure(n)
    results["benchmarks"][f"structure_{n}_alarm"] = r
    c = r["chow_liu"]
    rows.append((f"Chow-Liu, {n // 1000}k samples of alarm", _ms(c["pgmpy_s"]), _ms(c["ours_s"]),
                 c["pgmpy_s"] / c["ours_s"]))
    h = r["hill_climb_bic"]
    rows.append((f"hill climb BIC, {n // 1000}k samples of alarm (score: pgmpy "
                 f"{h['pgmpy_score']:.0f}, ours {h['ours_score']:.0f})", _ms(h["pgmpy_s"]),
                 _ms(h["ours_s"]), h["pgmpy_s"] / h["ours_s"]))
    table = ["| benchmark | pgmpy | pgm_lab | speed-up (pgmpy / ours) |", "|---|---|---|---|"]
    rows = [r if len(r) == 5 else (*r, "") for r in rows]
    table += [f"| {b} | {p} | {o} | " + ("n/a" if math.isnan(ratio) else f"{bound}{ratio:.1f}x")
              + " |" for b, p, o, ratio, bound in rows]
    print("\n".join(table))
    results["table"] = [dict(zip(("benchmark", "pgmpy", "ours", "speedup", "lower_bound"), r))
                        for r in rows]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
