"""VAE / AmortizedNormal data checks: what they cost per step, and none with validation off."""

import sys

import pyro
import pytest
import torch
from torch.overrides import TorchFunctionMode

import pgm_lab.models.vae as vae_module
from pgm_lab.errors import DataError
from pgm_lab.guides import AmortizedNormal
from pgm_lab.infer.weights import vectorized_traces
from pgm_lab.models import VAE


class _HostReads(TorchFunctionMode):
    """Records every read of a tensor's value by Python (``item``, ``float``, ``bool``...):
    on a GPU each waits for all queued kernels."""

    READS = {"__bool__", "__float__", "__int__", "__index__", "item", "tolist", "numpy",
             "__array__", "__format__"}

    def __init__(self):
        super().__init__()
        self.reads = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.READS:
            self.reads.append((name, sys._getframe(1).f_globals.get("__name__", "")))
        return func(*args, **(kwargs or {}))


def _pair(likelihood):
    torch.manual_seed(0)
    return VAE(12, 3, (8,), likelihood), AmortizedNormal(12, 3, (8,))


def _data(likelihood):
    g = torch.Generator().manual_seed(1)
    if likelihood == "bernoulli":
        return torch.bernoulli(torch.full((6, 12), 0.4), generator=g)
    return torch.randn(6, 12, generator=g)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("particles", [1, 3])
def test_model_and_guide_read_nothing_to_the_host_with_validation_off(likelihood, particles):
    vae, guide = _pair(likelihood)
    x = _data(likelihood)
    with pyro.validation_enabled(False), _HostReads() as mode:
        model_trace, guide_trace = vectorized_traces(vae.model, guide, (x,), {}, particles, 1)
        model_trace.nodes["x"]["fn"].log_prob(x)  # the likelihood does not check either
    assert mode.reads == []
    assert model_trace.nodes["z"]["value"].shape == ((particles,) if particles > 1 else ()) \
        + (6, 3)
    with pyro.validation_enabled(True), _HostReads() as mode:  # the checks do read
        model_trace, _ = vectorized_traces(vae.model, guide, (x,), {}, particles, 1)
    assert ("__float__", "pgm_lab.models._nets") in mode.reads


def test_binary_check_runs_once_per_step_and_again_on_other_values(monkeypatch):
    calls = []
    original = vae_module._check_binary
    monkeypatch.setattr(vae_module, "_check_binary", lambda x: calls.append(x) or original(x))
    vae, guide = _pair("bernoulli")
    x = _data("bernoulli")
    for particles in (1, 3):
        calls.clear()
        model_trace, _ = vectorized_traces(vae.model, guide, (x,), {}, particles, 1)
        model_trace.compute_log_prob()
        assert len(calls) == 1 and calls[0] is x  # by the model, not again by log_prob
    fn = model_trace.nodes["x"]["fn"]
    fn.log_prob(x.clone())  # another tensor (same values): checked
    assert len(calls) == 2
    x[0, 0] = 2.0  # the checked tensor modified in place: checked again, and refused
    with pytest.raises(DataError, match=r"expected binary x.*x\[0, 0\] = 2"):
        fn.log_prob(x)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_binary_check_agrees_with_comparing_to_0_and_1(dtype):
    info = torch.finfo(dtype)
    values = [0.0, -0.0, 1.0, 0.5, -1.0, 2.0, info.tiny, info.tiny * info.eps, -info.tiny,
              1.0 + info.eps, 1.0 - info.eps / 2, info.max, -info.max, float("inf"),
              float("-inf"), float("nan")]
    for v in values:
        x = torch.tensor([[0.0, 1.0, v]], dtype=dtype)
        binary = bool(((x == 0) | (x == 1)).all())
        if binary:
            vae_module._check_binary(x)
        else:
            with pytest.raises(DataError, match=r"x\[0, 2\]"):
                vae_module._check_binary(x)
    vae_module._check_binary(torch.tensor([[True, False]]))
    with pytest.raises(DataError, match="expected binary"):
        vae_module._check_binary(torch.tensor([[0, 3]]))
