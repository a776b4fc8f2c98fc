"""pgm_lab.optim: one torch optimizer for all params, same updates and states as pyro.optim."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pyro.optim
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

from pgm_lab import optim as pgm_optim
from pgm_lab.errors import ConfigError
from pgm_lab.guides import AmortizedNormal
from pgm_lab.models import VAE
from pgm_lab.train import fit


def _data() -> torch.Tensor:
    return torch.bernoulli(torch.full((32, 12), 0.3), generator=torch.Generator().manual_seed(5))


def _vae_params_after(make_optim, steps: int = 30, x: torch.Tensor | None = None):
    """Fresh VAE + guide (same init), ``steps`` SVI steps; returns the params and the optim."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    vae, guide = VAE(12, 3, (16,)), AmortizedNormal(12, 3, (16,))
    opt = make_optim()
    svi = SVI(vae.model, guide, opt, Trace_ELBO())
    pyro.set_rng_seed(1)
    x = _data() if x is None else x
    for _ in range(steps):
        svi.step(x)
    return {k: v.detach().clone() for k, v in pyro.get_param_store().items()}, opt


def _assert_params_close(a: dict, b: dict, **tol) -> None:
    assert a.keys() == b.keys() and len(a) == 8
    for name in a:
        torch.testing.assert_close(a[name], b[name], msg=name, **tol)


@pytest.mark.parametrize("args", [
    {"lr": 0.01},
    {"lr": 0.02, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.01},
    {"lr": 0.01, "amsgrad": True},
])
def test_same_parameters_as_pyro_adam_after_n_steps(args):
    ref, _ = _vae_params_after(lambda: pyro.optim.Adam(dict(args)))
    ours, opt = _vae_params_after(lambda: pgm_optim.Adam(dict(args)))
    _assert_params_close(ours, ref)  # float tolerance: the fused kernel rounds differently
    assert len(opt.optimizer.param_groups) == 1
    group = opt.optimizer.param_groups[0]
    assert len(group["params"]) == 8
    # the fused kernel by default where this torch has it on the CPU, else foreach
    fused = "cpu" in pgm_optim._fused_device_types(torch.optim.Adam)
    assert (group["fused"], group["foreach"]) == ((True, None) if fused else (None, True))


@pytest.mark.parametrize("kernel,expected", [
    ({"fused": True}, {"fused": True, "foreach": None}),
    ({"foreach": True}, {"fused": None, "foreach": True}),
    ({"fused": False}, {"fused": False, "foreach": None}),  # torch's default kernel
])
def test_kernel_given_by_the_user_is_kept_and_agrees_to_float_tolerance(kernel, expected):
    ref, _ = _vae_params_after(lambda: pyro.optim.Adam({"lr": 0.01}))
    ours, opt = _vae_params_after(lambda: pgm_optim.Adam({"lr": 0.01, **kernel}))
    _assert_params_close(ours, ref)
    group = opt.optimizer.param_groups[0]
    assert {k: group[k] for k in expected} == expected
    state = next(iter(opt.get_state().values()))
    assert {k: state["param_groups"][0][k] for k in expected} == expected  # recorded


def test_fused_only_where_every_parameter_of_the_group_supports_it():
    # A meta tensor stands for a device without fused kernels: it gets a foreach group of
    # its own, with the same hyperparameters; the CPU parameters share one fused group.
    pyro.clear_param_store()
    a = pyro.param("a", torch.zeros(3)).unconstrained()
    b = pyro.param("b", torch.zeros(2, dtype=torch.float64)).unconstrained()
    m = pyro.param("m", torch.zeros(3, device="meta")).unconstrained()
    opt = pgm_optim.Adam({"lr": 0.1})
    opt({a, m, b})
    groups = {tuple(sorted(pyro.get_param_store().param_name(p) for p in g["params"])):
              (g["fused"], g["foreach"], g["lr"]) for g in opt.optimizer.param_groups}
    assert groups == {("a", "b"): (True, None, 0.1), ("m",): (None, True, 0.1)}
    # an optimizer without a fused kernel (here RMSprop) keeps foreach
    rms = pgm_optim.MultiTensorOptim(torch.optim.RMSprop, {"lr": 0.1})
    rms({a})
    assert rms.optimizer.param_groups[0]["foreach"] is True


@pytest.mark.parametrize("pyro_ctor,torch_ctor,args", [
    (pyro.optim.SGD, torch.optim.SGD, {"lr": 1e-3, "momentum": 0.9}),
    (pyro.optim.AdamW, torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1}),
    (pyro.optim.Adagrad, torch.optim.Adagrad, {"lr": 0.05}),
])
def test_other_fused_optimizers_agree_with_pyro(pyro_ctor, torch_ctor, args):
    ref, _ = _vae_params_after(lambda: pyro_ctor(dict(args)))
    ours, opt = _vae_params_after(lambda: pgm_optim.MultiTensorOptim(torch_ctor, dict(args)))
    _assert_params_close(ours, ref)
    assert opt.optimizer.param_groups[0]["fused"] is True


def test_state_records_the_kernel_defaults_as_pyro_does():
    """A state saved from ours has pyro.optim's param groups: the kernel chosen here is not
    imposed on an optimizer that loads it."""
    _, ref = _vae_params_after(lambda: pyro.optim.Adam({"lr": 0.01}), steps=3)
    ref_state = ref.get_state()
    _, opt = _vae_params_after(lambda: pgm_optim.Adam({"lr": 0.01}), steps=3)
    state = opt.get_state()
    assert state.keys() == ref_state.keys()
    for name, s in state.items():
        assert s["param_groups"] == ref_state[name]["param_groups"], name
        assert s["state"][0].keys() == ref_state[name]["state"][0].keys()
        for key, value in s["state"][0].items():
            torch.testing.assert_close(value, ref_state[name]["state"][0][key])


def test_per_param_args_and_clipping_as_pyro():
    def args(name: str) -> dict:
        return {"lr": 0.05 if name.startswith("decoder") else 0.005}

    clip = {"clip_norm": 0.1}
    ref, _ = _vae_params_after(lambda: pyro.optim.Adam(args, clip))
    ours, opt = _vae_params_after(lambda: pgm_optim.Adam(args, clip))
    _assert_params_close(ours, ref)
    lrs = sorted(g["lr"] for g in opt.optimizer.param_groups)
    assert lrs == [0.005, 0.05]  # two groups, not one optimizer per parameter


def test_one_torch_step_per_svi_step(monkeypatch):
    calls = []
    original = torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step",
                        lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    _vae_params_after(lambda: pgm_optim.Adam({"lr": 0.01}), steps=4)
    assert len(calls) == 4
    # gradients released after the step (torch's set_to_none), not zero tensors as in Pyro
    assert all(p.grad is None for _, p in pyro.get_param_store().named_parameters())
    calls.clear()
    _vae_params_after(lambda: pyro.optim.Adam({"lr": 0.01}), steps=4)
    assert len(calls) == 32  # pyro.optim: one optimizer per parameter


def _alternating_run(make_optim, steps: int = 12) -> dict:
    """A model using param "b" only on odd steps: idle params must not move (momentum)."""
    pyro.clear_param_store()
    opt = make_optim()
    count = {"n": 0}

    def model(x):
        count["n"] += 1
        a = pyro.param("a", torch.tensor(0.5))
        loc = a + pyro.param("b", torch.tensor(-1.0)) if count["n"] % 2 else a
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    svi = SVI(model, lambda x: None, opt, Trace_ELBO())
    x = torch.tensor([1.0, 2.0, 0.5])
    for _ in range(steps):
        svi.step(x)
    return {k: v.detach().clone() for k, v in pyro.get_param_store().items()}


def test_params_absent_from_a_step_stay_put_as_in_pyro():
    ref = _alternating_run(lambda: pyro.optim.Adam({"lr": 0.1}))
    ours = _alternating_run(lambda: pgm_optim.Adam({"lr": 0.1}))
    assert ref.keys() == ours.keys() == {"a", "b"}
    for name in ref:
        torch.testing.assert_close(ours[name], ref[name])


@pytest.mark.parametrize("first,second", [("pyro", "ours"), ("ours", "pyro"), ("ours", "ours")])
def test_state_moves_between_pyro_optim_and_ours(first, second):
    """k steps with one optimizer, get_state -> set_state into another, k more steps equals
    2k steps with pyro.optim.Adam alone."""
    make = {"pyro": lambda: pyro.optim.Adam({"lr": 0.02}),
            "ours": lambda: pgm_optim.Adam({"lr": 0.02})}
    ref, _ = _vae_params_after(make["pyro"], steps=20)

    pyro.clear_param_store()
    torch.manual_seed(0)
    vae, guide = VAE(12, 3, (16,)), AmortizedNormal(12, 3, (16,))
    pyro.set_rng_seed(1)
    opt = make[first]()
    svi = SVI(vae.model, guide, opt, Trace_ELBO())
    for _ in range(10):
        svi.step(_data())
    state = opt.get_state()
    assert len(state) == 8
    opt2 = make[second]()
    opt2.set_state(state)
    svi = SVI(vae.model, guide, opt2, Trace_ELBO())
    for _ in range(10):
        svi.step(_data())
    ours = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    _assert_params_close(ours, ref)


def test_set_state_on_live_params_restores_them():
    pyro.clear_param_store()
    torch.manual_seed(0)
    vae, guide = VAE(12, 3, (16,)), AmortizedNormal(12, 3, (16,))
    opt = pgm_optim.Adam({"lr": 0.02})
    svi = SVI(vae.model, guide, opt, Trace_ELBO())
    svi.step(_data())
    saved = {k: {"state": {0: {kk: vv.clone() for kk, vv in s["state"][0].items()}},
                 "param_groups": s["param_groups"]} for k, s in opt.get_state().items()}
    svi.step(_data())
    opt.set_state(saved)
    now = opt.get_state()
    for name, s in saved.items():
        for key, value in s["state"][0].items():
            torch.testing.assert_close(now[name]["state"][0][key], value)
    assert len(opt.optimizer.param_groups) == 1 and len(opt.optim_objs) == 8


def test_fit_resume_equals_uninterrupted_run(tmp_path):
    """pgm_lab.train.fit checkpoints this optimizer's state and resumes exactly."""
    x = torch.bernoulli(torch.full((40, 12), 0.3), generator=torch.Generator().manual_seed(2))

    def train(epochs: int, resume: bool, ckpt) -> dict:
        pyro.clear_param_store()
        torch.manual_seed(0)
        vae, guide = VAE(12, 3, (16,)), AmortizedNormal(12, 3, (16,))
        fit(vae.model, guide, x, optim=pgm_optim.Adam({"lr": 0.02}), epochs=epochs,
            batch_size=16, seed=3, device="cpu", checkpoint=ckpt, resume=resume, progress=False)
        return {k: v.detach().clone() for k, v in pyro.get_param_store().items()}

    full = train(4, False, tmp_path / "full.pt")
    train(2, False, tmp_path / "part.pt")
    resumed = train(4, True, tmp_path / "part.pt")
    _assert_params_close(resumed, full, rtol=0, atol=0)


@pytest.mark.parametrize("ctor,args", [
    (torch.optim.lr_scheduler.StepLR, {"lr": 0.1}),
    (lambda params, lr: torch.optim.Adam(params, lr), {"lr": 0.1}),
    (torch.optim.Adam, 0.1),
])
def test_bad_constructor_or_args_raise_config_error(ctor, args):
    with pytest.raises(ConfigError, match="expected|must be"):
        pgm_optim.MultiTensorOptim(ctor, args)
