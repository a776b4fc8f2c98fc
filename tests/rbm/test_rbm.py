"""RBM energy, free energy, conditionals and exact log Z against brute-force enumeration."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from pgm_lab.errors import ConfigError, DataError, InferenceError
from pgm_lab.rbm import RBM

from ._oracle import all_states, brute_energy, joint_table, random_rbm

sizes = st.tuples(st.integers(1, 5), st.integers(1, 5))
scales = st.sampled_from([0.1, 1.0, 5.0, 50.0])


@settings(max_examples=25, deadline=None)
@given(size=sizes, scale=scales, seed=st.integers(0, 2**16))
def test_energy_free_energy_and_log_z_match_enumeration(size, scale, seed):
    n_v, n_h = size
    rbm = random_rbm(n_v, n_h, scale, seed)
    vs, hs = all_states(n_v), all_states(n_h)
    pairs_v = vs.repeat_interleave(len(hs), 0)
    pairs_h = hs.repeat(len(vs), 1)
    with torch.no_grad():
        energy = rbm.energy(pairs_v, pairs_h)
        assert_close(energy, brute_energy(rbm, pairs_v, pairs_h))
        # F(v) = -log sum_h exp(-E(v, h))
        brute_f = -torch.logsumexp(-energy.reshape(len(vs), len(hs)), 1)
        free = rbm.free_energy(vs)
        assert torch.isfinite(free).all()
        assert_close(free, brute_f)
        assert_close(rbm.hidden_free_energy(hs),
                     -torch.logsumexp(-energy.reshape(len(vs), len(hs)), 0))
        log_z = rbm.log_partition()
        assert torch.isfinite(log_z)
        assert_close(log_z, torch.logsumexp(-energy, 0))
        assert_close(rbm.log_prob(vs), -brute_f - torch.logsumexp(-energy, 0))


@settings(max_examples=20, deadline=None)
@given(size=sizes, scale=scales, seed=st.integers(0, 2**16))
def test_conditionals_match_joint(size, scale, seed):
    n_v, n_h = size
    rbm = random_rbm(n_v, n_h, scale, seed)
    vs, hs, log_p = joint_table(rbm, n_v, n_h)
    p = log_p.exp()
    with torch.no_grad():
        # p(h_j = 1 | v) from the joint table, for every v
        codes_v = (vs * 2 ** torch.arange(n_v, dtype=torch.float64)).sum(1).long()
        p_v = torch.zeros(2**n_v, dtype=torch.float64).index_add_(0, codes_v, p)
        p_h1_v = torch.zeros(2**n_v, n_h, dtype=torch.float64).index_add_(0, codes_v,
                                                                           p[:, None] * hs)
        v_states = all_states(n_v).flip(1)  # code sum_i v_i 2^i -> row order of all_states
        mask = p_v > 1e-300
        want = p_h1_v[mask] / p_v[mask, None]
        got = torch.sigmoid(rbm.hidden_logits(v_states))[mask]
        assert_close(got, want, atol=1e-8, rtol=1e-6)
        codes_h = (hs * 2 ** torch.arange(n_h, dtype=torch.float64)).sum(1).long()
        p_h = torch.zeros(2**n_h, dtype=torch.float64).index_add_(0, codes_h, p)
        p_v1_h = torch.zeros(2**n_h, n_v, dtype=torch.float64).index_add_(0, codes_h,
                                                                           p[:, None] * vs)
        h_states = all_states(n_h).flip(1)
        mask = p_h > 1e-300
        got = torch.sigmoid(rbm.visible_logits(h_states))[mask]
        assert_close(got, p_v1_h[mask] / p_h[mask, None], atol=1e-8, rtol=1e-6)


def test_generic_energy_defaults_equal_closed_forms():
    """The base-class conditionals / free energy (energy differences) equal the RBM's."""
    from pgm_lab.rbm import EnergyModel

    rbm = random_rbm(4, 3, 2.0, 0)
    vs = all_states(4)
    with torch.no_grad():
        assert_close(EnergyModel.hidden_logits(rbm, vs), rbm.hidden_logits(vs))
        assert_close(EnergyModel.free_energy(rbm, vs), rbm.free_energy(vs))


@pytest.mark.parametrize("n_v, n_h", [(3, 6), (6, 3)])
def test_exact_log_z_enumerates_either_layer_with_chunks(n_v, n_h):
    rbm = random_rbm(n_v, n_h, 1.0, 3)
    vs, hs = all_states(n_v + n_h)[:, :n_v], all_states(n_v + n_h)[:, n_v:]
    want = torch.logsumexp(-rbm.energy(vs, hs).detach(), 0)
    assert_close(rbm.log_partition(chunk_size=3), want)


def test_large_weights_stay_finite():
    rbm = random_rbm(8, 6, 1e3, 1)
    vs = all_states(8)
    with torch.no_grad():
        for value in (rbm.free_energy(vs), rbm.log_prob(vs), rbm.hidden_free_energy(all_states(6)),
                      rbm.pseudo_likelihood(vs, exact=True)):
            assert torch.isfinite(value).all()
        assert_close(rbm.log_prob(vs).exp().sum(), torch.tensor(1.0, dtype=torch.float64))


def test_float32_model_log_z_is_computed_in_float64():
    rbm64 = random_rbm(5, 4, 1.0, 2)
    rbm32 = RBM(5, 4)
    rbm32.load_state_dict({k: v.float() for k, v in rbm64.state_dict().items()})
    assert rbm32.log_partition().dtype == torch.float64
    assert_close(rbm32.log_partition(), rbm64.log_partition(), atol=1e-5, rtol=0)
    assert rbm32.W.dtype == torch.float32


def test_exact_pseudo_likelihood_matches_conditionals():
    rbm = random_rbm(5, 3, 1.5, 4)
    vs = all_states(5)
    log_p = rbm.log_prob(vs).detach()
    want = torch.zeros(len(vs), dtype=torch.float64)
    codes = (vs * 2 ** torch.arange(4, -1, -1, dtype=torch.float64)).sum(1).long()
    for i in range(5):
        flipped = codes ^ (1 << (4 - i))
        # log p(v_i | v_-i) = log p(v) - log(p(v) + p(v with bit i flipped))
        want += log_p - torch.logaddexp(log_p, log_p[flipped])
    assert_close(rbm.pseudo_likelihood(vs, exact=True), want)
    # the stochastic (scikit-learn) estimator is unbiased for it: average over many draws
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([rbm.pseudo_likelihood(vs, generator=gen) for _ in range(400)])
    z = (draws.mean(0) - want) / (draws.std(0) / math.sqrt(400))
    assert z.abs().max() < 4.5  # 32 states, Bonferroni-ish bound


def test_visible_bias_init_from_data_means():
    x = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0], [1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    rbm = RBM(3, 2, data=x, seed=0)
    p = torch.tensor([0.75, 1e-3, 0.75])
    assert_close(rbm.b.detach(), torch.log(p / (1 - p)))
    assert_close(rbm.c.detach(), torch.zeros(2))
    assert rbm.W.abs().max() < 0.05


def test_reconstruction_error_shape_and_value():
    rbm = random_rbm(4, 2, 1.0, 0)
    v = all_states(4)
    recon = torch.sigmoid(rbm.visible_logits(torch.sigmoid(rbm.hidden_logits(v)))).detach()
    assert_close(rbm.reconstruction_error(v), ((v - recon) ** 2).sum(1))


@pytest.mark.parametrize("bad, match", [
    (torch.tensor([[0.0, 1.0, 0.5]]), "binary"),
    (torch.tensor([[0.0, float("nan"), 1.0]]), "NaN"),
    (torch.ones(2, 4), "features; expected 3"),
    (torch.ones(3), r"shape \[N, D\]"),
    ([[0, 1, 1]], "torch.Tensor or numpy"),
])
def test_bad_data_raises_data_error(bad, match):
    rbm = RBM(3, 2)
    with pytest.raises(DataError, match=match):
        rbm.log_prob(bad)
    with pytest.raises(DataError, match=match):
        rbm.fit(bad, epochs=1)


@pytest.mark.parametrize("kwargs, match", [
    ({"n_visible": 0, "n_hidden": 2}, "n_visible must be a positive int"),
    ({"n_visible": 3, "n_hidden": 2.5}, "n_hidden must be a positive int"),
    ({"n_visible": 3, "n_hidden": 2, "init_std": -1.0}, "init_std"),
])
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        RBM(**kwargs)


def test_bad_fit_and_log_partition_arguments():
    rbm = RBM(3, 2)
    x = torch.ones(4, 3)
    with pytest.raises(ConfigError, match="method must be 'cd' or 'pcd'"):
        rbm.fit(x, method="ml")
    with pytest.raises(ConfigError, match="lr must be"):
        rbm.fit(x, lr=float("nan"))
    for arg in ("lr", "momentum", "weight_decay"):  # True used to train as 1.0
        with pytest.raises(ConfigError, match=f"{arg} must be a finite number >= 0, got True"):
            rbm.fit(x, **{arg: True})
    with pytest.raises(ConfigError, match="num_threads must be"):
        rbm.fit(x, num_threads=0)
    with pytest.raises(ConfigError, match="method must be 'exact' or 'ais'"):
        rbm.log_partition("magic")


def test_fit_num_threads_applies_during_training_only():
    x = torch.bernoulli(torch.full((20, 3), 0.5), generator=torch.Generator().manual_seed(0))
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []
        RBM(3, 2).fit(x, epochs=2, batch_size=10, num_threads=1, progress=False,
                      callbacks=[lambda epoch, record: seen.append(torch.get_num_threads())])
        assert seen == [1, 1]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(old)


def test_pseudo_likelihood_flip_must_be_integer_indices():
    rbm = random_rbm(4, 3, 1.0, 0)
    v = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0]], dtype=torch.float64)
    want = rbm.pseudo_likelihood(v, flip=torch.tensor([0, 3]))
    assert_close(rbm.pseudo_likelihood(v, flip=[0, 3]), want)
    # 0.7 and 3.9 used to be truncated silently to units 0 and 3
    for bad in (torch.tensor([0.7, 3.9]), [0.7, 3.9], torch.tensor([True, False])):
        with pytest.raises(DataError, match="flip must hold integer unit indices"):
            rbm.pseudo_likelihood(v, flip=bad)


def test_closed_forms_refuse_a_dtype_other_than_the_parameters():
    """e.g. float32 data on the float64 model RBM.from_sklearn builds: was torch's
    'addmv input tensors must have the same dtype' from deep inside."""
    rbm = random_rbm(4, 3, 1.0, 0)  # float64
    v32, h32 = torch.ones(2, 4), torch.ones(2, 3)
    calls = [lambda: rbm.free_energy(v32), lambda: rbm.hidden_logits(v32),
             lambda: rbm.sample_h(v32), lambda: rbm.visible_logits(h32),
             lambda: rbm.energy(v32, h32.double()), lambda: rbm.energy(v32.double(), h32)]
    for call in calls:
        with pytest.raises(DataError, match="parameters' dtype torch.float64, got torch.float32"):
            call()
    assert rbm.log_prob(v32).dtype == torch.float64  # validated entry points still convert


class _CoupledSubclass(RBM):
    """An RBM plus a visible-visible coupling and a hidden field; only ``energy`` changes."""

    def energy(self, v, h):
        return super().energy(v, h) - 1.5 * v[..., 0] * v[..., 1] - 0.8 * h.sum(-1)


class _RedeclaredSubclass(RBM):
    """Overrides ``energy`` without changing it and says so: the closed forms stay."""

    has_rbm_energy = True
    visible_factorized = True

    def energy(self, v, h):
        return super().energy(v, h)


def _subclass_with_params(cls, n_v, n_h, seed):
    model = cls(n_v, n_h, dtype=torch.float64)
    model.load_state_dict(random_rbm(n_v, n_h, 1.0, seed).state_dict())
    return model


@pytest.mark.parametrize("n_v, n_h", [(5, 3), (3, 5)])
def test_subclass_overriding_energy_gets_its_own_log_z_and_free_energy(n_v, n_h):
    # The RBM closed forms used to be kept: log Z off by nats, F(v) of the RBM energy.
    model = _subclass_with_params(_CoupledSubclass, n_v, n_h, seed=4)
    assert not model.has_rbm_energy and not model.visible_factorized
    vs, hs, log_p = joint_table(model, n_v, n_h)
    with torch.no_grad():
        neg_e = -model.energy(vs, hs)
        assert_close(model.log_partition(), torch.logsumexp(neg_e, 0))
        brute_f = -torch.logsumexp(neg_e.reshape(2**n_v, 2**n_h), 1)
        assert_close(model.free_energy(all_states(n_v)), brute_f)
        assert_close(model.log_prob(all_states(n_v)).exp().sum(),
                     torch.tensor(1.0, dtype=torch.float64))
        # p(h_j = 1 | v) of the new energy, from energy differences
        e0 = model.energy(all_states(n_v)[:, None], torch.zeros(n_h, dtype=torch.float64))
        e1 = model.energy(all_states(n_v)[:, None], torch.eye(n_h, dtype=torch.float64))
        assert_close(model.hidden_logits(all_states(n_v)), e0 - e1)
    # contrastive-divergence gradients follow the new free energy too
    v_pos, v_neg = all_states(n_v)[:3], all_states(n_v)[-2:]
    value, grads = model.free_energy_difference(v_pos, v_neg)
    assert_close(value, (model.free_energy(v_pos).mean() - model.free_energy(v_neg).mean())
                 .detach())
    with pytest.raises(InferenceError, match="has_rbm_energy"):
        model.log_partition("ais", num_runs=4, num_betas=10)


def test_subclass_that_redeclares_the_rbm_energy_keeps_the_closed_forms():
    model = _subclass_with_params(_RedeclaredSubclass, 4, 3, seed=5)
    plain = _subclass_with_params(RBM, 4, 3, seed=5)
    assert model.has_rbm_energy and model.visible_factorized
    vs = all_states(4)
    with torch.no_grad():
        assert_close(model.free_energy(vs), plain.free_energy(vs))
        assert_close(model.log_partition(), plain.log_partition())
    assert model.log_partition("ais", num_runs=4, num_betas=10).dtype == torch.float64


def test_float64_free_energies_are_exact_for_logits_beyond_20():
    # F.softplus's default threshold=20 returns x itself above 20: an error of e^-x per unit
    # (~1e-9 at x = 21), some 10^5 times float64's resolution. Reference: torch.logaddexp.
    n_h = 20
    rbm = RBM(3, n_h, init_std=0.0, dtype=torch.float64)
    logits = torch.linspace(20.5, 40.0, n_h, dtype=torch.float64)
    with torch.no_grad():
        rbm.c.copy_(logits)
        rbm.b.copy_(torch.tensor([21.0, 30.0, 39.0], dtype=torch.float64))
    v = all_states(3)
    zero = torch.zeros((), dtype=torch.float64)
    want_f = -(v @ rbm.b) - torch.logaddexp(zero, logits).sum()
    h = all_states(n_h)[:: 2**14]
    want_fh = -(h @ rbm.c) - torch.logaddexp(zero, rbm.b).sum()
    with torch.no_grad():
        assert_close(rbm.free_energy(v), want_f, rtol=0, atol=1e-12)
        assert_close(rbm.hidden_free_energy(h), want_fh, rtol=0, atol=1e-12)
        value, _ = rbm.free_energy_difference(v[:4], v[4:], grads=False)
        want_d = want_f[:4].mean() - want_f[4:].mean()
        assert_close(value, want_d, rtol=0, atol=1e-12)


def test_fit_engine_choice_is_validated(tmp_path):
    x = torch.bernoulli(torch.full((20, 3), 0.5), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ConfigError, match="engine must be"):
        RBM(3, 2).fit(x, engine="gpu")
    with pytest.raises(ConfigError, match="needs engine='fast'"):
        RBM(3, 2).fit(x, engine="svi", centering=True)
    with pytest.raises(ConfigError, match="need engine='svi'"):
        RBM(3, 2).fit(x, engine="fast", checkpoint=tmp_path / "ck.pt")


def test_fast_and_svi_engines_train_equally_well(digits, single_thread):
    # same algorithm, different random streams: exact test LL within a fraction of a nat
    train, test = digits
    ll = {}
    for engine in ("fast", "svi"):
        rbm = RBM(64, 16, data=train, seed=0)
        history = rbm.fit(train, method="pcd", epochs=3, batch_size=20, progress=False,
                          engine=engine)
        assert len(history.loss) == 3
        ll[engine] = float(rbm.log_prob(test).mean())
    assert abs(ll["fast"] - ll["svi"]) < 0.3, ll


def test_fast_engine_runs_callbacks_and_cd():
    x = torch.bernoulli(torch.full((40, 4), 0.5), generator=torch.Generator().manual_seed(1))
    seen = []
    history = RBM(4, 3, seed=0).fit(x, method="cd", epochs=5, batch_size=10,
                                    callbacks=[lambda e, r: seen.append(e) or e == 1])
    assert seen == [0, 1] and len(history.loss) == 2


def test_save_load_round_trip_keeps_parameters_dtype_and_name(tmp_path):
    rbm = random_rbm(5, 3, 1.0, 0)
    rbm.save(tmp_path / "rbm.pt")
    state = torch.load(tmp_path / "rbm.pt", weights_only=True)
    assert (state["n_visible"], state["n_hidden"], state["name"]) == (5, 3, rbm._pyro_name)
    back = RBM.load(tmp_path / "rbm.pt")
    assert (back.n_visible, back.n_hidden, back._pyro_name) == (5, 3, rbm._pyro_name)
    for k in ("W", "b", "c"):
        assert_close(getattr(back, k), getattr(rbm, k), rtol=0, atol=0)
    assert back.W.dtype == rbm.W.dtype
    assert_close(back.log_partition("exact"), rbm.log_partition("exact"), rtol=0, atol=0)
    assert [p.name for p in tmp_path.iterdir()] == ["rbm.pt"]  # no temporary file left


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("c"), r"expected an RBM state file with keys .* got \['W', 'b', "),
    (lambda s: s.update(n_hidden=0), "expected positive int n_visible and n_hidden"),
    (lambda s: s.update(b=torch.zeros(4)), r"expected b of shape \(5,\).*got shape \(4,\)"),
    (lambda s: s.update(c=torch.zeros(3, dtype=torch.long)), "expected c of shape"),
], ids=["missing key", "bad size", "bad shape", "bad dtype"])
def test_load_refuses_a_malformed_state_file(tmp_path, change, message):
    from pgm_lab.checkpoint import save_atomic
    from pgm_lab.errors import CheckpointError

    random_rbm(5, 3, 1.0, 0).save(tmp_path / "rbm.pt")
    state = torch.load(tmp_path / "rbm.pt", weights_only=True)
    change(state)
    save_atomic(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=message):
        RBM.load(tmp_path / "bad.pt")


def test_load_refuses_a_file_that_is_not_a_state_file(tmp_path):
    from pgm_lab.errors import CheckpointError

    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="junk.pt"):
        RBM.load(tmp_path / "junk.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="got list"):
        RBM.load(tmp_path / "list.pt")
