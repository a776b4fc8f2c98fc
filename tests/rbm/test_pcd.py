"""persistent_cd: closed-form and centered RBM gradients, exact / mean-field positive phases,
PT-PCD, and that centering reparametrizes the same model."""

import pytest
import torch
from torch.testing import assert_close

from pgm_lab.errors import ConfigError
from pgm_lab.rbm import RBM, BoltzmannMachine
from pgm_lab.rbm.pcd import _autograd_gradient, _rbm_gradient, centered_parameters, persistent_cd

from ._oracle import all_states, joint_table, random_bm, random_rbm

pytestmark = pytest.mark.usefixtures("single_thread")


def _batches(seed=0, n_v=5):
    gen = torch.Generator().manual_seed(seed)
    pos = torch.bernoulli(torch.full((7, n_v), 0.4, dtype=torch.float64), generator=gen)
    neg = torch.bernoulli(torch.full((5, n_v), 0.6, dtype=torch.float64), generator=gen)
    return pos, neg


def _zero_grads(model):
    for p in model.parameters():
        p.grad = torch.zeros_like(p)


def test_centering_leaves_the_modelled_distribution_unchanged():
    rbm = random_rbm(5, 3, 1.0, 0)
    gen = torch.Generator().manual_seed(1)
    mu, lam = torch.rand(5, generator=gen, dtype=torch.float64), \
        torch.rand(3, generator=gen, dtype=torch.float64)
    W, b, c = (t.detach() for t in (rbm.W, rbm.b, rbm.c))
    b_c, c_c = centered_parameters(W, b, c, mu, lam)
    vs, hs, log_p = joint_table(rbm, 5, 3)
    e_c = -((vs - mu) @ W * (hs - lam)).sum(-1) - (vs - mu) @ b_c - (hs - lam) @ c_c
    assert_close(-e_c - torch.logsumexp(-e_c, 0), log_p)  # same p(v, h), hence same p(v)


def test_closed_form_gradient_is_the_free_energy_difference():
    rbm = random_rbm(5, 3, 1.0, 2)
    pos, neg = _batches()
    _zero_grads(rbm)
    with torch.no_grad():
        value = _rbm_gradient(dict(rbm.named_parameters()), pos, neg, None)
    expected_value, grads = rbm.free_energy_difference(pos, neg)
    assert_close(float(value), float(expected_value))
    for p, g in grads.items():
        assert_close(p.grad, g)


def test_centered_step_is_the_gradient_step_of_the_centered_energy():
    rbm = random_rbm(5, 3, 1.0, 3)
    pos, neg = _batches(1)
    mu = pos.mean(0)
    lam0 = torch.full((3,), 0.5, dtype=torch.float64)
    W, b, c = (t.detach().clone() for t in (rbm.W, rbm.b, rbm.c))
    lam = 0.99 * lam0 + 0.01 * torch.sigmoid(pos @ W + c).mean(0)
    # the CD surrogate in centered coordinates, differentiated by autograd; the hidden means
    # (h-hat) are held fixed, as the data / model statistics of the update are
    b_c, c_c = (t.clone().requires_grad_() for t in centered_parameters(W, b, c, mu, lam))
    w_c = W.clone().requires_grad_()
    h_pos, h_neg = torch.sigmoid(pos @ W + c), torch.sigmoid(neg @ W + c)

    def mean_energy(v, h):
        return (-((v - mu) @ w_c * (h - lam)).sum(-1) - (v - mu) @ b_c - (h - lam) @ c_c).mean()

    (mean_energy(pos, h_pos) - mean_energy(neg, h_neg)).backward()
    lr = 0.1
    with torch.no_grad():
        w_new, b_new, c_new = w_c - lr * w_c.grad, b_c - lr * b_c.grad, c_c - lr * c_c.grad
        expected_b, expected_c = b_new - w_new @ lam, c_new - w_new.T @ mu  # back to plain
    _zero_grads(rbm)
    with torch.no_grad():
        _rbm_gradient(dict(rbm.named_parameters()), pos, neg, {"mu": mu, "lam": lam0})
    with torch.no_grad():
        assert_close(W - lr * rbm.W.grad, w_new)
        assert_close(b - lr * rbm.b.grad, expected_b)
        assert_close(c - lr * rbm.c.grad, expected_c)


def test_mean_field_positive_phase_is_exact_without_hidden_couplings():
    bm = random_bm(True, True, seed=4, n_visible=5, n_hidden=3)
    bm.set_couplings(P=torch.zeros(3, 3))
    pos, neg = _batches(2)
    h_neg = torch.zeros(5, 3, dtype=torch.float64)
    grads = []
    for positive in ("exact", "mean-field"):
        _zero_grads(bm)
        _autograd_gradient(bm, pos, neg, h_neg, positive, 50)
        grads.append({n: p.grad.clone() for n, p in bm.named_parameters()})
    # the positive phases agree; the negative phases differ (F(v) vs E(v, h)), so compare
    # the data-dependent part: the difference of the two gradients is the same for any pos
    pos2 = pos.flip(0)[:4]
    grads2 = []
    for positive in ("exact", "mean-field"):
        _zero_grads(bm)
        _autograd_gradient(bm, pos2, neg, h_neg, positive, 50)
        grads2.append({n: p.grad.clone() for n, p in bm.named_parameters()})
    for name in grads[0]:
        assert_close(grads[0][name] - grads[1][name], grads2[0][name] - grads2[1][name])


def _teacher_data(n, seed):
    teacher = random_bm(True, True, scale=1.0, seed=seed, n_visible=6, n_hidden=3)
    vs, _, log_p = joint_table(teacher, 6, 3)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.multinomial(log_p.exp(), n, replacement=True, generator=gen)
    return teacher, vs[idx]


@pytest.mark.parametrize("positive,sampler", [("exact", "gibbs"), ("mean-field", "gibbs"),
                                              ("exact", "pt")])
def test_training_a_boltzmann_machine_closes_most_of_the_likelihood_gap(positive, sampler):
    teacher, data = _teacher_data(2000, 5)
    student = BoltzmannMachine(6, 3, seed=0, dtype=torch.float64)
    before = float(student.log_prob(data).mean())
    best = float(teacher.log_prob(data).mean())
    history = persistent_cd(student, data, epochs=15, batch_size=20, lr=0.05, momentum=0.5,
                            num_chains=100, positive=positive, sampler=sampler,
                            num_temperatures=4, seed=0)
    after = float(student.log_prob(data).mean())
    assert after > before + 0.8 * (best - before), (before, after, best)
    assert len(history.loss) == 15
    if sampler == "pt":
        rates = torch.tensor(history.swap_rates)
        assert rates.shape == (15, 3) and ((rates > 0) & (rates <= 1)).all()
    for m in (student.U, student.P):
        assert_close(m, m.T)
        assert (m.diagonal() == 0).all()


def test_centered_training_of_an_rbm_reaches_the_plain_likelihood(digits):
    train, test = digits
    lls = {}
    for centering in (False, True):
        rbm = RBM(64, 16, data=train, seed=0)
        persistent_cd(rbm, train, epochs=5, batch_size=20, lr=0.05, centering=centering)
        lls[centering] = float(rbm.log_prob(test).mean())
    assert lls[True] > lls[False] - 0.5, lls


@pytest.mark.parametrize("kwargs,match", [
    ({"positive": "sampled"}, "positive must be"), ({"sampler": "hmc"}, "sampler must be"),
    ({"lr": -1.0}, "lr must be"), ({"k": 0}, "k must be"), ({"centering": True}, "centering"),
])
def test_persistent_cd_validates(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        persistent_cd(BoltzmannMachine(3, 2), all_states(3).float(), **kwargs)
