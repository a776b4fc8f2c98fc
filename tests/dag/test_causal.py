import math

import pytest
import torch

from pgm_lab.dag import DAG, cpt, gaussian
from pgm_lab.errors import DAGError, DataError

F64 = torch.float64


def _confounded():
    """z -> t, z -> y, t -> m -> y, t -> w: z confounds t and y; m mediates; w is a
    descendant of the treatment (adjusting for it would be wrong)."""
    return DAG({
        "z": cpt([], [0.2, 0.5, 0.3]),
        "t": cpt(["z"], [[0.9, 0.1], [0.5, 0.5], [0.15, 0.85]], states=["no", "yes"]),
        "m": cpt(["t"], [[0.8, 0.2], [0.3, 0.7]]),
        "w": cpt(["t"], [[0.6, 0.4], [0.2, 0.8]]),
        "y": cpt(["z", "m"], [[[0.7, 0.2, 0.1], [0.4, 0.4, 0.2]],
                              [[0.5, 0.3, 0.2], [0.2, 0.5, 0.3]],
                              [[0.3, 0.3, 0.4], [0.1, 0.2, 0.7]]]),
    })


def _mean_under_do(dag, t):
    p = dag.do({"t": t}).posterior("y")["y"]
    return float((p * torch.arange(3, dtype=F64)).sum())


def test_back_door_estimate_equals_the_effect_from_do_within_standard_errors():
    dag = _confounded()
    truth = _mean_under_do(dag, 1) - _mean_under_do(dag, 0)
    data = dag.sample(20_000, seed=0)
    res = dag.average_causal_effect(data, "t", "y", treatment_values=("no", "yes"))
    assert res.adjustment == ("z",)
    assert abs(res.estimate - truth) < 4 * res.stderr, (res, truth)
    # the unadjusted difference of means is confounded: many standard errors off
    t, y = data["t"], data["y"].to(F64)
    naive = float(y[t == 1].mean() - y[t == 0].mean())
    assert abs(naive - truth) > 10 * res.stderr, (naive, truth)


def test_standard_error_is_calibrated_over_replicates():
    dag = _confounded()
    truth = _mean_under_do(dag, 1) - _mean_under_do(dag, 0)
    reps = 200
    zs = torch.tensor([(r.estimate - truth) / r.stderr for r in
                       (dag.average_causal_effect(dag.sample(2000, seed=s), "t", "y")
                        for s in range(reps))], dtype=F64)
    # mean 0 and sd 1 within 4 of their own standard errors (1/sqrt(R), 1/sqrt(2R))
    assert abs(float(zs.mean())) < 4 / math.sqrt(reps)
    assert abs(float(zs.std()) - 1) < 4 / math.sqrt(2 * reps)


def test_continuous_outcome_of_a_conditional_gaussian_node():
    pz = torch.tensor([0.4, 0.6], dtype=F64)
    mu = torch.tensor([[0.0, 1.0], [2.0, 5.0]], dtype=F64)  # E[y | z, t]
    dag = DAG({"z": cpt([], pz), "t": cpt(["z"], [[0.8, 0.2], [0.3, 0.7]]),
               "y": gaussian(["z", "t"], [], intercept=mu, scale=[[1.0, 2.0], [0.5, 1.5]],
                             discrete=["z", "t"])})
    truth = float((pz * (mu[:, 1] - mu[:, 0])).sum())  # sum_z p(z) (mu_z1 - mu_z0) = 2.2
    res = dag.average_causal_effect(dag.sample(20_000, seed=1), "t", "y")
    assert abs(res.estimate - truth) < 4 * res.stderr, (res, truth)


def test_errors():
    dag = _confounded()
    data = dag.sample(500, seed=0)
    with pytest.raises(DataError, match=r"missing \['z'\]"):
        dag.average_causal_effect({k: v for k, v in data.items() if k != "z"}, "t", "y")
    with pytest.raises(DataError, match="positivity"):
        keep = ~((data["z"] == 0) & (data["t"] == 1))
        dag.average_causal_effect({k: v[keep] for k, v in data.items()}, "t", "y")
    with pytest.raises(DataError, match="one length"):
        dag.average_causal_effect({**data, "y": data["y"][:-1]}, "t", "y")
    with pytest.raises(DAGError, match="pair"):
        dag.average_causal_effect(data, "t", "y", treatment_values=(0,))
    cont = DAG({"t": gaussian([], []), "y": gaussian(["t"], [1.0])})
    with pytest.raises(DAGError, match="treatment 't': expected a discrete node"):
        cont.average_causal_effect(cont.sample(10, seed=0), "t", "y")
