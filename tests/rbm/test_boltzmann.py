"""BoltzmannMachine against brute force over every (v, h): energies, log Z, conditionals,
Gibbs stationarity, mean field; the samplers and partition functions stay model-agnostic."""

import ast
import itertools
from pathlib import Path

import pyro
import pytest
import torch
from torch.testing import assert_close

import pgm_lab.rbm
from pgm_lab.errors import ConfigError, DataError
from pgm_lab.rbm import RBM, BoltzmannMachine, GibbsKernel, gibbs

from ._oracle import all_states, chi_square_pvalue, codes, joint_table, random_bm

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny ops: threads only contend

N_V, N_H = 4, 3
COUPLINGS = list(itertools.product([False, True], repeat=2))


def brute_energy(bm, v, h):
    """The issue's formula term by term: -b.v - c.h - v.W.h - sum_ik U_ik v_i v_k - (same P)."""
    w, b, c = bm.W.detach(), bm.b.detach(), bm.c.detach()
    u, p = bm.U.detach(), bm.P.detach()
    e = torch.zeros(v.shape[0], dtype=torch.float64)
    for i in range(bm.n_visible):
        e -= b[i] * v[:, i]
        for k in range(bm.n_visible):
            e -= v[:, i] * u[i, k] * v[:, k]
        for j in range(bm.n_hidden):
            e -= v[:, i] * w[i, j] * h[:, j]
    for j in range(bm.n_hidden):
        e -= c[j] * h[:, j]
        for k in range(bm.n_hidden):
            e -= h[:, j] * p[j, k] * h[:, k]
    return e


@pytest.mark.parametrize("vc,hc", COUPLINGS)
def test_energy_log_z_and_free_energies_match_brute_force(vc, hc):
    bm = random_bm(vc, hc)
    vs, hs, log_p = joint_table(bm, N_V, N_H)
    assert_close(bm.energy(vs, hs).detach(), brute_energy(bm, vs, hs))
    neg_e = -brute_energy(bm, vs, hs)
    log_z = torch.logsumexp(neg_e, 0)
    assert_close(bm.log_partition(), log_z)
    grid = neg_e.reshape(2**N_V, 2**N_H)  # rows: v, columns: h (joint_table's order)
    v_all, h_all = vs[:: 2**N_H], hs[: 2**N_H]
    assert_close(bm.free_energy(v_all).detach(), -torch.logsumexp(grid, 1))
    assert_close(bm.hidden_free_energy(h_all).detach(), -torch.logsumexp(grid, 0))
    assert_close(bm.log_prob(v_all), torch.logsumexp(grid, 1) - log_z)
    assert bm.visible_factorized is not vc and bm.hidden_factorized is not hc
    assert bm.has_rbm_energy is not (vc or hc)


def test_without_couplings_it_is_the_rbm():
    bm = random_bm(False, False)
    rbm = RBM(N_V, N_H, dtype=torch.float64)
    rbm.load_state_dict(bm.state_dict())
    v = all_states(N_V)
    assert_close(bm.free_energy(v), rbm.free_energy(v))
    assert_close(bm.log_partition("ais", num_runs=50, num_betas=200),
                 rbm.log_partition("ais", num_runs=50, num_betas=200))


@pytest.mark.parametrize("vc,hc", [(True, True), (True, False), (False, True)])
def test_ais_of_a_coupled_machine_agrees_with_enumeration(vc, hc):
    # 8 visible, 6 hidden: 2^14 joint states to enumerate; AIS anneals the joint (v, h) from
    # the biases-only machine with the model's own unit-by-unit sweeps
    bm = random_bm(vc, hc, scale=0.5, seed=1, n_visible=8, n_hidden=6)
    exact = bm.log_partition()
    res = bm.log_partition("ais", num_runs=200, num_betas=500, return_result=True, seed=0,
                           reverse=True)
    for est in (res, res.reverse):
        # |z| < 4 from the MC standard error (three models, two directions: a false alarm
        # has probability < 4e-4)
        assert abs(float(est.log_z - exact) / float(est.stderr)) < 4
    assert_close(bm.log_partition("ais", num_runs=200, num_betas=500, seed=0), res.log_z)
    # base_data sets the base model's visible biases; the estimate stays unbiased
    data = torch.bernoulli(torch.full((50, 8), 0.3, dtype=torch.float64),
                           generator=torch.Generator().manual_seed(0))
    res = bm.log_partition("ais", num_runs=200, num_betas=500, return_result=True, seed=0,
                           base_data=data)
    assert abs(float(res.log_z - exact) / float(res.stderr)) < 4


def test_couplings_are_symmetric_zero_diagonal_and_stay_so_under_training():
    bm = BoltzmannMachine(5, 4, seed=0, init_std=0.5)
    for m in (bm.U, bm.P):
        assert_close(m, m.T)
        assert (m.diagonal() == 0).all() and (m != 0).sum() > 0
    opt = torch.optim.SGD(bm.parameters(), lr=1.0)
    v = torch.bernoulli(torch.full((8, 5), 0.5))
    h = torch.bernoulli(torch.full((8, 4), 0.5))
    for _ in range(3):
        opt.zero_grad()
        (bm.energy(v, h).mean() + bm.free_energy(v).mean()).backward()
        opt.step()
    for m in (bm.U, bm.P):
        assert_close(m, m.T)
        assert (m.diagonal() == 0).all()


def test_set_couplings_validates():
    bm = BoltzmannMachine(3, 2, visible_couplings=True, hidden_couplings=False)
    a = torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.0, 3.0], [2.0, 3.0, 0.0]])
    bm.set_couplings(U=a)
    assert_close(bm.U.detach(), a)
    with pytest.raises(DataError, match="symmetric"):
        bm.set_couplings(U=a + torch.eye(3))
    with pytest.raises(ConfigError, match="hidden_couplings=True"):
        bm.set_couplings(P=torch.zeros(2, 2))
    with pytest.raises(ConfigError, match="visible_couplings"):
        BoltzmannMachine(3, 2, visible_couplings=1)


def test_single_unit_conditionals_match_the_joint():
    bm = random_bm()
    vs, hs, log_p = joint_table(bm, N_V, N_H)
    p = log_p.exp()
    idx = codes(vs, hs)
    table = torch.zeros(2 ** (N_V + N_H), dtype=torch.float64)
    table[idx] = p
    # p(h_j = 1 | v, h_-j) from the table vs sigma(c_j + v.W_j + 2 P_j.h)
    w, c, b, pp, u = (t.detach() for t in (bm.W, bm.c, bm.b, bm.P, bm.U))
    for j in range(N_H):
        on, off = hs.clone(), hs.clone()
        on[:, j], off[:, j] = 1, 0
        p_on, p_off = table[codes(vs, on)], table[codes(vs, off)]
        expected = torch.sigmoid(c[j] + vs @ w[:, j] + 2 * off @ pp[:, j])
        assert_close(p_on / (p_on + p_off), expected)
    for i in range(N_V):
        on, off = vs.clone(), vs.clone()
        on[:, i], off[:, i] = 1, 0
        p_on, p_off = table[codes(on, hs)], table[codes(off, hs)]
        expected = torch.sigmoid(b[i] + hs @ w[i] + 2 * off @ u[:, i])
        assert_close(p_on / (p_on + p_off), expected)


def _joint_pvalue(bm, v, h):
    _, _, log_p = joint_table(bm, N_V, N_H)
    counts = torch.bincount(codes(v.double(), h.double()), minlength=len(log_p)).double()
    return chi_square_pvalue(counts, log_p.exp())


@pytest.mark.parametrize("vc,hc", [(True, True), (False, True), (True, False)])
def test_gibbs_chains_reach_the_exact_joint(vc, hc):
    # independent chains, final states only: an exact multinomial test of stationarity
    bm = random_bm(vc, hc, seed=1)
    gen = torch.Generator().manual_seed(2)
    v0 = torch.bernoulli(torch.full((20000, N_V), 0.5, dtype=torch.float64), generator=gen)
    out = gibbs(bm, v0, 30, generator=gen)
    assert _joint_pvalue(bm, out.v, out.h) > 1e-3


def test_gibbs_kernel_carries_the_coupled_hidden_state():
    bm = random_bm(seed=3)
    kernel = GibbsKernel(bm, batch_shape=(5000,), seed=0)
    mcmc = pyro.infer.MCMC(kernel, num_samples=2, warmup_steps=30, disable_progbar=True)
    mcmc.run()
    s = mcmc.get_samples()
    assert _joint_pvalue(bm, s["v"][-1], s["h"][-1]) > 1e-3


def test_mean_field_is_a_fixed_point_and_bounds_the_free_energy():
    bm = random_bm(False, True, scale=0.5, seed=4)
    v = all_states(N_V)
    mu = bm.mean_field(v, tol=1e-12, num_iters=1000)
    x = v @ bm.W.detach() + bm.c.detach()
    assert_close(mu, torch.sigmoid(x + mu @ (2 * bm.P.detach())))
    with torch.no_grad():
        assert (bm.mean_field_free_energy(v, mu) >= bm.free_energy(v) - 1e-12).all()
        # and no other factorized q does better: perturbing mu raises F_q
        for d in (1e-3, -1e-3):
            worse = bm.mean_field_free_energy(v, (mu + d).clamp(0, 1))
            assert (worse >= bm.mean_field_free_energy(v, mu) - 1e-12).all()


def test_mean_field_vs_exact_marginals_on_a_tiny_model():
    v = all_states(N_V)
    hs = all_states(N_H)

    def exact_marginals(bm):
        _, _, log_p = joint_table(bm, N_V, N_H)
        p = log_p.exp().reshape(2**N_V, 2**N_H)
        p = p / p.sum(1, keepdim=True)
        return p @ hs

    # P = 0: mean field is exact
    bm0 = random_bm(False, True, seed=5)
    bm0.set_couplings(P=torch.zeros(N_H, N_H))
    assert_close(bm0.mean_field(v), exact_marginals(bm0))
    # weak couplings: the error is second order in the coupling strength
    errors = []
    for eps in (0.1, 0.05):
        bm = random_bm(False, True, seed=5)
        bm.set_couplings(P=eps * bm.P.detach())
        errors.append(float((bm.mean_field(v, tol=1e-12) - exact_marginals(bm)).abs().max()))
    assert 3.0 < errors[0] / errors[1] < 5.0, errors  # ~ 2^2 when the error is O(eps^2)


def test_samplers_and_partition_ask_the_model_instead_of_importing_it():
    # gibbs.py and partition.py never import a concrete model (only for type checking), and
    # no module of pgm_lab.rbm imports inside a function to dodge a cycle
    root = Path(pgm_lab.rbm.__file__).parent
    models = {"rbm", "boltzmann", "energy", "gaussian"}
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                local = [n for n in ast.walk(node) if isinstance(n, ast.ImportFrom)
                         and n.level > 0 and n.module in models | {"gibbs", "partition"}]
                assert not local, (path.name, node.name)
        if path.stem in ("gibbs", "partition", "tempering"):
            top = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.level == 1]
            assert not [n.module for n in top if n.module in models], path.name
