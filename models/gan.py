"""A generative adversarial network whose generator is a Pyro program with a Bernoulli output."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from pgm_lab.checkpoint import load, save_atomic
from pgm_lab.errors import CheckpointError, ConfigError, TrainingError
from pgm_lab.train import EpochRecord, History, progress_enabled

from ._nets import as_rows, check_dims, hidden_tuple, mlp

__all__ = ["GAN", "GENERATOR_LOSSES"]

GENERATOR_LOSSES = ("non-saturating", "saturating")


class GAN(nn.Module):
    r"""Generative adversarial network (Goodfellow et al. 2014, "Generative Adversarial Nets").

    The generator is the latent-variable model

    .. math:: z_n \sim \mathcal N(0, I_Z), \qquad x_n \mid z_n \sim
              \mathrm{Bernoulli}(\sigma(G_\theta(z_n)))

    with :math:`G_\theta` an MLP ``z_dim -> hidden_dims -> x_dim`` of logits; :meth:`model` is
    that Pyro program (sites ``"z"`` and ``"x"`` in plate ``"data"``), so
    :func:`pgm_lab.infer.ais` with ``init="prior"`` estimates its :math:`\log p(x)` as Wu et al.
    (2017) did for GANs. The discriminator :math:`D_\phi(x) = \sigma(d_\phi(x))` is an MLP
    ``x_dim -> disc_hidden_dims -> 1`` of logits that sees real images and the generator's
    pixel means :math:`\tilde x = \sigma(G_\theta(z))`. Training (:meth:`fit`) alternates
    ascent of the minimax value :meth:`value` in :math:`\phi` and descent of
    :meth:`generator_loss` in :math:`\theta`.

    Args:
        x_dim: pixels per image ``D``; ``z_dim``: latent size ``Z``.
        hidden_dims: generator hidden widths; ``disc_hidden_dims``: the discriminator's
            (default: the same). ``()`` gives a linear generator / logistic discriminator.
        activation: hidden activation of both networks.

    Raises:
        ConfigError: non-positive sizes, unknown activation.
    """

    def __init__(self, x_dim: int, z_dim: int = 8, hidden_dims: Sequence[int] = (128,),
                 disc_hidden_dims: Sequence[int] | None = None, *, activation: str = "relu",
                 site: str = "z", obs_site: str = "x", plate_name: str = "data") -> None:
        super().__init__()
        check_dims(x_dim=x_dim, z_dim=z_dim)
        self.x_dim, self.z_dim = x_dim, z_dim
        self.site, self.obs_site, self.plate_name = site, obs_site, plate_name
        self.generator = mlp(z_dim, hidden_tuple(hidden_dims), x_dim, activation)
        disc = hidden_dims if disc_hidden_dims is None else disc_hidden_dims
        self.discriminator = mlp(x_dim, hidden_tuple(disc), 1, activation)

    # ---- the generative model ---------------------------------------------------------------

    def model(self, x: torch.Tensor) -> torch.Tensor:
        """The Pyro program ``p(x, z)`` for ``x [N, D]`` (binary); returns ``z [N, Z]``."""
        x = as_rows(x, self.x_dim, dtype=self.generator[-1].bias.dtype)
        n = x.shape[0]
        with pyro.plate(self.plate_name, n):
            prior = dist.Normal(x.new_zeros(()), x.new_ones(())).expand([n, self.z_dim])
            z = pyro.sample(self.site, prior.to_event(1))
            logits = self.generator(z)
            pyro.sample(self.obs_site, dist.Bernoulli(logits=logits, validate_args=False)
                        .to_event(1), obs=x)
        return z

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel means :math:`\\sigma(G_\\theta(z))`, ``[..., Z] -> [..., D]`` (differentiable)."""
        return torch.sigmoid(self.generator(z))

    @torch.no_grad()
    def sample(self, n: int, *, seed: int | None = None) -> torch.Tensor:
        """``n`` pixel-mean images ``[n, D]`` at ``z ~ N(0, I)`` (``seed``: own generator)."""
        check_dims(n=n)
        gen = None if seed is None else torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.z_dim, generator=gen).to(self.generator[-1].bias)
        return self.generate(z)

    # ---- the adversarial objectives ---------------------------------------------------------

    def value(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        r"""The minimax value on a batch, a scalar:

        .. math:: V(\phi, \theta) = \frac1n \sum_i \big[\log D_\phi(x_i)
                  + \log(1 - D_\phi(G_\theta(z_i)))\big]

        computed as ``logsigmoid(d(x)) + logsigmoid(-d(G(z)))``; ``x [n, D]``, ``z [m, Z]``
        (each term averaged over its own batch).
        """
        real = F.logsigmoid(self.discriminator(x)).mean()
        fake = F.logsigmoid(-self.discriminator(self.generate(z))).mean()
        return real + fake

    def generator_loss(self, z: torch.Tensor, loss: str = "non-saturating") -> torch.Tensor:
        r"""The generator's loss on ``z [m, Z]``, minimized in :math:`\theta`:

        * ``"saturating"``: :math:`\frac1m \sum_i \log(1 - D(G(z_i)))` (the minimax game; its
          gradient vanishes while :math:`D` rejects the samples confidently);
        * ``"non-saturating"``: :math:`-\frac1m \sum_i \log D(G(z_i))` (same fixed point,
          strong gradients early in training; Goodfellow et al. 2014, section 3).
        """
        logit = self.discriminator(self.generate(z))
        if loss == "saturating":
            return F.logsigmoid(-logit).mean()
        if loss == "non-saturating":
            return -F.logsigmoid(logit).mean()
        raise ConfigError(f"loss must be one of {GENERATOR_LOSSES}, got {loss!r}")

    # ---- training ---------------------------------------------------------------------------

    def fit(self, data: torch.Tensor, *, epochs: int = 10, batch_size: int = 100,
            lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.999),
            loss: str = "non-saturating", seed: int = 0, progress: bool | None = None,
            checkpoint: str | os.PathLike | None = None, resume: bool = False,
            desc: str = "fit gan") -> History:
        r"""Alternate one Adam ascent step of :meth:`value` in the discriminator and one descent
        step of :meth:`generator_loss` in the generator per minibatch (Goodfellow et al. 2014,
        Algorithm 1 with ``k = 1``).

        Args:
            data: real images ``[N, D]`` in ``[0, 1]`` (e.g. grey levels).
            loss: the generator loss, ``"non-saturating"`` or ``"saturating"``.
            seed: seeds the minibatch order and the latent draws (a private generator).
            progress: a tqdm bar; ``None``: only on a terminal outside CI.
            checkpoint: file rewritten atomically after every epoch (networks, both optimizers,
                the generator's state, the history); ``resume=True`` continues from it.

        Returns:
            :class:`~pgm_lab.train.History`; ``loss`` is the epoch's mean discriminator loss
            :math:`-V` (``log 4 = 1.386`` at the game's equilibrium).

        Raises:
            ConfigError: bad sizes or ``loss``; ``resume`` without ``checkpoint``.
            TrainingError: a non-finite loss (naming epoch and step).
            CheckpointError: an unreadable checkpoint or one of other networks.
        """
        check_dims(epochs=epochs, batch_size=batch_size)
        if loss not in GENERATOR_LOSSES:
            raise ConfigError(f"loss must be one of {GENERATOR_LOSSES}, got {loss!r}")
        if resume and checkpoint is None:
            raise ConfigError("resume=True needs checkpoint=PATH; try checkpoint='gan.pt'")
        data = as_rows(data, self.x_dim, name="data", dtype=self.generator[-1].bias.dtype)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=betas)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=lr, betas=betas)
        gen = torch.Generator().manual_seed(seed)
        history, start = History(), 0
        if resume and Path(checkpoint).exists():
            history, start = self._restore(checkpoint, opt_d, opt_g, gen)
        bar = tqdm(range(start, epochs), desc=desc, disable=not progress_enabled(progress))
        for epoch in bar:
            t0, losses, steps = time.perf_counter(), [], 0
            for idx in torch.randperm(data.shape[0], generator=gen).split(batch_size):
                x = data[idx]
                z = torch.randn(len(idx), self.z_dim, generator=gen).to(x)
                d_loss = -self.value(x, z)
                opt_d.zero_grad()
                d_loss.backward()
                opt_d.step()
                g_loss = self.generator_loss(z, loss)
                opt_g.zero_grad()
                g_loss.backward()
                opt_g.step()
                steps += 1
                if not (math.isfinite(d_loss.item()) and math.isfinite(g_loss.item())):
                    raise TrainingError(
                        f"expected finite GAN losses, got discriminator {d_loss.item()} and "
                        f"generator {g_loss.item()} at epoch {epoch + 1}, step {steps}; try a "
                        "smaller lr")
                losses.append(d_loss.item())
            record = EpochRecord(epoch + 1, sum(losses) / len(losses),
                                 time.perf_counter() - t0, steps)
            history.epochs.append(record)
            bar.set_postfix(d_loss=f"{record.loss:.3f}")
            if checkpoint is not None:
                save_atomic({"epoch": epoch + 1, "gan": self.state_dict(),
                             "opt_d": opt_d.state_dict(), "opt_g": opt_g.state_dict(),
                             "rng": gen.get_state(), "history": history.to_dict()},
                            checkpoint)
        return history

    def _restore(self, path: str | os.PathLike, opt_d: torch.optim.Optimizer,
                 opt_g: torch.optim.Optimizer, gen: torch.Generator) -> tuple[History, int]:
        state = load(path)
        try:
            self.load_state_dict(state["gan"])
            opt_d.load_state_dict(state["opt_d"])
            opt_g.load_state_dict(state["opt_g"])
            gen.set_state(state["rng"])
            return History.from_dict(state["history"]), int(state["epoch"])
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise CheckpointError(f"expected a GAN checkpoint of this network in {path}, got "
                                  f"{type(exc).__name__}: {exc}; delete it or pass "
                                  "resume=False") from exc
