"""Benchmark: VAE / IWAE training steps and IWAE-5000 evaluation against peers.

Peers, all measured in the same run, interleaved round by round so that machine load hits
every contender alike:

1. One SVI step of ``pgm_lab.models.VAE`` + ``pgm_lab.guides.AmortizedNormal`` (784-400-20,
   Bernoulli, batch 128) with Pyro's ``Trace_ELBO`` and with ``pgm_lab.infer.IWAE(1)``, against
   a hand-written pure-PyTorch VAE step with the same networks, loss and Adam, both with
   torch's default Adam kernel (for-loop on the CPU) and with its fused kernel. Each Pyro loss
   with ``pyro.optim.Adam`` (one torch optimizer per parameter) and with
   ``pgm_lab.optim.Adam`` (one optimizer for all parameters, fused kernel by default; also
   with ``foreach=True``). "fit's step" is the step :func:`pgm_lab.train.fit` runs: the loss
   of :func:`pgm_lab.infer.device_loss.device_loss_and_grads` under a param trace, then
   ``optim(params)`` (``pgm_lab.train._svi_step``), its loss read every step (fit's default
   on the CPU) like the PyTorch peer's; also with Pyro's validation off, as fit runs the steps
   between two reads on CUDA. For reference, Pyro's compiled ``JitTrace_ELBO`` and our loss
   with one ``torch.optim.Adam`` (no SVI). Pyro's validation is on (its default) unless said.
2. One IWAE K=50 training step: ``IWAE(50)`` (standard and DReG) against Pyro's
   ``RenyiELBO(alpha=0, num_particles=50, vectorize_particles=True)`` and pure PyTorch.
3. IWAE-5000 evaluation of the whole digits test set (360 images, the compare-bounds VAE
   64-128-8) with ``pgm_lab.infer.iwae`` against a pure-PyTorch chunked loop: wall time and
   peak resident memory (each in a fresh subprocess).

Usage: ``python bench/vae.py [--rounds 30] [--threads 1]``. Prints Markdown tables and writes
``bench/results/vae.json``. Times are medians over rounds (milliseconds per step); the ratio is
the median over rounds of ours / peer timed back to back, which is robust to machine load.
Each Pyro contender has its own parameters (distinct Pyro param names) and optimizer.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import pyro
import pyro.optim
import torch
import torch.nn.functional as F
from pyro.infer import SVI, JitTrace_ELBO, RenyiELBO, Trace_ELBO
from pyro.nn import PyroModule
from torch import nn

from pgm_lab import optim as pgm_optim
from pgm_lab.data import load_dataset
from pgm_lab.guides import AmortizedNormal
from pgm_lab.infer import IWAE, iwae
from pgm_lab.infer.device_loss import device_loss_and_grads
from pgm_lab.models import VAE

HERE = Path(__file__).parent
X_DIM, H_DIM, Z_DIM, BATCH = 784, 400, 20, 128


class TorchVAE(nn.Module):
    """The same networks as VAE + AmortizedNormal, with the loss written by hand."""

    def __init__(self, x_dim: int, h_dim: int, z_dim: int) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.enc = nn.Sequential(nn.Linear(x_dim, h_dim), nn.ReLU(), nn.Linear(h_dim, 2 * z_dim))
        self.dec = nn.Sequential(nn.Linear(z_dim, h_dim), nn.ReLU(), nn.Linear(h_dim, x_dim))

    def log_weights(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """``[k, B]`` log p(x, z) - log q(z | x) with z ~ q reparameterized."""
        h = self.enc(x)
        loc, scale = h[:, : self.z_dim], F.softplus(h[:, self.z_dim :]) + 1e-5
        eps = torch.randn(k, *loc.shape)
        z = loc + scale * eps
        log_q = (-0.5 * eps**2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_pz = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(-1)
        logits = self.dec(z)
        log_px = -F.binary_cross_entropy_with_logits(logits, x.expand(k, -1, -1),
                                                     reduction="none").sum(-1)
        return log_px + log_pz - log_q

    def loss(self, x: torch.Tensor, k: int) -> torch.Tensor:
        lw = self.log_weights(x, k)
        return -(torch.logsumexp(lw, 0) - math.log(k)).sum()


def _torch_step(module: TorchVAE, opt: torch.optim.Optimizer, k: int):
    def step(x: torch.Tensor) -> float:
        opt.zero_grad()
        loss = module.loss(x, k)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


_CONTENDERS = PyroModule()  # parent giving each contender's parameters their own names


def _pyro_step(loss: pyro.infer.ELBO, optim=None):
    """SVI step; ``optim`` defaults to ``pyro.optim.Adam({"lr": 1e-3})``."""
    torch.manual_seed(0)
    vae, guide = VAE(X_DIM, Z_DIM, (H_DIM,)), AmortizedNormal(X_DIM, Z_DIM, (H_DIM,))
    i = len(list(_CONTENDERS.children())) // 2
    # Registered as children, the modules' Pyro params are named "vae<i>.decoder.0.weight"...:
    # contenders neither share parameters nor optimizer states.
    setattr(_CONTENDERS, f"vae{i}", vae)
    setattr(_CONTENDERS, f"guide{i}", guide)
    optim = pyro.optim.Adam({"lr": 1e-3}) if optim is None else optim
    svi = SVI(vae.model, guide, optim, loss)
    return svi.step


def _pyro_loss_torch_adam(loss: pyro.infer.ELBO):
    """Our objective without SVI: ``differentiable_loss`` + one ``torch.optim.Adam`` over all
    parameters (Pyro's documented custom-loop pattern); isolates SVI/PyroOptim overhead."""
    step = _pyro_step(loss)  # registers fresh modules
    vae, guide = list(_CONTENDERS.children())[-2:]
    opt = torch.optim.Adam([*vae.parameters(), *guide.parameters()], lr=1e-3)
    del step

    def run(x: torch.Tensor) -> float:
        opt.zero_grad()
        value = loss.differentiable_loss(vae.model, guide, x)
        value.backward()
        opt.step()
        return float(value.detach())

    return run


def _fit_step(loss: pyro.infer.ELBO, validate: bool = True):
    """The step of ``pgm_lab.train.fit`` (``_svi_step``) with its default optimizer
    (``pgm_lab.optim.Adam``), the loss read to the host as fit does on the CPU; with
    ``validate=False`` under ``pyro.validation_enabled(False)``."""
    step = _pyro_step(loss)  # registers fresh modules
    vae, guide = list(_CONTENDERS.children())[-2:]
    del step
    on_device = device_loss_and_grads(loss)
    if on_device is None:
        raise RuntimeError(f"expected a loss fit keeps on the device, got {loss!r}")
    optim = pgm_optim.Adam({"lr": 1e-3})

    def run(x: torch.Tensor) -> float:
        with contextlib.nullcontext() if validate else pyro.validation_enabled(False):
            with pyro.poutine.trace(param_only=True) as param_capture:
                value = on_device(vae.model, guide, x)
            params = {site["value"].unconstrained()
                      for site in param_capture.trace.nodes.values()}
            optim(params)
            pyro.infer.util.zero_grads(params)
        return float(value)

    return run


def _data(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((BATCH, X_DIM), 0.3), generator=g)


def _time_steps(contenders: dict, rounds: int, reps: int) -> dict[str, list[float]]:
    """Per-round mean step times (ms); contenders alternate within every round."""
    x = _data(0)
    for fn in contenders.values():  # warm up
        for _ in range(3):
            fn(x)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            for _ in range(reps):
                fn(x)
            times[name].append((time.perf_counter() - t0) / reps * 1e3)
    return times


def _row(task: str, times: dict[str, list[float]], peer: str, ours: str, label: str) -> dict:
    """Medians of the step times and of the per-round ratio ours / peer (robust to load)."""
    ratios = [o / p for o, p in zip(times[ours], times[peer])]
    return {"task": task, "peer": peer, "ours": label, "peer_ms": statistics.median(times[peer]),
            "ours_ms": statistics.median(times[ours]), "ratio": statistics.median(ratios)}


def _torch_contender(k: int, **adam_kwargs):
    torch.manual_seed(0)
    module = TorchVAE(X_DIM, H_DIM, Z_DIM)
    return _torch_step(module, torch.optim.Adam(module.parameters(), lr=1e-3, **adam_kwargs), k)


def bench_steps(rounds: int) -> list[dict]:
    rows = []
    k1 = _time_steps({
        "pure PyTorch": _torch_contender(1),
        "pure PyTorch (fused Adam)": _torch_contender(1, fused=True),
        "Trace_ELBO": _pyro_step(Trace_ELBO()),
        "IWAE(1)": _pyro_step(IWAE(1)),
        "Trace_ELBO + pgm Adam": _pyro_step(Trace_ELBO(), pgm_optim.Adam({"lr": 1e-3})),
        "IWAE(1) + pgm Adam": _pyro_step(IWAE(1), pgm_optim.Adam({"lr": 1e-3})),
        "IWAE(1) + pgm foreach Adam": _pyro_step(IWAE(1), pgm_optim.Adam({"lr": 1e-3,
                                                                           "foreach": True})),
        "fit's step, Trace_ELBO": _fit_step(Trace_ELBO()),
        "fit's step, IWAE(1)": _fit_step(IWAE(1)),
        "fit's step, IWAE(1), no validation": _fit_step(IWAE(1), validate=False),
        "IWAE(1) + torch Adam": _pyro_loss_torch_adam(IWAE(1)),
        "JitTrace_ELBO": _pyro_step(JitTrace_ELBO(ignore_jit_warnings=True)),
    }, rounds, reps=3)
    task = f"SVI step, K=1 (784-400-20, B={BATCH})"
    fused_task = f"SVI step, K=1, both fused Adam (784-400-20, B={BATCH})"
    for ours in ("Trace_ELBO", "IWAE(1)"):
        rows.append(_row(task, k1, "pure PyTorch", ours, f"VAE + {ours} + pyro.optim.Adam"))
    for ours in ("Trace_ELBO", "IWAE(1)"):
        rows.append(_row(task, k1, "pure PyTorch", f"{ours} + pgm Adam",
                         f"VAE + {ours} + pgm_lab.optim.Adam (fused)"))
    rows.append(_row(task, k1, "pure PyTorch", "IWAE(1) + pgm foreach Adam",
                     "VAE + IWAE(1) + pgm_lab.optim.Adam(foreach=True)"))
    for name in ("fit's step, Trace_ELBO", "fit's step, IWAE(1)",
                 "fit's step, IWAE(1), no validation"):
        rows.append(_row(task, k1, "pure PyTorch", name, name))
    for ours, label in (("Trace_ELBO + pgm Adam", "VAE + Trace_ELBO + pgm_lab.optim.Adam"),
                        ("IWAE(1) + pgm Adam", "VAE + IWAE(1) + pgm_lab.optim.Adam"),
                        ("fit's step, Trace_ELBO", "fit's step, Trace_ELBO"),
                        ("fit's step, IWAE(1)", "fit's step, IWAE(1)"),
                        ("fit's step, IWAE(1), no validation",
                         "fit's step, IWAE(1), no validation")):
        rows.append(_row(fused_task, k1, "pure PyTorch (fused Adam)", ours, label))
    rows.append(_row(task, k1, "pure PyTorch", "JitTrace_ELBO",
                     "VAE + Pyro's JitTrace_ELBO (compiled)"))
    rows.append(_row(f"step without SVI, K=1 (784-400-20, B={BATCH})", k1, "pure PyTorch",
                     "IWAE(1) + torch Adam", "VAE + IWAE(1).differentiable_loss + torch Adam"))
    k50 = _time_steps({
        "pure PyTorch": _torch_contender(50),
        "RenyiELBO": _pyro_step(RenyiELBO(alpha=0, num_particles=50, vectorize_particles=True)),
        "IWAE(50)": _pyro_step(IWAE(50)),
        "IWAE(50, dreg)": _pyro_step(IWAE(50, "dreg")),
    }, max(3, rounds // 3), reps=1)
    for ours in ("IWAE(50)", "IWAE(50, dreg)"):
        for peer in ("RenyiELBO", "pure PyTorch"):
            rows.append(_row("IWAE training step, K=50", k50, peer, ours, ours))
    return rows


# --- IWAE-5000 evaluation (each contender in its own process, for peak memory) -------------

def _eval_worker(which: str, k: int) -> dict:
    pyro.set_rng_seed(0)
    torch.manual_seed(0)
    x = load_dataset("digits", "test", binarize="static")
    vae, guide = VAE(64, 8, (128,)), AmortizedNormal(64, 8, (128,))
    run = (lambda k: iwae(vae.model, guide, x, num_particles=k, progress=False)) \
        if which == "ours" else (lambda k: _torch_iwae(vae, guide, x, k, chunk=100))
    run(10)  # warm up (first allocations, lazy initialization)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM), Linux only
    base = _status_mb("VmRSS")
    t0 = time.perf_counter()
    values = run(k)
    seconds = time.perf_counter() - t0
    peak = _status_mb("VmHWM")
    return {"seconds": seconds, "peak_rss_mb": peak, "delta_rss_mb": peak - base,
            "mean_bound": float(values.mean())}


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


@torch.no_grad()
def _torch_iwae(vae: VAE, guide: AmortizedNormal, x: torch.Tensor, k: int,
                chunk: int) -> torch.Tensor:
    """Hand-written streaming IWAE: the same networks, chunks of particles, running lse."""
    loc, scale = guide.encode(x)
    lse = None
    for start in range(0, k, chunk):
        c = min(chunk, k - start)
        eps = torch.randn(c, *loc.shape)
        z = loc + scale * eps
        log_q = (-0.5 * eps**2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_pz = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_px = -F.binary_cross_entropy_with_logits(
            vae.decoder(z), x.expand(c, -1, -1), reduction="none").sum(-1)
        part = torch.logsumexp(log_px + log_pz - log_q, 0)
        lse = part if lse is None else torch.logaddexp(lse, part)
    return lse - math.log(k)


def bench_eval(k: int, threads: int, repeats: int) -> list[dict]:
    results: dict[str, list[dict]] = {"ours": [], "torch": []}
    for _ in range(repeats):
        for which in ("torch", "ours"):
            out = subprocess.run(
                [sys.executable, __file__, "--eval-worker", which, "--k", str(k),
                 "--threads", str(threads)], check=True, capture_output=True, text=True)
            results[which].append(json.loads(out.stdout.strip().splitlines()[-1]))

    def med(which: str, key: str) -> float:
        return statistics.median(r[key] for r in results[which])

    ratios = [o["seconds"] / t["seconds"] for o, t in zip(results["ours"], results["torch"])]
    return [{"task": f"IWAE-{k} eval, digits test set (360 x 64, VAE 64-128-8)",
             "ratio": statistics.median(ratios),
             "peer": "pure PyTorch loop", "ours": "pgm_lab.infer.iwae",
             "peer_ms": med("torch", "seconds") * 1e3, "ours_ms": med("ours", "seconds") * 1e3,
             "peer_peak_rss_mb": med("torch", "peak_rss_mb"),
             "ours_peak_rss_mb": med("ours", "peak_rss_mb"),
             "peer_eval_rss_mb": med("torch", "delta_rss_mb"),
             "ours_eval_rss_mb": med("ours", "delta_rss_mb")}]


def _table(rows: list[dict]) -> str:
    lines = ["| task | peer | ours | peer ms | ours ms | ratio (ours/peer) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['peer']} | {r['ours']} | {r['peer_ms']:.1f} | "
                     f"{r['ours_ms']:.1f} | {r['ratio']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--eval-repeats", type=int, default=3)
    parser.add_argument("--eval-worker", choices=["ours", "torch"], default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # JitTrace_ELBO
    warnings.filterwarnings("ignore", message=".*torch.jit.trace.* is deprecated",
                            category=FutureWarning)
    if args.eval_worker:
        print(json.dumps(_eval_worker(args.eval_worker, args.k)))
        return
    load_before = os.getloadavg()
    rows = bench_steps(args.rounds)
    print(_table(rows))
    ev = bench_eval(args.k, args.threads, args.eval_repeats)[0]
    print()
    print(_table([ev]))
    print()
    print(f"| IWAE-{args.k} eval memory | peak RSS during eval (MB) | peak RSS above "
          "the RSS before eval (MB) |")
    print("|---|---|---|")
    print(f"| pure PyTorch loop | {ev['peer_peak_rss_mb']:.0f} | {ev['peer_eval_rss_mb']:.0f} |")
    print(f"| pgm_lab.infer.iwae | {ev['ours_peak_rss_mb']:.0f} | {ev['ours_eval_rss_mb']:.0f} |")
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.system()}",
            "torch": torch.__version__, "pyro": pyro.__version__, "threads": args.threads,
            "rounds": args.rounds, "note": "measured on a machine shared with other jobs",
            "load_average_1_5_15_min": {"start": load_before, "end": os.getloadavg()}}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "vae.json").write_text(json.dumps({"meta": meta, "rows": [*rows, ev]},
                                                          indent=2))


if __name__ == "__main__":
    main()
