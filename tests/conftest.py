import os

import pyro
import pytest
import torch
from _one_thread import one_thread

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(autouse=True)
def _seed_and_clear_param_store():
    """Every test starts from the same RNG state and an empty Pyro param store."""
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


@pytest.fixture
def single_thread():
    """Use with ``pytestmark = pytest.mark.usefixtures("single_thread")`` in modules of tiny ops."""
    with one_thread():
        yield
