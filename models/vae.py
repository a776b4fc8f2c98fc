"""The variational autoencoder's generative model p(x | z) p(z) as a Pyro program."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule, PyroParam, pyro_method
from pyro.nn.module import to_pyro_module_
from pyro.poutine.util import is_validation_enabled
from torch.distributions import constraints

from pgm_lab._deferred import defer
from pgm_lab.errors import ConfigError, DataError

from ._nets import as_rows, check_dims, hidden_tuple, mlp, param_dtype

__all__ = ["VAE", "LIKELIHOODS"]

LIKELIHOODS = ("bernoulli", "gaussian")


class VAE(PyroModule):
    r"""Deep latent Gaussian model (Kingma & Welling 2014; Rezende et al. 2014).

    .. math::

        z_n \sim \mathcal N(0, I_Z), \qquad
        x_n \mid z_n \sim \begin{cases}
            \mathrm{Bernoulli}(\sigma(g_\theta(z_n))) & \text{likelihood="bernoulli"} \\
            \mathcal N(g_\theta(z_n), \sigma^2 I_D) & \text{likelihood="gaussian"}
        \end{cases}

    with :math:`g_\theta` an MLP ``z_dim -> hidden_dims -> x_dim`` (logits for Bernoulli, means
    for Gaussian). :meth:`model` is the Pyro program: sites ``"z"`` (latent, event ``[Z]``) and
    ``"x"`` (observed, event ``[D]``), both inside ``pyro.plate("data", N)`` over the rows of the
    batch it is given. Minibatch scaling by ``N_total / B`` is left to the caller (e.g.
    :func:`pgm_lab.train.fit` scales every site of the data plate), so the same program serves
    training on minibatches and exact per-point evaluation.

    Pair it with :class:`pgm_lab.guides.AmortizedNormal` (same ``x_dim``, ``z_dim``).

    Args:
        x_dim: data dimension ``D``.
        z_dim: latent dimension ``Z``.
        hidden_dims: widths of the decoder's hidden layers, e.g. ``(128,)``.
        likelihood: ``"bernoulli"`` (binary data, the default) or ``"gaussian"``.
        sigma: observation noise :math:`\sigma` of the Gaussian likelihood (initial value when
            ``learn_sigma``).
        learn_sigma: make :math:`\sigma` a positive parameter ``"sigma"`` learned by SVI.
        activation: hidden activation, ``"relu"``, ``"tanh"``, ``"softplus"`` or ``"elu"``.
        site: name of the latent site; ``obs_site``: of the observed one; ``plate_name``: of
            the data plate.

    Raises:
        ConfigError: non-positive dimensions, unknown likelihood or activation, ``sigma <= 0``,
            ``sigma`` or ``learn_sigma`` with the Bernoulli likelihood; (when :meth:`model`
            runs) a latent from the guide whose last dim is not ``z_dim``.
        DataError: (when :meth:`model` runs) ``x`` not of shape ``[N, x_dim]``; or, checked
            while Pyro's validation is on, not finite, or not binary with the Bernoulli
            likelihood.
    """

    def __init__(
        self,
        x_dim: int,
        z_dim: int,
        hidden_dims: Sequence[int] = (128,),
        likelihood: str = "bernoulli",
        *,
        sigma: float = 1.0,
        learn_sigma: bool = False,
        activation: str = "relu",
        site: str = "z",
        obs_site: str = "x",
        plate_name: str = "data",
    ) -> None:
        super().__init__()
        check_dims(x_dim=x_dim, z_dim=z_dim)
        if likelihood not in LIKELIHOODS:
            raise ConfigError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        if not (isinstance(sigma, (int, float)) and sigma > 0):
            raise ConfigError(f"sigma must be a positive float, got {sigma!r}")
        if likelihood != "gaussian" and (learn_sigma or sigma != 1.0):
            raise ConfigError(f"sigma and learn_sigma belong to the Gaussian likelihood, got "
                              f"sigma={sigma!r}, learn_sigma={learn_sigma!r} with likelihood="
                              f"{likelihood!r}; try likelihood='gaussian'")
        self.x_dim, self.z_dim = x_dim, z_dim
        self.hidden_dims = hidden_tuple(hidden_dims)
        self.likelihood = likelihood
        self.site, self.obs_site, self.plate_name = site, obs_site, plate_name
        decoder = mlp(z_dim, self.hidden_dims, x_dim, activation)
        to_pyro_module_(decoder)  # parameters become Pyro params named "decoder.<i>.weight"...
        self.decoder = decoder
        self.learn_sigma = bool(learn_sigma)
        if self.learn_sigma:
            self.sigma = PyroParam(torch.tensor(float(sigma)), constraint=constraints.positive)
        else:
            self.register_buffer("sigma", torch.tensor(float(sigma)))

    def likelihood_dist(self, z: torch.Tensor) -> dist.TorchDistribution:
        """The distribution :math:`p(x \\mid z)` with event shape ``[D]``; ``z``: ``[..., Z]``.

        Parameters come from the decoder, so they are not re-validated elementwise on every
        call (that check costs ~10% of an IWAE step); binary data are checked in ``log_prob``.
        """
        return self._likelihood_dist(z)

    def _likelihood_dist(self, z: torch.Tensor, checked: torch.Tensor | None = None
                         ) -> dist.TorchDistribution:
        """:meth:`likelihood_dist`; ``checked``: data already found binary, which the Bernoulli
        ``log_prob`` then does not check again (the model checks its ``x`` itself)."""
        out = self.decoder(z)
        if self.likelihood == "bernoulli":
            fn = _BernoulliImage(dist.Bernoulli(logits=out, validate_args=False), 1)
            if checked is not None:
                fn.checked = (checked, checked._version)
            return fn
        return dist.Normal(out, self.sigma, validate_args=False).to_event(1)

    @pyro_method
    def model(self, x: torch.Tensor) -> torch.Tensor:
        """The Pyro program ``p(x, z)`` for a batch ``x`` of shape ``[N, D]``; returns ``z``.

        Validates the shape of ``x`` and the size of the latent ``z`` a guide replays into it,
        before the decoder sees them; while Pyro's validation is on
        (:func:`pyro.enable_validation`, the default) also that ``x`` is finite and, for the
        Bernoulli likelihood, binary. Those value checks read the device (one host
        synchronisation each): with validation off the program reads no tensor to the host,
        so a step on a GPU never waits for its queue of kernels.
        """
        validate = is_validation_enabled()
        x = as_rows(x, self.x_dim, dtype=param_dtype(self.decoder), check_finite=validate)
        binary = self.likelihood == "bernoulli" and validate
        if binary:
            _check_binary(x)
        elif self.likelihood == "bernoulli":  # fit's unvalidated steps check at the next read
            defer(_not_binary(x), lambda: _check_binary(x))
        n = x.shape[0]
        with pyro.plate(self.plate_name, n):
            prior = dist.Normal(x.new_zeros(()), x.new_ones(())).expand([n, self.z_dim])
            z = pyro.sample(self.site, prior.to_event(1))
            if z.shape[-1:] != (self.z_dim,):
                raise ConfigError(
                    f"expected the latent site {self.site!r} of size z_dim={self.z_dim} in its "
                    f"last dim, got shape {tuple(z.shape)} (from the guide); try a guide with "
                    f"z_dim={self.z_dim}, e.g. AmortizedNormal({self.x_dim}, {self.z_dim})")
            pyro.sample(self.obs_site, self._likelihood_dist(z, x if binary else None), obs=x)
        return z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Mean of :math:`p(x \\mid z)`: pixel probabilities or Gaussian means, ``[..., D]``."""
        if not isinstance(z, torch.Tensor) or z.shape[-1:] != (self.z_dim,):
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise DataError(f"expected z of shape [..., {self.z_dim}] (z_dim={self.z_dim}), got "
                            f"{shape}; a guide's code must have the model's z_dim")
        out = self.decoder(z)
        return torch.sigmoid(out) if self.likelihood == "bernoulli" else out

    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = True, seed: int | None = None) -> torch.Tensor:
        """Draw ``z ~ N(0, I)`` and return ``E[x | z]`` (``mean=True``) or ``x ~ p(x | z)``.

        Returns ``[n, D]``. With ``seed=None`` the draw uses torch's global RNG (so
        ``pyro.set_rng_seed`` makes it reproducible); an int ``seed`` makes it reproducible
        without touching global RNGs.
        """
        if not mean:
            return self.simulate(n, seed=seed)[0]
        check_dims(n=n)
        device = next(self.decoder.parameters()).device
        gen = None if seed is None else torch.Generator(device="cpu").manual_seed(seed)
        return self.decode(torch.randn(n, self.z_dim, generator=gen).to(device))

    @torch.no_grad()
    def simulate(self, n: int, *, seed: int | None = None
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Draw ``(x, {site: z})`` from the joint: ``z ~ N(0, I)`` ``[n, Z]``, ``x ~ p(x | z)``
        ``[n, D]``.

        ``z`` is an exact posterior sample for its ``x``, as the upper bound of
        :func:`pgm_lab.infer.bdmc` needs. ``seed`` as in :meth:`sample`.
        """
        check_dims(n=n)
        device = next(self.decoder.parameters()).device
        gen = None if seed is None else torch.Generator(device="cpu").manual_seed(seed)
        z = torch.randn(n, self.z_dim, generator=gen).to(device)
        m = self.decode(z)
        if self.likelihood == "bernoulli":
            x = torch.bernoulli(m.cpu(), generator=gen).to(device)
        else:
            x = m + self.sigma * torch.randn(m.shape, generator=gen).to(device)
        return x, {self.site: z}

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, guide: Callable) -> torch.Tensor:
        """``E[x | z]`` at the guide's code for ``x`` (``[N, D]`` -> ``[N, D]``).

        The code is ``guide.encode(x)[0]`` (the mean of q(z | x)) when the guide has ``encode``
        (e.g. :class:`pgm_lab.guides.AmortizedNormal`), else one draw of the guide's latent
        site. The VAE and its guide are separate objects (a Pyro model and its guide are two
        programs), hence the argument.
        """
        x = as_rows(x, self.x_dim, dtype=self.decoder[-1].bias.dtype)
        if hasattr(guide, "encode"):
            z = guide.encode(x)[0]
        else:
            with pyro.poutine.block():
                nodes = pyro.poutine.trace(guide).get_trace(x).nodes
            if self.site not in nodes:
                raise ConfigError(f"the guide has no sample site {self.site!r} (its sites: "
                                  f"{[n for n, s in nodes.items() if s['type'] == 'sample']}); "
                                  "expected the VAE's latent site; try VAE(site=<name>)")
            z = nodes[self.site]["value"]
        return self.decode(z)


def _not_binary(x: torch.Tensor) -> torch.Tensor:
    """0-d bool tensor on ``x``'s device: whether some entry of ``x`` is not 0 or 1 (computed
    as :func:`_check_binary` explains, without reading anything to the host)."""
    if x.dtype == torch.bool:
        return torch.zeros((), dtype=torch.bool, device=x.device)
    if not x.is_floating_point():
        return ((x != 0) & (x != 1)).any()
    return x.sub(1).mul_(x).abs_().sum() != 0


def _check_binary(x: torch.Tensor) -> None:
    """Raise :class:`DataError` naming the first non-binary entry of ``x [N, D]``.

    For floating ``x``, :math:`x (x - 1) = 0` exactly when :math:`x \\in \\{0, 1\\}`, also in
    floating point: for :math:`|x| < 1/2` the product rounds to about :math:`-x`, otherwise
    :math:`x - 1` is exact (Sterbenz) or at least 1 in magnitude, so a nonzero product never
    underflows to 0; NaN and inf give NaN or inf. The sum of :math:`|x (x - 1)|` is then 0
    exactly when every entry is binary (a sum of nonnegative terms rounds to 0 only if they
    all are 0; NaN and inf propagate): three passes without a bool reduction, ~6x cheaper
    than comparing with 0 and with 1 and reducing with ``any`` on a 128 x 784 batch. The
    entries are located only when some is not binary.
    """
    if not bool(_not_binary(x)):
        return
    bad = (x != 0) & (x != 1)
    if bool(bad.any()):
        i, j = bad.nonzero()[0].tolist()
        raise DataError(f"expected binary x (0/1) for likelihood='bernoulli', got "
                        f"{int(bad.sum())} of {x.numel()} entries that are not, e.g. x[{i}, {j}]"
                        f" = {x[i, j].item():.6g}; binarize it (e.g. pgm_lab.data."
                        "static_binarize) or pass likelihood='gaussian'")


class _BernoulliImage(dist.Independent):
    """``Bernoulli(logits).to_event(1)`` whose log density sums before negating.

    Same values as :class:`pyro.distributions.Independent`; computing
    :math:`-\\sum_d \\mathrm{BCE}` instead of :math:`\\sum_d -\\mathrm{BCE}` saves a pass
    (and its backward) over the ``[K, N, D]`` tensor, which matters for IWAE with many
    particles.

    ``checked``: ``(x, x._version)`` of data the model has already found binary; ``log_prob``
    of that same, unmodified tensor skips the check (once per step instead of twice).
    """

    checked: tuple[torch.Tensor, int] | None = None

    def expand(self, batch_shape: torch.Size, _instance: dist.Independent | None = None
               ) -> _BernoulliImage:
        new = self._get_checked_instance(_BernoulliImage, _instance)
        new = super().expand(batch_shape, _instance=new)
        new.checked = self.checked
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if is_validation_enabled() and not (
                self.checked is not None and value is self.checked[0]
                and value._version == self.checked[1]):
            _check_binary(value.reshape(-1, value.shape[-1]))
        # broadcast_tensors, not broadcast_shapes + expand: the latter runs a Python
        # reference implementation costing more than the kernel for small batches.
        logits, value = torch.broadcast_tensors(self.base_dist.logits, value)
        bce = F.binary_cross_entropy_with_logits(logits, value, reduction="none")
        return -bce.sum(-1)
