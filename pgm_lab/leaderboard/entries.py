"""Train one model per family on binarized digits and score its test log-likelihood in nats.

Every ``train_*`` function returns an :class:`Entry` (a leaderboard row) and a function that
draws sample images, and saves the model as an artifact in ``out``: a BIF file for Bayesian
networks, a torch state file otherwise.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyro
import torch

from ..checkpoint import save_atomic
from ..dag import DAG, cpt, learn_structure
from ..data import dynamic_binarize, image_shape
from ..guides import AmortizedNormal
from ..infer import IWAE, ais, iwae, standard_error
from ..models import GAN, VAE
from ..optim import Adam
from ..plots import plot_pixel_network
from ..rbm import RBM
from ..train import fit

__all__ = ["Entry", "Scale", "SCALES", "pixel_names", "latent_class_em", "train_baseline",
           "train_network", "train_latent_class", "train_rbm", "train_vae", "train_gan"]

Sampler = Callable[[int, int], torch.Tensor]  # (n, seed) -> images [n, D] in [0, 1]


@dataclass
class Entry:
    """One leaderboard row (the keys of ``leaderboard.json``'s entries)."""

    name: str
    family: str
    test_ll: float
    stderr: float
    estimator: str
    bound: str
    interval: list[float | None] | None
    train_seconds: float
    artifact: str


@dataclass(frozen=True)
class Scale:
    """Sizes of one run: ``default`` (the job) or ``quick`` (seconds, for tests)."""

    rbm_epochs: int
    rbm_ais_runs: int
    rbm_ais_betas: int
    latent_classes: int
    em_iterations: int
    vae_epochs: int
    iwae_train_k: int
    eval_k: int
    ais_steps: int
    ais_chains: int
    gan_epochs: int


SCALES = {
    "default": Scale(rbm_epochs=20, rbm_ais_runs=100, rbm_ais_betas=10_000, latent_classes=20,
                     em_iterations=100, vae_epochs=50, iwae_train_k=5, eval_k=5000,
                     ais_steps=300, ais_chains=16, gan_epochs=100),
    "quick": Scale(rbm_epochs=1, rbm_ais_runs=8, rbm_ais_betas=100, latent_classes=3,
                   em_iterations=3, vae_epochs=1, iwae_train_k=2, eval_k=20, ais_steps=5,
                   ais_chains=2, gan_epochs=1),
}


def pixel_names(d: int) -> list[str]:
    """Node names of the pixels of an 8 x 8 (or ``w x w``) image: ``"r{row}c{col}"``."""
    w = math.isqrt(d)
    return [f"r{i // w}c{i % w}" for i in range(d)]


def _columns(x: torch.Tensor) -> dict[str, torch.Tensor]:
    return {n: x[:, i].long() for i, n in enumerate(pixel_names(x.shape[1]))}


def _rows(sample: dict[str, torch.Tensor], d: int) -> torch.Tensor:
    return torch.stack([sample[n] for n in pixel_names(d)], -1).float()


def _entry(name: str, family: str, ll: torch.Tensor, estimator: str, bound: str, seconds: float,
           artifact: str, train_data: str, interval: list[float | None] | None = None) -> Entry:
    """The row of per-image log-likelihoods ``ll [N]``; the name states the training data."""
    ll = ll.detach().double()
    return Entry(f"{name} [{train_data}]", family, float(ll.mean()), standard_error(ll),
                 estimator, bound, interval, round(seconds, 3), artifact)


def train_baseline(x_train: torch.Tensor, x_test: torch.Tensor, out: Path
                   ) -> tuple[Entry, Sampler]:
    r"""Independent Bernoulli pixels, :math:`p_d = (\sum_n x_{nd} + 1) / (N + 2)` (add-one
    smoothing); exact :math:`\log p(x) = \sum_d x_d \log p_d + (1 - x_d) \log(1 - p_d)`."""
    t0 = time.perf_counter()
    probs = (x_train.double().sum(0) + 1) / (x_train.shape[0] + 2)
    seconds = time.perf_counter() - t0
    ll = torch.distributions.Bernoulli(probs=probs).log_prob(x_test.double()).sum(-1)
    save_atomic({"probs": probs}, out / "baseline.pt")

    def sample(n: int, seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.bernoulli(probs.expand(n, -1), generator=gen).float()

    return (_entry("independent pixels", "baseline", ll, "exact", "exact", seconds,
                   "baseline.pt", "static binarized"), sample)


def train_network(x_train: torch.Tensor, x_test: torch.Tensor, out: Path, method: str
                  ) -> tuple[Entry, Sampler]:
    """A Chow-Liu tree (``method="chow-liu"``) or a hill-climbed BIC network over the pixels
    (:func:`pgm_lab.dag.learn_structure`, tables with pseudo-count 1); exact ``dag.log_prob``.
    Also writes the learned structure over the pixel grid, ``<method>_structure.png``."""
    names = pixel_names(x_train.shape[1])
    t0 = time.perf_counter()
    dag = learn_structure(_columns(x_train), method, "bic", pseudo_count=1.0,
                          states={n: ["0", "1"] for n in names})
    seconds = time.perf_counter() - t0
    ll = dag.log_prob(_columns(x_test))
    slug = method.replace("-", "_")
    dag.to_bif(out / f"{slug}.bif")
    label = "Chow-Liu tree" if method == "chow-liu" else "hill-climb BIC network"
    plot_pixel_network(dag, out / f"{slug}_structure.png", shape=image_shape(len(names)),
                       pixels=names, title=f"{label} over the 8 x 8 pixels")
    return (_entry(label, "bayesian-network", ll, "exact", "exact", seconds, f"{slug}.bif",
                   "static binarized"), lambda n, s: _rows(dag.sample(n, seed=s), len(names)))


def latent_class_em(x: torch.Tensor, k: int, iterations: int, seed: int,
                    pseudo_count: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    r"""EM for a mixture of ``k`` independent-Bernoulli components (Dempster, Laird & Rubin
    1977), vectorized over pixels.

    E-step: :math:`r_{nk} \propto \pi_k \prod_d \mu_{kd}^{x_{nd}} (1 - \mu_{kd})^{1 - x_{nd}}`;
    M-step with a Dirichlet pseudo-count :math:`\alpha`: :math:`\pi_k \propto \sum_n r_{nk} +
    \alpha`, :math:`\mu_{kd} = (\sum_n r_{nk} x_{nd} + \alpha) / (\sum_n r_{nk} + 2\alpha)` --
    the update :meth:`pgm_lab.dag.DAG.fit` with ``method="em"`` makes on the same network, in
    one matrix product. Starts from the responsibilities of ``k`` random data rows.

    Returns:
        ``(weights [k], probs [k, D])`` in float64.
    """
    x = x.double()
    gen = torch.Generator().manual_seed(seed)
    centers = x[torch.randperm(x.shape[0], generator=gen)[:k]]
    weights = torch.full((k,), 1.0 / k, dtype=torch.float64)
    probs = (centers + pseudo_count) / (1 + 2 * pseudo_count)
    for _ in range(iterations):
        log_joint = weights.log() + x @ probs.log().T + (1 - x) @ (1 - probs).log().T
        r = torch.softmax(log_joint, -1)  # [N, k]
        nk = r.sum(0)
        weights = (nk + pseudo_count) / (nk + pseudo_count).sum()
        probs = (r.T @ x + pseudo_count) / (nk[:, None] + 2 * pseudo_count)
    return weights, probs


def train_latent_class(x_train: torch.Tensor, x_test: torch.Tensor, out: Path, k: int,
                       iterations: int, seed: int) -> tuple[Entry, Sampler]:
    """A hidden discrete root ``"class"`` with ``k`` states over conditionally independent
    pixels, fit by :func:`latent_class_em`; exact ``log_evidence`` sums the root out."""
    names = pixel_names(x_train.shape[1])
    t0 = time.perf_counter()
    weights, probs = latent_class_em(x_train, k, iterations, seed)
    states = [str(j) for j in range(k)]
    spec: dict[str, Any] = {"class": cpt([], weights, states)}
    for i, n in enumerate(names):
        spec[n] = cpt(["class"], torch.stack([1 - probs[:, i], probs[:, i]], -1), ["0", "1"])
    dag = DAG(spec)
    seconds = time.perf_counter() - t0
    ll = dag.log_evidence(_columns(x_test))
    dag.to_bif(out / "latent_class.bif")
    return (_entry(f"latent-class model (K={k}, EM)", "bayesian-network", ll, "exact", "exact",
                   seconds, "latent_class.bif", "static binarized"),
            lambda n, s: _rows(dag.sample(n, seed=s), len(names)))


def train_rbm(x_train: torch.Tensor, x_test: torch.Tensor, out: Path, hidden: int,
              scale: Scale, seed: int, progress: bool | None) -> tuple[Entry, Sampler]:
    """A binary RBM trained by PCD-1; exact log Z when ``hidden <= 20``, else AIS (Salakhutdinov
    & Murray 2008) with its ±3σ interval of log Z (flipped into one of the test LL) and
    the reverse-AIS estimate (an upper-biased check) stated in the row's name."""
    rbm = RBM(x_train.shape[1], hidden, data=x_train, seed=seed)
    t0 = time.perf_counter()
    rbm.fit(x_train, method="pcd", k=1, epochs=scale.rbm_epochs, batch_size=10, lr=0.05,
            seed=seed, device="cpu", progress=progress)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        neg_f = -rbm.free_energy(rbm.check_visible(x_test)).double()
        if hidden <= 20:
            log_z = rbm.log_partition("exact").double()
            entry = _entry(f"RBM {hidden} hidden", "rbm", neg_f - log_z, "exact", "exact",
                           seconds, f"rbm_{hidden}.pt", "static binarized")
        else:
            res = rbm.log_partition("ais", num_runs=scale.rbm_ais_runs,
                                    num_betas=scale.rbm_ais_betas, base_data=x_train,
                                    reverse=True, return_result=True, seed=seed)
            mean = float(neg_f.mean())
            low, high = mean - float(res.log_z_upper), mean - float(res.log_z_lower)
            reverse = mean - float(res.reverse.log_z)
            entry = _entry(f"RBM {hidden} hidden (reverse AIS {reverse:.2f})", "rbm",
                           neg_f - res.log_z, "ais", "stochastic-upper", seconds,
                           f"rbm_{hidden}.pt", "static binarized",
                           interval=[v if math.isfinite(v) else None for v in (low, high)])
    rbm.save(out / f"rbm_{hidden}.pt")

    def sample(n: int, s: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(s)
        v0 = torch.bernoulli(torch.full((n, rbm.n_visible), 0.5), generator=gen)
        chains = rbm.gibbs(v0, 1000, generator=gen)
        return torch.sigmoid(rbm.visible_logits(chains.h)).detach().float()

    return entry, sample


def train_vae(x_train: torch.Tensor, x_test: torch.Tensor, out: Path, objective: str,
              scale: Scale, seed: int, progress: bool | None) -> tuple[list[Entry], Sampler]:
    """A VAE 64-128-8 with its amortized guide trained on dynamically binarized images with the
    ELBO (``objective="elbo"``) or IWAE-k with DReG gradients (Tucker et al. 2019); scored by
    IWAE-``eval_k`` and by AIS (two rows, both stochastic lower bounds)."""
    pyro.clear_param_store()
    torch.manual_seed(seed)
    d = x_train.shape[1]
    vae, guide = VAE(d, 8, (128,)), AmortizedNormal(d, 8, (128,))
    loss = (pyro.infer.Trace_ELBO() if objective == "elbo"
            else IWAE(num_particles=scale.iwae_train_k, estimator="dreg"))
    history = fit(vae.model, guide, x_train, loss=loss, optim=Adam({"lr": 3e-3}),
                  epochs=scale.vae_epochs, batch_size=100, seed=seed, device="cpu",
                  progress=progress, transform=dynamic_binarize, desc=f"train vae-{objective}")
    artifact = f"vae_{objective.replace('-', '_')}.pt"
    save_atomic({"decoder": vae.state_dict(), "encoder": guide.state_dict()}, out / artifact)
    label = "VAE, ELBO-trained" if objective == "elbo" else (
        f"VAE, IWAE-{scale.iwae_train_k} (DReG)-trained")
    ll_iwae = iwae(vae.model, guide, x_test, num_particles=scale.eval_k)
    ll_ais = ais(vae.model, guide, x_test, num_steps=scale.ais_steps,
                 num_chains=scale.ais_chains, seed=seed)
    rows = [_entry(label, "vae", ll_iwae, f"iwae-{scale.eval_k}", "stochastic-lower",
                   history.seconds, artifact, "dynamic binarization"),
            _entry(label, "vae", ll_ais, f"ais-{scale.ais_steps}", "stochastic-lower",
                   history.seconds, artifact, "dynamic binarization")]
    return rows, lambda n, s: vae.sample(n, seed=s).float()


def train_gan(x_grey: torch.Tensor, x_test: torch.Tensor, out: Path, scale: Scale, seed: int,
              progress: bool | None) -> tuple[Entry, Sampler]:
    """A GAN 8-128-64 (:class:`pgm_lab.models.GAN`, non-saturating loss) trained on the grey
    levels (its discriminator sees the generator's pixel means); scored by AIS from the prior
    on the binarized test images, as Wu et al. (2017) scored GANs."""
    torch.manual_seed(seed)
    gan = GAN(x_grey.shape[1], 8, (128,))
    history = gan.fit(x_grey, epochs=scale.gan_epochs, batch_size=100, lr=2e-4, seed=seed,
                      progress=progress)
    save_atomic(gan.state_dict(), out / "gan.pt")
    ll = ais(gan.model, None, x_test, init="prior", num_steps=scale.ais_steps,
             num_chains=scale.ais_chains, seed=seed)
    return (_entry("GAN (non-saturating)", "gan", ll, f"ais-{scale.ais_steps}",
                   "stochastic-lower", history.seconds, "gan.pt", "grey levels"),
            lambda n, s: gan.sample(n, seed=s).float())
