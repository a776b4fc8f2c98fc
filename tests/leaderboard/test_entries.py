"""pgm_lab.leaderboard.entries: the latent-class EM step equals DAG.fit's EM step."""

import torch

from pgm_lab.dag import DAG, cpt
from pgm_lab.leaderboard.entries import latent_class_em, pixel_names


def test_pixel_names_are_row_column():
    assert pixel_names(64)[:2] == ["r0c0", "r0c1"] and pixel_names(64)[-1] == "r7c7"


def test_latent_class_em_equals_dag_em():
    """Iterate each once from the same tables: the vectorized update = DAG.fit(method='em')."""
    gen = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.full((40, 4), 0.4), generator=gen)
    w0, p0 = latent_class_em(x, 3, 0, seed=1)  # the initial tables
    w1, p1 = latent_class_em(x, 3, 1, seed=1)
    names = pixel_names(4)
    spec = {"class": cpt([], w0)}
    spec.update({n: cpt(["class"], torch.stack([1 - p0[:, i], p0[:, i]], -1))
                 for i, n in enumerate(names)})
    fitted = DAG(spec).fit({n: x[:, i].long() for i, n in enumerate(names)}, method="em",
                           pseudo_count=1.0, max_iter=1)
    torch.testing.assert_close(fitted.spec["class"].table.double(), w1)
    for i, n in enumerate(names):
        torch.testing.assert_close(fitted.spec[n].table[:, 1].double(), p1[:, i])
