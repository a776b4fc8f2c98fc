"""Benchmark: data-parallel training on one machine, 2 processes x 1 thread vs 1 process x 2.

The VAE of ``bench/vae.py`` (``pgm_lab.models.VAE`` + ``pgm_lab.guides.AmortizedNormal``,
784-400-20, Bernoulli, ``Trace_ELBO``, ``pgm_lab.optim.Adam``) trained by
``pgm_lab.train.fit`` with the same global batch (128) on the same synthetic binary data, as

1. one process with two torch threads (``distributed=False, num_threads=2``), and
2. two processes with one thread each (``distributed="auto"`` under the environment torchrun
   sets, gloo; each rank computes half of every minibatch and the gradients are averaged).

Each configuration runs in fresh processes; the first epoch is warm-up and not timed.
Throughput is training examples per second over the timed epochs (for two processes: the
slower rank's time). Rounds alternate the configurations so machine load hits both alike; the
ratio is the median over rounds of throughput(2 x 1) / throughput(1 x 2): above 1, processes
beat threads.

Usage: ``python bench/scaling.py [--rounds 5] [--epochs 4] [--steps 20]``. Prints a Markdown
table and writes ``bench/results/scaling.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

HERE = Path(__file__).parent
X_DIM, H_DIM, Z_DIM, BATCH = 784, 400, 20, 128


def worker(epochs: int, steps: int, threads: int) -> dict:
    """Train the VAE in this process (one rank when torchrun's variables are set)."""
    import pyro

    from pgm_lab.guides import AmortizedNormal
    from pgm_lab.models import VAE
    from pgm_lab.optim import Adam
    from pgm_lab.train import fit

    torch.manual_seed(0)
    data = torch.bernoulli(torch.full((BATCH * steps, X_DIM), 0.3),
                           generator=torch.Generator().manual_seed(1))
    vae = VAE(x_dim=X_DIM, z_dim=Z_DIM, hidden_dims=(H_DIM,), likelihood="bernoulli")
    guide = AmortizedNormal(x_dim=X_DIM, z_dim=Z_DIM, hidden_dims=(H_DIM,))
    history = fit(vae.model, guide, data, loss=pyro.infer.Trace_ELBO(), optim=Adam({"lr": 1e-3}),
                  epochs=epochs, batch_size=BATCH, device="cpu", progress=False,
                  num_threads=threads, distributed="auto")
    timed = history.epochs[1:]
    return {"seconds": sum(r.seconds for r in timed), "examples": BATCH * steps * len(timed)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(processes: int, threads: int, epochs: int, steps: int) -> float:
    """Examples per second of one configuration, each process started afresh."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    env["OMP_NUM_THREADS"] = str(threads)
    if processes > 1:
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
                   WORLD_SIZE=str(processes))
    argv = [sys.executable, __file__, "--worker", "--threads", str(threads), "--epochs",
            str(epochs), "--steps", str(steps)]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True,
                              env={**env, **({"RANK": str(r), "LOCAL_RANK": str(r)}
                                             if processes > 1 else {})})
             for r in range(processes)]
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=600)
        if p.returncode:
            raise SystemExit(f"a worker failed with exit status {p.returncode}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results[0]["examples"] / max(r["seconds"] for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch")
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.epochs, args.steps, args.threads)))
        return
    threads, procs, ratios = [], [], []
    for _ in range(args.rounds):
        threads.append(launch(1, 2, args.epochs, args.steps))
        procs.append(launch(2, 1, args.epochs, args.steps))
        ratios.append(procs[-1] / threads[-1])
    row = {"task": f"VAE {X_DIM}-{H_DIM}-{Z_DIM} training, global batch {BATCH}",
           "threads_1x2_examples_per_s": statistics.median(threads),
           "processes_2x1_examples_per_s": statistics.median(procs),
           "ratio_2x1_over_1x2": statistics.median(ratios),
           "ratios": ratios}
    print("| task | 1 process x 2 threads (examples/s) | 2 processes x 1 thread "
          "(examples/s) | ratio (2x1 / 1x2) |")
    print("|---|---|---|---|")
    print(f"| {row['task']} | {row['threads_1x2_examples_per_s']:.0f} | "
          f"{row['processes_2x1_examples_per_s']:.0f} | {row['ratio_2x1_over_1x2']:.2f} |")
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.system()}",
            "torch": torch.__version__, "rounds": args.rounds, "epochs": args.epochs,
            "steps_per_epoch": args.steps, "note": "measured on a machine shared with other jobs"}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "scaling.json").write_text(json.dumps({"meta": meta, "rows": [row]},
                                                              indent=2))


if __name__ == "__main__":
    main()
