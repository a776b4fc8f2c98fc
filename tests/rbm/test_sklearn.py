"""RBM.from_sklearn reproduces scikit-learn's BernoulliRBM (transform, free energy, PL)."""

import numpy as np
import pytest
import torch
from sklearn.neural_network import BernoulliRBM
from torch.testing import assert_close

from pgm_lab.errors import NotFittedError
from pgm_lab.rbm import RBM


@pytest.fixture(scope="module")
def fitted(digits):
    train, _ = digits
    est = BernoulliRBM(n_components=16, learning_rate=0.06, batch_size=10, n_iter=2,
                       random_state=0)
    est.fit(train.numpy().astype(np.float64))
    return est


def test_from_sklearn_reproduces_transform_free_energy_and_score_samples(fitted, digits):
    _, test = digits
    x = test.numpy().astype(np.float64)
    rbm = RBM.from_sklearn(fitted)
    assert (rbm.n_visible, rbm.n_hidden) == (64, 16)
    assert_close(rbm.transform(test), torch.from_numpy(fitted.transform(x)))
    assert_close(rbm.free_energy(torch.from_numpy(x)).detach(),
                 torch.from_numpy(fitted._free_energy(x)))
    # score_samples flips one bit per row drawn by RandomState(random_state).randint
    fitted.random_state = 123
    idx = np.random.RandomState(123).randint(0, 64, x.shape[0])
    assert_close(rbm.pseudo_likelihood(test, flip=torch.from_numpy(idx)),
                 torch.from_numpy(fitted.score_samples(x)))


def test_from_sklearn_refuses_unfitted_estimator():
    with pytest.raises(NotFittedError, match="call estimator.fit"):
        RBM.from_sklearn(BernoulliRBM(n_components=3))


def test_from_sklearn_refuses_intercepts_that_do_not_match_the_components(fitted):
    from types import SimpleNamespace

    from pgm_lab.errors import DataError

    good = dict(components_=fitted.components_, intercept_visible_=fitted.intercept_visible_,
                intercept_hidden_=fitted.intercept_hidden_)
    # a length-1 intercept used to be broadcast over all units silently
    for attr, bad in (("intercept_visible_", np.zeros(1)), ("intercept_hidden_", np.zeros(17))):
        with pytest.raises(DataError, match=f"{attr} must have shape"):
            RBM.from_sklearn(SimpleNamespace(**{**good, attr: bad}))
