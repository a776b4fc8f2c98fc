"""ArviZ conversion of GibbsKernel runs: shapes, R-hat / ESS and trace plots."""

import pyro
import pytest
import torch
from torch.testing import assert_close

from pgm_lab.errors import ConfigError
from pgm_lab.rbm import GibbsKernel
from pgm_lab.rbm.diagnostics import plot_trace, summary, to_inference_data

from ._oracle import joint_table, random_rbm


def test_mcmc_run_converts_to_inference_data_with_converged_diagnostics(tmp_path):
    rbm = random_rbm(4, 3, 1.0, 0)
    mcmc = pyro.infer.MCMC(GibbsKernel(rbm, batch_shape=(4,), seed=0), num_samples=1000,
                           warmup_steps=50, disable_progbar=True)
    mcmc.run()
    idata = to_inference_data(mcmc, rbm)
    post = idata.posterior
    assert post.sizes["chain"] == 4 and post.sizes["draw"] == 1000
    assert post["v"].shape == (4, 1000, 4) and post["h"].shape == (4, 1000, 3)
    s = summary(idata)
    assert (s["r_hat"] < 1.05).all(), s
    assert (s["ess_bulk"] > 400).all(), s
    # chain means agree with the exact mean free energy within a few Monte-Carlo errors
    vs, _, log_p = joint_table(rbm, 4, 3)
    exact_mean = float((log_p.exp() * rbm.free_energy(vs).detach()).sum())
    row = s.loc["free_energy"]
    assert abs(row["mean"] - exact_mean) < 4 * row["sd"] / row["ess_bulk"] ** 0.5
    # energy of the recorded (v, h) pairs
    v = torch.as_tensor(post["v"].values)
    h = torch.as_tensor(post["h"].values)
    assert_close(torch.as_tensor(post["energy"].values), rbm.energy(v, h).detach())
    fig = plot_trace(idata, tmp_path / "trace.png")
    assert (tmp_path / "trace.png").stat().st_size > 0
    assert [ax.get_title() for ax in fig.axes[::2]] == ["free_energy", "visible_mean",
                                                       "hidden_mean"]


def test_dict_input_and_validation():
    rbm = random_rbm(4, 3, 1.0, 0)
    v = torch.bernoulli(torch.full((2, 5, 4), 0.5, dtype=torch.float64))
    idata = to_inference_data({"v": v}, rbm, include_units=False)
    assert set(idata.posterior.data_vars) == {"free_energy", "energy", "visible_mean",
                                              "hidden_mean"}
    with pytest.raises(ConfigError, match="expected a pyro.infer.MCMC"):
        to_inference_data([1, 2], rbm)
    with pytest.raises(ConfigError, match="expected v of shape"):
        to_inference_data({"v": torch.zeros(5, 4)}, rbm)
