"""pgm_lab.infer.report: bound_report's numbers, table, JSON and figure, for any Pyro pair."""

import json
import math

import pyro.distributions as dist
import pytest
import torch

from pgm_lab.dag import DAG
from pgm_lab.errors import ConfigError
from pgm_lab.guides import AmortizedNormal
from pgm_lab.infer import bound_report, iwae_curve

Z = 3.0


pytestmark = pytest.mark.usefixtures("single_thread")


def test_report_orders_the_bounds_and_measures_them_against_ais(lg, make_shifted_guide,
                                                                 tmp_path):
    x = lg.sample(60, seed=1)
    truth = float(lg.log_prob(x).mean())
    rep = bound_report({"exact": (lg.model, lg.exact_guide),
                        "shifted": (lg.model, make_shifted_guide(lg))},
                       x, ks=(1, 5, 500), ais_steps=50, ais_chains=8)
    exact, shifted = rep.models["exact"], rep.models["shifted"]
    for k in (1, 5, 500):  # the exact posterior as proposal: every estimate is log p(x)
        assert exact.bounds[k] == pytest.approx(truth, abs=1e-9)
        assert abs(exact.gap_to_ais[k]) < 1e-9
    assert shifted.bounds[1] < shifted.bounds[5] < shifted.ais
    assert shifted.gap_to_ais[1] / shifted.gap_stderr[1] > Z
    # prior IS at K=500 in 2 latent dims: a lower estimate, within reach of the truth
    assert shifted.prior_is[500] <= truth + Z * shifted.ais_stderr
    assert shifted.prior_is == {500: pytest.approx(exact.prior_is[500])}  # same random numbers
    data = json.loads(rep.to_json())
    assert data["models"]["shifted"]["ais"]["mean"] == pytest.approx(shifted.ais)
    assert set(data["models"]["shifted"]["bounds"]) == {"1", "5", "500"}
    table = rep.table()
    assert table.splitlines()[0] == ("| model | ELBO | k=5 | k=500 | AIS (50 steps) | "
                                     "prior IS (K=500) |")
    assert "- shifted: ELBO +" in table
    rep.plot(tmp_path / "bounds.png")
    assert (tmp_path / "bounds.png").stat().st_size > 0


def test_a_declared_dag_with_a_neural_conditional_works_through_the_report():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 8))
    dag = DAG({"z": dist.Normal(torch.zeros(2), 1.0).to_event(1),
               "x": lambda z: dist.Bernoulli(logits=net(z)).to_event(1)})
    x = dag.sample(40, seed=1)["x"]

    def model(x):
        return dag.model({"x": x})

    guide = AmortizedNormal(8, 2, (16,))
    rep = bound_report({"dag": (model, guide)}, x, ks=(1, 10), ais_steps=40, ais_chains=8)
    m = rep.models["dag"]
    assert m.gap_to_ais[1] / m.gap_stderr[1] > Z  # AIS far above the untrained guide's ELBO
    assert m.gap_to_ais[10] / m.gap_stderr[10] > -Z
    torch.manual_seed(0)  # the report seeds torch with seed=0 before each estimator
    curve = iwae_curve(model, guide, x, ks=(1, 10))
    assert m.bounds == {k: pytest.approx(float(b.mean())) for k, b in curve.bounds.items()}
    assert math.isfinite(m.prior_is[10])


@pytest.mark.parametrize("models, kwargs, match", [
    ({}, {}, "non-empty mapping name -> \\(model, guide\\)"),
    ({"m": "model"}, {}, "models\\['m'\\] must be a \\(model, guide\\) pair"),
    (None, {"ks": 5}, "ks must be a non-empty sequence"),
    (None, {"ks": (0, 5)}, "each k must be an int >= 1"),
])
def test_bad_arguments_are_config_errors(lg, models, kwargs, match):
    models = {"lg": (lg.model, lg.exact_guide)} if models is None else models
    with pytest.raises(ConfigError, match=match):
        bound_report(models, lg.sample(3), **kwargs)
