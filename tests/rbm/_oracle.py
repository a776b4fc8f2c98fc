"""Brute-force oracles for tiny RBMs: every (v, h) configuration, in float64."""

from __future__ import annotations

import itertools

import torch

from pgm_lab.rbm import RBM, BoltzmannMachine


def all_states(n: int) -> torch.Tensor:
    """All ``2^n`` binary vectors ``[2^n, n]`` (float64)."""
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=torch.float64)


def random_rbm(n_visible: int, n_hidden: int, scale: float, seed: int) -> RBM:
    """An RBM with N(0, scale^2) weights and biases (float64)."""
    gen = torch.Generator().manual_seed(seed)
    rbm = RBM(n_visible, n_hidden, dtype=torch.float64)
    with torch.no_grad():
        for p in (rbm.W, rbm.b, rbm.c):
            p.copy_(scale * torch.randn(p.shape, generator=gen, dtype=torch.float64))
    return rbm


def brute_energy(rbm: RBM, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """E(v, h) = -b.v - c.h - v.W.h written as explicit sums over units."""
    w, b, c = rbm.W.detach(), rbm.b.detach(), rbm.c.detach()
    e = torch.zeros(v.shape[0], dtype=torch.float64)
    for i in range(rbm.n_visible):
        e -= b[i] * v[:, i]
        for j in range(rbm.n_hidden):
            e -= v[:, i] * w[i, j] * h[:, j]
    for j in range(rbm.n_hidden):
        e -= c[j] * h[:, j]
    return e


def joint_table(rbm, n_visible: int, n_hidden: int) -> tuple[torch.Tensor, torch.Tensor,
                                                               torch.Tensor]:
    """(vs [S, V], hs [S, H], log p [S]) over all S = 2^(V+H) joint states, by brute force."""
    states = all_states(n_visible + n_hidden)
    vs, hs = states[:, :n_visible], states[:, n_visible:]
    with torch.no_grad():
        neg_e = -rbm.energy(vs, hs)
    return vs, hs, neg_e - torch.logsumexp(neg_e, 0)


def codes(v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Index of each joint state ``(v, h)`` in the row order of :func:`joint_table`."""
    bits = torch.cat([v, h], -1)
    n = bits.shape[-1]
    return (bits * 2 ** torch.arange(n - 1, -1, -1, dtype=bits.dtype)).sum(-1).long()


def chi_square_pvalue(counts: torch.Tensor, p: torch.Tensor) -> float:
    """Pearson chi-square p-value of multinomial ``counts`` against probabilities ``p``
    (cells with expected count < 5 pooled)."""
    from scipy.stats import chi2

    n = counts.sum()
    expected = n * p
    keep = expected >= 5
    obs = torch.cat([counts[keep], counts[~keep].sum(0, keepdim=True)])
    exp = torch.cat([expected[keep], expected[~keep].sum(0, keepdim=True)])
    obs, exp = obs[exp > 0], exp[exp > 0]
    stat = float(((obs - exp) ** 2 / exp).sum())
    return float(chi2.sf(stat, len(obs) - 1))


def random_bm(visible_couplings=True, hidden_couplings=True, scale=1.0, seed=0,
              n_visible=4, n_hidden=3):
    """A BoltzmannMachine with N(0, scale^2) parameters (float64)."""
    bm = BoltzmannMachine(n_visible, n_hidden, visible_couplings=visible_couplings,
                          hidden_couplings=hidden_couplings, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in bm.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=gen, dtype=torch.float64))
    return bm
