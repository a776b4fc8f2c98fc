"""The fast Bernoulli sampler: exact frequencies, determinism from the torch generator, no
aliasing of its reused buffer; and the closed-form CD gradient against autograd."""

import pytest
import torch
from torch.testing import assert_close

from pgm_lab.rbm import EnergyModel
from pgm_lab.rbm.bernoulli import NUMPY_MIN_SIZE, bernoulli_logits, uniform

from ._oracle import random_rbm

# below and above the switch from torch.rand to the NumPy stream
SIZES = [(NUMPY_MIN_SIZE // 8 - 1, 8), (NUMPY_MIN_SIZE // 8 + 1, 8)]
DTYPES = [torch.float32, torch.float64]


@pytest.mark.parametrize("rows, cols", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_frequencies_match_sigmoid_within_monte_carlo_error(rows, cols, dtype):
    logits = torch.linspace(-4.0, 4.0, cols, dtype=dtype)
    gen = torch.Generator().manual_seed(0)
    reps = 40
    x = torch.stack([bernoulli_logits(logits.expand(rows, cols), gen) for _ in range(reps)])
    assert x.dtype == dtype and set(x.unique().tolist()) <= {0.0, 1.0}
    n = reps * rows
    p = torch.sigmoid(logits.double())
    z = (x.double().mean((0, 1)) - p) / (p * (1 - p) / n).sqrt()
    assert z.abs().max() < 4.5, z  # 8 units, two-sided, family-wise level ~5e-5


@pytest.mark.parametrize("rows, cols", SIZES)
def test_uniform_moments_and_range(rows, cols):
    u = uniform((rows, cols), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert u.shape == (rows, cols) and (u >= 0).all() and (u < 1).all()
    n = u.numel()
    assert abs(float(u.mean()) - 0.5) / (1 / 12 / n) ** 0.5 < 4.5
    assert abs(float((u < 0.25).double().mean()) - 0.25) / (0.25 * 0.75 / n) ** 0.5 < 4.5


@pytest.mark.parametrize("rows, cols", SIZES)
def test_draws_are_a_function_of_the_torch_generator_state(rows, cols):
    logits = torch.zeros(rows, cols)
    gen = torch.Generator().manual_seed(3)
    state = gen.get_state()
    first = [bernoulli_logits(logits, gen) for _ in range(3)]
    gen.set_state(state)
    again = [bernoulli_logits(logits, gen) for _ in range(3)]
    for a, b in zip(first, again):
        assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(first[0], first[1])  # the generator advanced
    # the global RNG is used (and seeded) when no generator is given
    torch.manual_seed(7)
    x = bernoulli_logits(logits)
    torch.manual_seed(7)
    assert_close(bernoulli_logits(logits), x, rtol=0, atol=0)


def test_results_do_not_alias_the_reused_buffer_and_inplace_overwrites_logits():
    gen = torch.Generator().manual_seed(0)
    logits = torch.zeros(NUMPY_MIN_SIZE * 2)
    a = bernoulli_logits(logits, gen)
    kept = a.clone()
    bernoulli_logits(logits, gen)
    assert_close(a, kept, rtol=0, atol=0)
    assert_close(logits, torch.zeros_like(logits))
    out = bernoulli_logits(logits, gen, inplace=True)
    assert out.data_ptr() == logits.data_ptr()


@pytest.mark.parametrize("n_pos, n_neg", [(7, 7), (12, 5)])
def test_rbm_closed_form_cd_gradient_equals_the_generic_autograd_one(n_pos, n_neg):
    rbm = random_rbm(6, 4, 2.0, 0)
    gen = torch.Generator().manual_seed(0)
    v_pos = torch.bernoulli(torch.full((n_pos, 6), 0.5, dtype=torch.float64), generator=gen)
    v_neg = torch.bernoulli(torch.full((n_neg, 6), 0.5, dtype=torch.float64), generator=gen)
    value, grads = rbm.free_energy_difference(v_pos, v_neg)
    ref_value, ref_grads = EnergyModel.free_energy_difference(rbm, v_pos, v_neg)
    assert_close(value, ref_value)
    assert set(grads) == set(ref_grads) == set(rbm.parameters())
    for p in rbm.parameters():
        assert_close(grads[p], ref_grads[p])
    no_grad_value, empty = rbm.free_energy_difference(v_pos, v_neg, grads=False)
    assert_close(no_grad_value, value)
    assert empty == {}
