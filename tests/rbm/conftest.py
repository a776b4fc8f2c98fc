import pyro
import pytest
from _one_thread import one_thread

from pgm_lab.data import load_dataset
from pgm_lab.rbm import RBM


@pytest.fixture(scope="session")
def digits():
    """Statically binarized digits: (train [1437, 64], test [360, 64])."""
    return (load_dataset("digits", "train", binarize="static"),
            load_dataset("digits", "test", binarize="static"))


@pytest.fixture(scope="session")
def trained_rbm(digits):
    """A 64x20 RBM trained by CD-1 on digits (290 updates) and its initial test LL.

    Session-scoped: trained once and shared by test_cd.py and test_partition.py.
    """
    train, test = digits
    pyro.set_rng_seed(0)
    rbm = RBM(64, 20, data=train, seed=0, name="trained")
    init_ll = rbm.log_prob(test).mean()
    with one_thread():
        history = rbm.fit(train, method="cd", k=1, epochs=10, batch_size=50, lr=0.05,
                          momentum=0.9, seed=0, progress=False)
    pyro.clear_param_store()
    return rbm, init_ll, history
