"""Contrastive divergence: gradient, SVI / fit integration, persistence and training quality."""

import pyro
import pyro.optim
import pytest
import torch
from torch.testing import assert_close

from pgm_lab.errors import CheckpointError, ConfigError
from pgm_lab.rbm import RBM, ContrastiveDivergence
from pgm_lab.train import scale_plate

from ._oracle import random_rbm


def no_guide(*args):
    return None


def _data(n=12, d=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, d), 0.4, dtype=torch.float64), generator=gen)


@pytest.mark.parametrize("persistent, k", [(False, 1), (False, 3), (True, 2)])
def test_cd_gradient_equals_autograd_of_free_energy_difference(persistent, k):
    rbm = random_rbm(5, 3, 1.0, 0)
    v = _data()
    loss = ContrastiveDivergence(k=k, persistent=persistent, seed=4,
                                 num_chains=7 if persistent else None)
    value = loss.loss_and_grads(rbm, no_guide, v)
    grads = {n: p.grad.clone() for n, p in rbm.named_parameters()}
    # the same negative samples from an identically seeded loss
    v_neg = ContrastiveDivergence(k=k, persistent=persistent, seed=4,
                                  num_chains=7 if persistent else None).negative_samples(rbm, v)
    assert v_neg.shape == ((7, 5) if persistent else (12, 5))
    rbm.zero_grad()
    diff = rbm.free_energy(v).mean() - rbm.free_energy(v_neg).mean()
    diff.backward()
    for n, p in rbm.named_parameters():
        assert_close(grads[n], p.grad)
    assert value == pytest.approx(12 * diff.item())
    # and the textbook closed form: dF/dW = -v sigma(c + vW)^T
    ph, ph_neg = (torch.sigmoid(rbm.hidden_logits(x)).detach() for x in (v, v_neg))
    assert_close(grads["W"], -(v.T @ ph) / 12 + (v_neg.T @ ph_neg) / len(v_neg))
    assert_close(grads["b"], -v.mean(0) + v_neg.mean(0))
    assert_close(grads["c"], -ph.mean(0) + ph_neg.mean(0))


def test_gradient_is_the_minibatch_mean_whatever_the_plate_scale():
    rbm = random_rbm(5, 3, 1.0, 0)
    v = _data()
    value1 = ContrastiveDivergence(seed=1).loss_and_grads(rbm, no_guide, v)
    g1 = rbm.W.grad.clone()
    rbm.zero_grad()
    value2 = ContrastiveDivergence(seed=1).loss_and_grads(scale_plate(rbm, "data", 50.0),
                                                          no_guide, v)
    assert_close(rbm.W.grad, g1)
    assert value2 == pytest.approx(50.0 * value1)


def test_svi_step_updates_the_module_parameters_by_sgd():
    rbm = random_rbm(5, 3, 1.0, 0)
    v = _data()
    before = {n: p.detach().clone() for n, p in rbm.named_parameters()}
    ContrastiveDivergence(seed=2).loss_and_grads(rbm, no_guide, v)
    grads = {n: p.grad.clone() for n, p in rbm.named_parameters()}
    rbm.zero_grad()
    svi = pyro.infer.SVI(rbm, no_guide, pyro.optim.SGD({"lr": 0.1}),
                         ContrastiveDivergence(seed=2))
    svi.step(v)
    for n, p in rbm.named_parameters():
        assert_close(p.detach(), before[n] - 0.1 * grads[n])
    assert set(pyro.get_param_store().keys()) == {"rbm.W", "rbm.b", "rbm.c"}


def test_a_second_model_with_the_same_name_trains_its_own_parameters():
    x = _data(40).float()
    first, second = RBM(5, 3, seed=0), RBM(5, 3, seed=1)
    first.fit(x, epochs=1, batch_size=10, progress=False, engine="svi")
    w_first = first.W.detach().clone()
    w_second = second.W.detach().clone()
    second.fit(x, epochs=1, batch_size=10, progress=False, engine="svi")
    assert_close(first.W.detach(), w_first)
    assert not torch.allclose(second.W.detach(), w_second)
    assert pyro.get_param_store()["rbm.W"] is second.W


def test_pcd_checkpoint_resume_is_exact(tmp_path):
    x = _data(60, 6, seed=3).float()
    kw = dict(method="pcd", k=2, batch_size=15, lr=0.1, momentum=0.5, num_chains=9,
              progress=False, seed=5, engine="svi", lr_final=None)
    straight = RBM(6, 4, seed=0)
    straight.fit(x, epochs=4, **kw)
    pyro.clear_param_store()
    resumed = RBM(6, 4, seed=0)
    resumed.fit(x, epochs=2, checkpoint=tmp_path / "ck.pt", **kw)
    pyro.clear_param_store()
    again = RBM(6, 4, seed=0)
    again.fit(x, epochs=4, checkpoint=tmp_path / "ck.pt", resume=True, **kw)
    for n, p in straight.named_parameters():
        assert_close(dict(again.named_parameters())[n], p, rtol=0, atol=0)
    # resuming with another chain count used to continue silently with the old 9 chains
    with pytest.raises(CheckpointError, match=r"loss\.num_chains: 9 -> 5"):
        RBM(6, 4, seed=0).fit(x, epochs=4, checkpoint=tmp_path / "ck.pt", resume=True,
                              **{**kw, "num_chains": 5})
    with pytest.raises(CheckpointError, match="expected 5 persistent chains"):
        RBM(6, 4, seed=0).fit(x, epochs=4, checkpoint=tmp_path / "ck.pt", resume="force",
                              **{**kw, "num_chains": 5})


@pytest.mark.parametrize(
    ("state", "match"),
    [
        ({"generator": None, "device": None}, "'loss.chains' is missing"),
        ({"chains": [[0.0, 1.0]], "generator": None, "device": None},
         "'loss.chains': expected None or a float tensor"),
        ({"chains": torch.zeros(4, dtype=torch.long), "generator": None, "device": None},
         r"'loss.chains': expected a float tensor \[C, V\].*torch.int64 of shape \(4,\)"),
        ({"chains": None, "generator": torch.zeros(3, dtype=torch.uint8), "device": "cpu"},
         "'loss.generator': expected the state of a torch.Generator"),
        ({"chains": None, "generator": None, "device": 3}, "'loss.device': expected None or"),
    ],
)
def test_load_state_dict_refuses_malformed_state(state, match):
    loss = ContrastiveDivergence(persistent=True)
    with pytest.raises(CheckpointError, match=match):
        loss.load_state_dict(state)
    assert loss.chains is None and loss._generator is None  # nothing half-restored


def test_training_on_digits_increases_exact_test_log_likelihood(trained_rbm, digits):
    rbm, init_ll, history = trained_rbm
    _, test = digits
    ll = rbm.log_prob(test).mean()
    assert ll > init_ll + 1.0, (float(ll), float(init_ll))
    assert len(history.loss) == 10


def test_validation_of_the_loss():
    with pytest.raises(ConfigError, match="k must be an int >= 1"):
        ContrastiveDivergence(k=0)
    with pytest.raises(ConfigError, match="num_chains only applies"):
        ContrastiveDivergence(num_chains=10)
    rbm = random_rbm(5, 3, 1.0, 0)
    v = _data()

    def latent_guide(v):
        pyro.sample("z", pyro.distributions.Normal(0.0, 1.0))

    with pytest.raises(ConfigError, match="needs no guide"):
        ContrastiveDivergence().loss_and_grads(rbm, latent_guide, v)

    def gaussian_model(v):
        with pyro.plate("data", v.shape[0]):
            pyro.sample("v", pyro.distributions.Normal(0.0, 1.0).expand([5]).to_event(1), obs=v)

    with pytest.raises(ConfigError, match="only observed EnergyDistribution"):
        ContrastiveDivergence().loss_and_grads(gaussian_model, no_guide, v)


def test_pcd_beats_cd1_on_exact_test_log_likelihood_at_equal_updates(digits, single_thread):
    """Same init, data order, lr and 720 updates; PCD (100 persistent chains) vs CD-1.

    (PCD won for each of the seeds 0-4 with these settings, by 0.04-0.15 nats.)
    """
    train, test = digits
    ll = {}
    for method in ("cd", "pcd"):
        pyro.clear_param_store()
        rbm = RBM(64, 20, data=train, seed=0)
        rbm.fit(train, method=method, k=1, epochs=10, batch_size=20, lr=0.05,
                num_chains=100 if method == "pcd" else None, seed=0, progress=False)
        ll[method] = float(rbm.log_prob(test).mean())
    assert ll["pcd"] > ll["cd"], ll
