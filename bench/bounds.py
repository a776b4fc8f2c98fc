"""Benchmark: ``pgm_lab.infer.ais`` against a plain PyTorch AIS loop, and AIS vs IWAE at equal
compute.

1. AIS estimates of log p(x) for the 360 digits test images under the compare-bounds VAE
   (64-128-8, trained here with the ELBO), ``--steps`` annealing steps (default 1000),
   ``--chains`` chains (16) plus 2 step-size tuning chains, 10 leapfrog steps, from the guide:
   ``pgm_lab.infer.ais`` against :func:`plain_ais`, the same algorithm written directly in
   PyTorch for this model (same sigmoid schedule, same HMC transition, same per-point step-size
   adaptation on separate tuning chains), which evaluates the model and its gradient
   ``L + 1`` times per transition, and against the same loop reusing the gradient of the last
   leapfrog step (``L`` times, as ``pgm_lab.infer.ais`` does; ``reuse_grad=True``), so that
   the ratio to the latter is the overhead per evaluation alone. Each contender runs in a
   fresh subprocess: wall time and peak resident memory above the process's resident size
   once model and data are loaded (read from ``/proc/self/statm`` every millisecond by a
   thread; tensors are allocated outside Python's allocator, which ``tracemalloc`` does not
   see, and the process's lifetime peak ``ru_maxrss`` is set by importing torch, before the
   run). The load average is recorded at the start and the end (the cores may be shared).
2. AIS vs IWAE at equal compute: IWAE-K with K the number of decoder forward passes AIS spends
   per image, ``(C + 2) * (1 + (T - 1) * L)``. The tighter estimate is the larger (both
   are stochastic lower bounds of log p(x)); the difference is paired over the images.

Usage: ``python bench/bounds.py [--steps 1000] [--chains 16] [--threads 1] [--repeats 1]
[--out bench/results/bounds.json]``; ``--repeats R`` runs R rounds of the three contenders one
after another and reports each one's median time and memory (every round's are in the JSON).
Prints a Markdown table and writes the JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pyro
import torch
from torch.distributions import Bernoulli, Normal

from pgm_lab.data import dynamic_binarize, load_dataset
from pgm_lab.guides import AmortizedNormal
from pgm_lab.infer import ais, iwae, standard_error
from pgm_lab.models import VAE
from pgm_lab.train import fit

HERE = Path(__file__).parent
Z_DIM, HIDDEN, LEAPFROG, TUNING = 8, (128,), 10, 2
TARGET_ACCEPT, ADAPT_RATE, STEP_SIZE = 0.65, 0.5, 0.1  # pgm_lab.infer.ais's defaults


def sigmoid_betas(num_steps: int, sharpness: float = 4.0) -> torch.Tensor:
    s = torch.sigmoid(torch.linspace(-sharpness, sharpness, num_steps + 1, dtype=torch.float64))
    betas = (s - s[0]) / (s[-1] - s[0])
    betas[0], betas[-1] = 0.0, 1.0
    return betas


@torch.no_grad()
def plain_ais(vae: VAE, guide: AmortizedNormal, x: torch.Tensor, num_steps: int,
              num_chains: int, reuse_grad: bool = False) -> torch.Tensor:
    """AIS from q(z | x) to p(x, z), written for this model: ``[N]`` log p(x) estimates.

    ``reuse_grad``: the gradient at the last leapfrog position is kept in two parts
    (:math:`\\nabla \\log q`, in closed form, and :math:`\\nabla [\\log p(x, z) - \\log q]`), so
    that a transition starts from the accepted position's parts instead of evaluating the
    model there again: ``L`` gradient evaluations per transition instead of ``L + 1``, as
    ``pgm_lab.infer.ais`` does.
    """
    c = num_chains + TUNING
    loc, scale = guide.encode(x)
    q, prior = Normal(loc, scale), Normal(0.0, 1.0)

    def log_base_and_ratio(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_q = q.log_prob(z).sum(-1)
        log_joint = prior.log_prob(z).sum(-1) + \
            Bernoulli(logits=vae.decoder(z)).log_prob(x).sum(-1)
        return log_q, log_joint - log_q

    def density_and_grad(z: torch.Tensor, beta: float
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            z = z.detach().requires_grad_()
            log_q, ratio = log_base_and_ratio(z)
            log_pi = log_q + beta * ratio
            (grad,) = torch.autograd.grad(log_pi.sum(), z)
        return log_pi.detach(), ratio.detach(), grad

    def density_and_grad_parts(z: torch.Tensor
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            z = z.detach().requires_grad_()
            log_q, ratio = log_base_and_ratio(z)
            (grad_ratio,) = torch.autograd.grad(ratio.sum(), z)
        return log_q.detach(), ratio.detach(), -(z.detach() - loc) / scale**2, grad_ratio

    z = q.sample((c,))  # [C, N, Z]
    if reuse_grad:
        log_q, ratio, grad_q, grad_ratio = density_and_grad_parts(z)
    else:
        ratio = log_base_and_ratio(z)[1]
    betas = sigmoid_betas(num_steps)
    log_w = torch.zeros_like(ratio)
    log_eps = torch.full((x.shape[0],), math.log(STEP_SIZE))
    for t in range(1, num_steps + 1):
        beta = float(betas[t])
        log_w += float(betas[t] - betas[t - 1]) * ratio
        if t == num_steps:
            break
        if reuse_grad:
            log_pi, grad = log_q + beta * ratio, grad_q + beta * grad_ratio
        else:
            log_pi, ratio, grad = density_and_grad(z, beta)
        eps = log_eps.exp()[:, None]
        p0 = torch.randn_like(z)
        p, u = p0 + 0.5 * eps * grad, z
        for i in range(LEAPFROG):
            u = u + eps * p
            if reuse_grad and i == LEAPFROG - 1:
                new_log_q, new_ratio, new_grad_q, new_grad_ratio = density_and_grad_parts(u)
                new_log_pi = new_log_q + beta * new_ratio
                new_grad = new_grad_q + beta * new_grad_ratio
            else:
                new_log_pi, new_ratio, new_grad = density_and_grad(u, beta)
            p = p + (0.5 if i == LEAPFROG - 1 else 1.0) * eps * new_grad
        log_accept = (0.5 * (p0**2).sum(-1) - log_pi) - (0.5 * (p**2).sum(-1) - new_log_pi)
        log_accept = torch.nan_to_num(log_accept, nan=-math.inf)
        accept = torch.rand_like(log_accept).log() < log_accept
        z = torch.where(accept[..., None], u, z)
        ratio = torch.where(accept, new_ratio, ratio)
        if reuse_grad:
            log_q = torch.where(accept, new_log_q, log_q)
            grad_q = torch.where(accept[..., None], new_grad_q, grad_q)
            grad_ratio = torch.where(accept[..., None], new_grad_ratio, grad_ratio)
        tuned = log_accept.clamp(max=0.0).exp()[num_chains:].mean(0)
        log_eps = (log_eps + ADAPT_RATE * (tuned - TARGET_ACCEPT)).clamp(-12.0, 3.0)
    log_w = log_w[:num_chains]
    return torch.logsumexp(log_w, 0) - math.log(num_chains)


def train(epochs: int, seed: int) -> tuple[VAE, AmortizedNormal, torch.Tensor]:
    x_train = load_dataset("digits", "train")
    x_test = load_dataset("digits", "test", binarize="static", seed=seed)
    d = x_train.shape[1]
    pyro.clear_param_store()
    torch.manual_seed(seed)
    vae, guide = VAE(d, Z_DIM, HIDDEN), AmortizedNormal(d, Z_DIM, HIDDEN)
    fit(vae.model, guide, x_train, loss=pyro.infer.Trace_ELBO(), epochs=epochs, batch_size=100,
        seed=seed, transform=dynamic_binarize, progress=False, num_threads=1)
    return vae, guide, x_test


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak resident bytes above the size at entry, sampled every millisecond."""

    def __enter__(self) -> PeakMemory:
        self.base = self.peak = resident_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, resident_bytes())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, resident_bytes())

    @property
    def megabytes(self) -> float:
        return (self.peak - self.base) / 2**20


def child(which: str, state: Path, steps: int, chains: int, out: Path) -> None:
    """One contender in this (fresh) process; writes its time, memory and estimates."""
    saved = torch.load(state, weights_only=True)
    x = saved["x"]
    vae, guide = VAE(x.shape[1], Z_DIM, HIDDEN), AmortizedNormal(x.shape[1], Z_DIM, HIDDEN)
    vae.load_state_dict(saved["vae"])
    guide.load_state_dict(saved["guide"])
    torch.manual_seed(0)
    with PeakMemory() as memory:
        t0 = time.perf_counter()
        if which == "ours":
            log_px = ais(vae.model, guide, x, num_steps=steps, num_chains=chains,
                         leapfrog_steps=LEAPFROG, tuning_chains=TUNING, seed=0)
        else:
            log_px = plain_ais(vae, guide, x, steps, chains, reuse_grad=which == "plain_reuse")
        seconds = time.perf_counter() - t0
    torch.save({"seconds": seconds, "peak_mb": memory.megabytes, "log_px": log_px}, out)


def run_child(which: str, state: Path, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.pt"
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        subprocess.run([sys.executable, __file__, "--child", which, "--state", str(state),
                        "--steps", str(args.steps), "--chains", str(args.chains),
                        "--child-out", str(out), "--threads", str(args.threads)],
                       check=True, env=env)
        return torch.load(out, weights_only=True)


CONTENDERS = ("ours", "plain", "plain_reuse")


def summary(runs: list[dict]) -> dict:
    """The median time and memory of a contender's runs (and every run's), its estimates."""
    seconds, peak = [r["seconds"] for r in runs], [r["peak_mb"] for r in runs]
    return {"seconds": statistics.median(seconds), "peak_mb": statistics.median(peak),
            "log_px": runs[0]["log_px"],
            "json": {"seconds": statistics.median(seconds), "peak_mb": statistics.median(peak),
                     "log_px": float(runs[0]["log_px"].mean()), "all_seconds": seconds,
                     "all_peak_mb": peak}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--chains", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1,
                    help="rounds of the three contenders, interleaved; medians are reported")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "bounds.json")
    ap.add_argument("--child", choices=["ours", "plain", "plain_reuse"], help=argparse.SUPPRESS)
    ap.add_argument("--state", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        child(args.child, args.state, args.steps, args.chains, args.child_out)
        return
    start_load = list(os.getloadavg())
    vae, guide, x = train(args.epochs, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state.pt"
        torch.save({"vae": vae.state_dict(), "guide": guide.state_dict(), "x": x}, state)
        rounds = [{w: run_child(w, state, args) for w in CONTENDERS}
                  for _ in range(args.repeats)]
    ours, plain, reuse = (summary([r[w] for r in rounds]) for w in CONTENDERS)
    k = (args.chains + TUNING) * (1 + (args.steps - 1) * LEAPFROG)
    t0 = time.perf_counter()
    with torch.no_grad():
        torch.manual_seed(args.seed)
        bound = iwae(vae.model, guide, x, num_particles=k)
    iwae_seconds = time.perf_counter() - t0
    diff = ours["log_px"] - bound
    res = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_average_at_start": start_load,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores "
                   f"(shared), torch {torch.__version__}, {args.threads} thread(s)",
        "n_points": int(x.shape[0]), "steps": args.steps, "chains": args.chains,
        "tuning_chains": TUNING, "leapfrog_steps": LEAPFROG,
        "repeats": args.repeats,
        "ours": ours["json"], "plain": plain["json"], "plain_reuse": reuse["json"],
        "time_ratio": ours["seconds"] / plain["seconds"],
        "memory_ratio": ours["peak_mb"] / max(plain["peak_mb"], 1e-9),
        "time_ratio_reuse": ours["seconds"] / reuse["seconds"],
        "memory_ratio_reuse": ours["peak_mb"] / max(reuse["peak_mb"], 1e-9),
        "load_average": list(os.getloadavg()),
        "equal_compute": {"decoder_passes_per_point": k, "iwae": float(bound.mean()),
                          "iwae_seconds": iwae_seconds, "ais": float(ours["log_px"].mean()),
                          "ais_minus_iwae": float(diff.mean()),
                          "ais_minus_iwae_stderr": standard_error(diff),
                          "tighter": "AIS" if diff.mean() > 0 else "IWAE"},
    }
    out = args.out
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    e = res["equal_compute"]
    print(f"AIS on {res['n_points']} digits test images, {args.steps} steps, {args.chains} (+"
          f"{TUNING} tuning) chains, {LEAPFROG} leapfrog steps; {res['machine']}\n")
    print("| | gradient evaluations per transition | wall s | peak MB | mean log p(x) estimate |\n"
          "|---|---|---|---|---|")
    rows = (("pgm_lab.infer.ais", LEAPFROG, res["ours"]),
            ("plain PyTorch loop", LEAPFROG + 1, res["plain"]),
            ("plain PyTorch loop, last gradient reused", LEAPFROG, res["plain_reuse"]))
    for name, evals, r in rows:
        print(f"| {name} | {evals} | {r['seconds']:.1f} | {r['peak_mb']:.1f} | "
              f"{r['log_px']:.3f} |")
    print(f"| ratio to the plain loop | | {res['time_ratio']:.2f}x | "
          f"{res['memory_ratio']:.2f}x | |")
    print(f"| ratio to the loop reusing the gradient | | {res['time_ratio_reuse']:.2f}x | "
          f"{res['memory_ratio_reuse']:.2f}x | |\n")
    for w in CONTENDERS:
        print(f"{w}: seconds of each round {[round(t, 1) for t in res[w]['all_seconds']]}")
    print(f"load average (1, 5, 15 min) at the start: {start_load}, at the end: "
          f"{res['load_average']}")
    print(f"equal compute ({k} decoder passes per image): AIS {e['ais']:.3f}, IWAE-{k} "
          f"{e['iwae']:.3f}; AIS - IWAE = {e['ais_minus_iwae']:+.3f} ± "
          f"{e['ais_minus_iwae_stderr']:.3f} (paired): {e['tighter']} is tighter")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
