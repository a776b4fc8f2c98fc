"""Benchmark on one GPU: training, IWAE-5000 evaluation and RBM Gibbs sampling.

1. One epoch of the VAE 784-400-20 (Bernoulli, ``Trace_ELBO``, ``pgm_lab.optim.Adam``,
   batch 128, 60000 synthetic binary images kept on the GPU) with ``pgm_lab.train.fit``,
   against a plain PyTorch loop with the same networks, loss and batch on the same GPU (the
   loss read back once per epoch), with torch's default Adam and with its fused Adam (the
   kernel ``pgm_lab.optim.Adam`` picks); and the host synchronisations per ``fit`` step, as
   counted by ``torch.cuda.set_sync_debug_mode("warn")`` (expected: about one per
   ``check_every`` = 50 steps, plus the validated first step of each window).
2. IWAE-5000 evaluation (``pgm_lab.infer.iwae``) of 1000 images with the same VAE: images
   per second.
3. RBM 784x500 block Gibbs sampling (``RBM.gibbs``, 4096 chains): chain-steps per second,
   against the roofline of the step's two matrix products ``[C, V] x [V, H]`` at the rate
   ``torch.matmul`` reaches on the same shapes.

Runs in a few minutes; without CUDA it prints one line and exits 0. ``--device cpu`` runs the
same code on the CPU with small sizes (a check of the script, not a benchmark). Prints a
Markdown table and writes ``bench/results/gpu.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).parent
X_DIM, H_DIM, Z_DIM, BATCH = 784, 400, 20, 128


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TorchVAE(nn.Module):
    """The networks of VAE + AmortizedNormal with the single-sample ELBO written by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(X_DIM, H_DIM), nn.ReLU(), nn.Linear(H_DIM, 2 * Z_DIM))
        self.dec = nn.Sequential(nn.Linear(Z_DIM, H_DIM), nn.ReLU(), nn.Linear(H_DIM, X_DIM))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        h = self.enc(x)
        loc, scale = h[:, :Z_DIM], F.softplus(h[:, Z_DIM:]) + 1e-5
        eps = torch.randn_like(loc)
        z = loc + scale * eps
        log_q = (-0.5 * eps**2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_pz = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_px = -F.binary_cross_entropy_with_logits(self.dec(z), x, reduction="none").sum(-1)
        return -(log_px + log_pz - log_q).sum()


def torch_epoch(data: torch.Tensor, device: torch.device, **adam: bool) -> float:
    """Seconds of the second epoch of a plain PyTorch loop (the first warms up); ``adam``:
    the kernel (torch's default, or ``fused=True`` as ``pgm_lab.optim.Adam`` picks)."""
    module = TorchVAE().to(device)
    opt = torch.optim.Adam(module.parameters(), lr=1e-3, **adam)
    seconds = 0.0
    for _epoch in range(2):
        _sync(device)
        t0 = time.perf_counter()
        total = torch.zeros((), device=device)
        order = torch.randperm(data.shape[0], device=device)
        for i in range(0, data.shape[0], BATCH):
            opt.zero_grad(set_to_none=True)
            loss = module.loss(data[order[i:i + BATCH]])
            loss.backward()
            opt.step()
            total += loss.detach()
        float(total)
        _sync(device)
        seconds = time.perf_counter() - t0
    return seconds


def _vae(device: torch.device):  # noqa: ANN202
    from pgm_lab.guides import AmortizedNormal
    from pgm_lab.models import VAE

    vae = VAE(x_dim=X_DIM, z_dim=Z_DIM, hidden_dims=(H_DIM,), likelihood="bernoulli")
    guide = AmortizedNormal(x_dim=X_DIM, z_dim=Z_DIM, hidden_dims=(H_DIM,))
    return vae.to(device), guide.to(device)


def ours_epoch(data: torch.Tensor, device: torch.device) -> float:
    """Seconds of the second epoch of ``pgm_lab.train.fit``."""
    import pyro

    from pgm_lab.optim import Adam
    from pgm_lab.train import fit

    pyro.clear_param_store()
    vae, guide = _vae(device)
    history = fit(vae.model, guide, data, loss=pyro.infer.Trace_ELBO(), optim=Adam({"lr": 1e-3}),
                  epochs=2, batch_size=BATCH, device=device, progress=False,
                  distributed=False)
    return history.epochs[1].seconds


def syncs_per_step(data: torch.Tensor, device: torch.device, steps: int = 200) -> float:
    """Host synchronisations per step of ``fit`` (default loss and check_every), counted by
    CUDA's sync debug mode (one warning per synchronizing call) over ``steps`` steps."""
    import warnings

    import pyro

    from pgm_lab.train import fit

    pyro.clear_param_store()
    vae, guide = _vae(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fit(vae.model, guide, data[: steps * BATCH], epochs=1, batch_size=BATCH,
                device=device, progress=False, distributed=False)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message) for w in caught) / steps


def iwae_rate(n: int, k: int, device: torch.device) -> float:
    """Images per second of ``pgm_lab.infer.iwae`` with ``k`` particles (untrained VAE)."""
    import pyro

    from pgm_lab.infer import iwae

    pyro.clear_param_store()
    vae, guide = _vae(device)
    x = torch.bernoulli(torch.full((n, X_DIM), 0.3, device=device))
    iwae(vae.model, guide, x[:8], num_particles=k, progress=False)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    iwae(vae.model, guide, x, num_particles=k, progress=False)
    _sync(device)
    return n / (time.perf_counter() - t0)


def gibbs_rates(chains: int, steps: int, device: torch.device) -> tuple[float, float]:
    """(measured, roofline) chain-steps per second of RBM 784x500 block Gibbs."""
    from pgm_lab.rbm import RBM

    v_dim, h_dim = 784, 500
    rbm = RBM(n_visible=v_dim, n_hidden=h_dim).to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    v0 = torch.bernoulli(torch.full((chains, v_dim), 0.5, device=device), generator=gen)
    with torch.no_grad():
        rbm.gibbs(v0, 2, generator=gen)  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        rbm.gibbs(v0, steps, generator=gen)
        _sync(device)
        measured = chains * steps / (time.perf_counter() - t0)
        a = torch.randn(chains, v_dim, device=device)
        w = torch.randn(v_dim, h_dim, device=device)
        reps = 50
        a @ w
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ w
        _sync(device)
        flops = 2 * chains * v_dim * h_dim * reps / (time.perf_counter() - t0)
    return measured, flops / (2 * 2 * v_dim * h_dim)  # two products per step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (a smoke run)")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench/gpu.py: skipped, no CUDA device")
        return
    device = torch.device(args.device)
    small = device.type == "cpu"
    n_train, n_eval, k, chains, steps = ((BATCH * 4, 16, 50, 64, 10) if small else
                                         (60000, 1000, 5000, 4096, 200))
    data = torch.bernoulli(torch.full((n_train, X_DIM), 0.3),
                           generator=torch.Generator().manual_seed(0)).to(device)
    torch.manual_seed(0)
    plain, fused = torch_epoch(data, device), torch_epoch(data, device, fused=True)
    ours = ours_epoch(data, device)
    syncs = syncs_per_step(data, device) if device.type == "cuda" else None
    iwae_per_s = iwae_rate(n_eval, k, device)
    gibbs, roofline = gibbs_rates(chains, steps, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    rows = [
        {"task": f"VAE {X_DIM}-{H_DIM}-{Z_DIM} epoch ({n_train} images, batch {BATCH}), s",
         "peer": plain, "ours": ours, "ratio": ours / plain},
        {"task": "same, the PyTorch loop with fused Adam (the kernel pgm_lab.optim picks), s",
         "peer": fused, "ours": ours, "ratio": ours / fused},
        {"task": "host synchronisations per fit step (CUDA sync debug mode, 200 steps)",
         "peer": None, "ours": syncs, "ratio": None},
        {"task": f"IWAE-{k} evaluation, images/s", "peer": None, "ours": iwae_per_s,
         "ratio": None},
        {"task": f"RBM 784x500 Gibbs, {chains} chains, chain-steps/s (peer: matmul roofline)",
         "peer": roofline, "ours": gibbs, "ratio": gibbs / roofline},
    ]
    print(f"| task ({name}) | peer | pgm_lab | ratio |")
    print("|---|---|---|---|")
    for r in rows:
        cells = [f"{r[c]:.4g}" if r[c] is not None else "-" for c in ("peer", "ours", "ratio")]
        print(f"| {r['task']} | " + " | ".join(cells) + " |")
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": name,
            "torch": torch.__version__, "cpu_count": os.cpu_count(), "smoke": small}
    if not small:
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / "gpu.json").write_text(json.dumps({"meta": meta, "rows": rows},
                                                              indent=2))


if __name__ == "__main__":
    main()
