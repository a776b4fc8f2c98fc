"""Block Gibbs chains reach the exact joint of tiny models (chi-square and total variation)."""

import pyro
import pytest
import torch
from torch import nn
from torch.testing import assert_close

from pgm_lab.errors import ConfigError, DataError
from pgm_lab.rbm import RBM, EnergyModel, GibbsKernel, gibbs

from ._oracle import all_states, chi_square_pvalue, joint_table, random_rbm

N_V, N_H = 4, 3


class CoupledRBM(EnergyModel):
    """An RBM plus a visible-visible coupling -1/2 v^T L v; only ``energy`` is written."""

    def __init__(self, seed: int) -> None:
        super().__init__(N_V, N_H, name="coupled")
        gen = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(torch.randn(N_V, N_H, generator=gen, dtype=torch.float64))
        self.b = nn.Parameter(torch.randn(N_V, generator=gen, dtype=torch.float64))
        self.c = nn.Parameter(torch.randn(N_H, generator=gen, dtype=torch.float64))
        a = torch.randn(N_V, N_V, generator=gen, dtype=torch.float64)
        self.L = nn.Parameter((a + a.T).fill_diagonal_(0.0))

    def energy(self, v, h):
        return (-(v @ self.b) - (h @ self.c) - ((v @ self.W) * h).sum(-1)
                - 0.5 * ((v @ self.L) * v).sum(-1))


def _codes(v, h):
    bits = torch.cat([v, h], -1)
    n = bits.shape[-1]
    return (bits * 2 ** torch.arange(n - 1, -1, -1, dtype=bits.dtype)).sum(-1).long()


def _check_against_joint(model, v, h, seed=0):
    """Chi-square goodness of fit and TV against the null distribution of iid draws."""
    _, _, log_p = joint_table(model, N_V, N_H)  # rows in the order of _codes
    p = log_p.exp()
    n = v.shape[0]
    counts = torch.bincount(_codes(v.double(), h.double()), minlength=len(p)).double()
    assert chi_square_pvalue(counts, p) > 1e-3
    tv = 0.5 * (counts / n - p).abs().sum()
    gen = torch.Generator().manual_seed(seed)
    null = torch.stack([
        0.5 * (torch.bincount(torch.multinomial(p, n, True, generator=gen), minlength=len(p))
               / n - p).abs().sum() for _ in range(100)])
    assert tv < null.mean() + 5 * null.std(), (tv, null.mean(), null.std())


def test_gibbs_chains_reach_the_exact_joint():
    rbm = random_rbm(N_V, N_H, 1.0, 0)
    gen = torch.Generator().manual_seed(1)
    v0 = torch.bernoulli(torch.full((20000, N_V), 0.5, dtype=torch.float64), generator=gen)
    out = gibbs(rbm, v0, 30, generator=gen, record_free_energy=True)
    _check_against_joint(rbm, out.v, out.h)
    assert out.free_energy.shape == (30, 20000)
    assert_close(out.free_energy[-1], rbm.free_energy(out.v).detach())


def test_custom_energy_with_coupled_visible_units_reuses_gibbs():
    model = CoupledRBM(seed=3)
    gen = torch.Generator().manual_seed(2)
    v0 = torch.bernoulli(torch.full((20000, N_V), 0.5, dtype=torch.float64), generator=gen)
    out = model.gibbs(v0, 30, generator=gen)
    _check_against_joint(model, out.v, out.h)
    # the generic free energy and visible-layer enumeration are exact too
    vs, hs, _ = joint_table(model, N_V, N_H)
    neg_e = -model.energy(vs, hs).detach()
    assert_close(model.log_partition(), torch.logsumexp(neg_e, 0))
    assert_close(model.free_energy(all_states(N_V)).detach(),
                 -torch.logsumexp(-model.energy(all_states(N_V)[:, None], all_states(N_H))
                                  .detach(), 1))


class _TiltedRBM(RBM):
    """An RBM subclass whose ``energy`` adds a visible coupling and a hidden field."""

    def energy(self, v, h):
        return super().energy(v, h) - 2.0 * v[..., 0] * v[..., 3] - 0.7 * h.sum(-1)


@pytest.mark.parametrize("visible_factorized", [False, True])
def test_rbm_subclass_overriding_energy_samples_its_own_model(visible_factorized):
    # Gibbs used to run on the RBM closed forms, sampling the parent model's joint. With
    # visible_factorized declared, the subclass's energy must not couple visible units.
    if visible_factorized:
        cls = type("FieldRBM", (RBM,), {
            "visible_factorized": True,
            "energy": lambda self, v, h: RBM.energy(self, v, h) - 0.7 * h.sum(-1) - v[..., 1]})
    else:
        cls = _TiltedRBM
    model = cls(N_V, N_H, dtype=torch.float64)
    model.load_state_dict(random_rbm(N_V, N_H, 1.0, 0).state_dict())
    gen = torch.Generator().manual_seed(4)
    v0 = torch.bernoulli(torch.full((20000, N_V), 0.5, dtype=torch.float64), generator=gen)
    out = model.gibbs(v0, 30, generator=gen)
    _check_against_joint(model, out.v, out.h)


def test_gibbs_kernel_through_pyro_mcmc_reaches_the_exact_joint():
    rbm = random_rbm(N_V, N_H, 1.0, 0)
    kernel = GibbsKernel(rbm, batch_shape=(10000,), seed=5)
    mcmc = pyro.infer.MCMC(kernel, num_samples=3, warmup_steps=30, disable_progbar=True)
    mcmc.run()
    samples = mcmc.get_samples()
    assert samples["v"].shape == (3, 10000, N_V) and samples["h"].shape == (3, 10000, N_H)
    # the last draw of each of 10000 independent chains
    _check_against_joint(rbm, samples["v"][-1], samples["h"][-1], seed=1)


def test_gibbs_kernel_initial_params_and_sequential_chains():
    rbm = random_rbm(N_V, N_H, 1.0, 0)
    init = {"v": torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]],
                              dtype=torch.float64)[:, None].expand(2, 5, N_V)}
    mcmc = pyro.infer.MCMC(GibbsKernel(rbm, batch_shape=(5,), seed=0), num_samples=4,
                           warmup_steps=0, num_chains=1, initial_params={"v": init["v"][0]},
                           disable_progbar=True)
    mcmc.run()
    v = mcmc.get_samples(group_by_chain=True)["v"]
    assert v.shape == (1, 4, 5, N_V)
    assert ((v == 0) | (v == 1)).all()


def test_gibbs_is_seeded():
    rbm = random_rbm(N_V, N_H, 1.0, 0)
    v0 = torch.zeros(7, N_V, dtype=torch.float64)
    a = gibbs(rbm, v0, 5, seed=3, record_samples=True, thin=2)
    b = gibbs(rbm, v0, 5, seed=3, record_samples=True, thin=2)
    assert_close(a.v, b.v)
    assert a.samples.shape == (2, 7, N_V)


@pytest.mark.parametrize("call, err, match", [
    (lambda r: gibbs(r, torch.zeros(2, N_V + 1), 3), DataError, "features; expected 4"),
    (lambda r: gibbs(r, torch.full((2, N_V), 0.5), 3), DataError, "binary"),
    (lambda r: gibbs(r, torch.zeros(2, N_V), -1), ConfigError, "num_steps must be"),
    (lambda r: GibbsKernel(r, batch_shape=(3,), init=torch.zeros(2, N_V)), ConfigError,
     r"shape \(3, 4\)"),
    (lambda r: GibbsKernel(object()), ConfigError, "expected an EnergyModel"),
])
def test_gibbs_validation(call, err, match):
    with pytest.raises(err, match=match):
        call(random_rbm(N_V, N_H, 1.0, 0))


def test_joint_check_rejects_samples_of_another_model():
    """The goodness-of-fit check has power: draws from a 20% stronger-coupled RBM fail it."""
    rbm = random_rbm(N_V, N_H, 1.0, 0)
    other = random_rbm(N_V, N_H, 1.0, 0)
    with torch.no_grad():
        other.W.mul_(1.2)
    v0 = torch.zeros(20000, N_V, dtype=torch.float64)
    out = gibbs(other, v0, 30, seed=0)
    with pytest.raises(AssertionError):
        _check_against_joint(rbm, out.v, out.h)


def test_mcmc_with_several_chains_runs_and_converts(monkeypatch):
    """MCMC(num_chains=2): forced to the sequential sampler so the test is machine-independent."""
    import pyro.infer.mcmc.api as mcmc_api

    from pgm_lab.rbm.diagnostics import to_inference_data

    monkeypatch.setattr(mcmc_api.mp, "cpu_count", lambda: 1)
    rbm = random_rbm(N_V, N_H, 1.0, 0)
    with pytest.warns(UserWarning, match="Chains will be drawn sequentially"):
        mcmc = pyro.infer.MCMC(GibbsKernel(rbm, seed=0), num_samples=50, warmup_steps=5,
                               num_chains=2, disable_progbar=True)
    mcmc.run()
    v = mcmc.get_samples(group_by_chain=True)["v"]
    assert v.shape == (2, 50, N_V)
    assert not torch.equal(v[0], v[1])  # each chain starts from its own random state
    assert to_inference_data(mcmc, rbm).posterior.sizes["chain"] == 2


def test_parallel_mcmc_chains_of_a_seeded_kernel_differ_and_are_reproducible(monkeypatch):
    """MCMC(num_chains=2) in worker processes: each worker gets a copy of the seeded kernel;
    the copies used to replay one stream, so both chains were identical (R-hat trivially 1)."""
    import pyro.infer.mcmc.api as mcmc_api

    monkeypatch.setattr(mcmc_api.mp, "cpu_count", lambda: 4)  # force the parallel sampler
    rbm = random_rbm(N_V, N_H, 1.0, 0)

    def run() -> torch.Tensor:
        pyro.set_rng_seed(0)
        mcmc = pyro.infer.MCMC(GibbsKernel(rbm, seed=0), num_samples=50, warmup_steps=5,
                               num_chains=2, disable_progbar=True)
        mcmc.run()
        return mcmc.get_samples(group_by_chain=True)["v"]

    v = run()
    assert v.shape == (2, 50, N_V)
    assert not torch.equal(v[0], v[1])
    assert_close(run(), v, rtol=0, atol=0)


def test_gibbs_kernel_init_applies_to_every_chain_and_initial_params_reads_back(monkeypatch):
    """init started only the first of MCMC's sequential chains (the others were random), and
    reading initial_params after setting it returned the previous state."""
    import pyro.infer.mcmc.api as mcmc_api

    monkeypatch.setattr(mcmc_api.mp, "cpu_count", lambda: 1)  # sequential chains
    rbm = random_rbm(N_V, N_H, 1.0, 0)
    init = torch.tensor([[1.0, 0.0, 1.0, 0.0]] * 3, dtype=torch.float64)
    kernel = GibbsKernel(rbm, batch_shape=(3,), init=init, seed=0)
    starts = []
    real_setup = kernel.setup

    def recording_setup(*args, **kwargs):
        real_setup(*args, **kwargs)
        starts.append(kernel.initial_params["v"].clone())

    monkeypatch.setattr(kernel, "setup", recording_setup)
    with pytest.warns(UserWarning, match="sequentially"):
        mcmc = pyro.infer.MCMC(kernel, num_samples=2, warmup_steps=0, num_chains=2,
                               disable_progbar=True)
    mcmc.run()
    assert len(starts) == 2
    for v in starts:
        assert_close(v, init, rtol=0, atol=0)
    other = 1.0 - init
    kernel.initial_params = {"v": other}
    assert_close(kernel.initial_params["v"], other, rtol=0, atol=0)
