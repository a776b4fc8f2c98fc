"""One rank of the torch.distributed tests: ``python _distributed_worker.py MODE OUT [ARGS]``.

Started by tests/test_distributed.py with torchrun's environment (RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT); writes its results to ``OUT.<rank>``.
"""

from __future__ import annotations

import os
import sys
import warnings
from datetime import timedelta

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule

TIMEOUT = timedelta(seconds=15)


class Regression(PyroModule):
    """y_n ~ N(w * linear(x_n), scale^2) with a global latent w (a Delta guide): every step is
    deterministic given the minibatch, so any number of ranks must give the same result."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3, 1)

    def model(self, x: torch.Tensor, y: torch.Tensor) -> None:
        pyro.module("linear", self.linear)
        scale = pyro.param("scale", torch.tensor(1.0), constraint=constraints.positive)
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Normal(w * self.linear(x).squeeze(-1), scale), obs=y)

    def guide(self, x: torch.Tensor, y: torch.Tensor) -> None:
        loc = pyro.param("w_loc", torch.tensor(0.5))
        if x.shape[0] < 10 or "late" in pyro.get_param_store():
            # created at the last (short) step of epoch 0, from each rank's own random numbers
            loc = loc + 0.1 * pyro.param("late", lambda: torch.randn(()))
        pyro.sample("w", dist.Delta(loc))


def regression_data(n: int = 63) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(n, 3, generator=gen)
    return x, x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3 * torch.randn(n, generator=gen)


def jitter(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A transform drawing from fit's shuffling generator (must stay in step on all ranks)."""
    return x + 0.01 * torch.randn(x.shape, generator=gen)


def train(epochs: int, checkpoint: str | None = None, resume: bool = False,
          distributed: bool | str = "auto", callbacks: tuple = ()) -> dict[str, torch.Tensor]:
    """Fit :class:`Regression` (batch 20 of 63 rows: uneven shares) and return the params."""
    from pgm_lab.train import fit

    pyro.clear_param_store()
    torch.manual_seed(0)
    module = Regression()
    history = fit(module.model, module.guide, regression_data(), epochs=epochs, batch_size=20,
                  seed=3, device="cpu", optim=pyro.optim.Adam({"lr": 0.05}),
                  transform=jitter, checkpoint=checkpoint, resume=resume, progress=False,
                  distributed=distributed, callbacks=callbacks)
    params = {name: value.detach().clone()
              for name, value in pyro.get_param_store().named_parameters()}
    params["loss"] = torch.tensor(history.loss, dtype=torch.float64)
    return params


def main() -> None:
    mode, out, *args = sys.argv[1:]
    import pgm_lab.checkpoint as checkpoint_io
    from pgm_lab.distributed import init_process_group

    ctx = init_process_group(timeout=TIMEOUT)
    result: dict = {}
    if mode == "train":  # args: epochs, checkpoint ("-": none), resume (0/1)
        epochs, ckpt, resume = int(args[0]), args[1], args[2] == "1"
        if ctx.rank and ckpt != "-":  # as on another node's disk: rank 0's file is not there
            ckpt = os.path.join(os.path.dirname(ckpt), f"rank{ctx.rank}", "ckpt.pt")
        writes = []
        for name in ("save_atomic", "write_text_atomic", "check_writable"):
            original = getattr(checkpoint_io, name)

            def spy(*a, _original=original, _name=name, **k):  # noqa: ANN002, ANN003, ANN202
                writes.append(_name)
                return _original(*a, **k)

            setattr(checkpoint_io, name, spy)
        result = train(epochs, None if ckpt == "-" else ckpt, resume)
        result["writes"] = writes
    elif mode == "die":  # rank 1 exits after the first epoch; rank 0 must fail, not hang
        torch.save({"nan": nan_on_rank_1(ctx.rank), "window": failure_in_window(ctx.rank),
                    "window_new_param": failure_in_window(ctx.rank, new_param=True),
                    "bad_data": bad_data_in_window()}, f"{out}.{ctx.rank}")

        def die(epoch: int, record: object) -> None:
            if ctx.rank == 1:
                os._exit(3)

        train(3, callbacks=(die,))
    elif mode == "evaluate":
        from pgm_lab.errors import InferenceError
        from pgm_lab.infer import ais, elbo, iwae, iwae_curve

        lg, x = evaluation_problem()
        rows = set()

        def model(x: torch.Tensor) -> None:  # records the points this rank evaluates
            rows.add(x.shape[0])
            lg.model(x)

        result = {"ais": ais(model, lg.exact_guide, x, num_steps=5, num_chains=2),
                  "elbo": elbo(model, lg.exact_guide, x, num_particles=3),
                  "iwae": iwae(model, lg.exact_guide, x, num_particles=7),
                  "curve": iwae_curve(model, lg.exact_guide, x, ks=(1, 2, 4))._asdict()}
        result["rows"] = sorted(rows)
        result.update(train_rbm(ctx.rank))
        result["noise"] = sharded_noise()
        try:  # data that differ between ranks are refused, not silently mixed
            iwae(lg.model, lg.exact_guide, x + ctx.rank, num_particles=2)
        except InferenceError as exc:
            result["other_data"] = str(exc)
    torch.save(result, f"{out}.{ctx.rank}")
    torch.distributed.barrier()  # rank 0 hosts the rendezvous store: leave together
    torch.distributed.destroy_process_group()


def nan_on_rank_1(rank: int) -> str:
    """The TrainingError of a run whose loss turns NaN on rank 1 only (epoch 1, step 0): the
    loss is averaged with the gradients, so both ranks must stop at that step."""
    from pgm_lab.errors import TrainingError
    from pgm_lab.train import fit

    pyro.clear_param_store()
    module, calls = Regression(), {"n": 0}

    def model(x: torch.Tensor, y: torch.Tensor) -> None:
        calls["n"] += 1
        module.model(x, y)
        if rank == 1 and calls["n"] == 6:  # one call to create the params, 4 steps per epoch
            pyro.factor("bad", torch.tensor(float("nan")))

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pyro's "Encountered NaN"
            fit(model, module.guide, regression_data(), epochs=3, batch_size=20, device="cpu",
                progress=False)
    except TrainingError as exc:
        return str(exc)
    return "no error"


def failure_in_window(rank: int, new_param: bool = False) -> str:
    """The error of each rank when rank 1's model raises at epoch 1, step 1, inside a window
    of 3 steps (0-2) whose loss is read once: every rank must stop at the window's end. With
    ``new_param`` the model creates a parameter at step 2, which rank 0 would broadcast to a
    rank 1 that no longer runs the model."""
    pyro.clear_param_store()
    module, calls = Regression(), {"n": 0}

    def model(x: torch.Tensor, y: torch.Tensor) -> None:
        calls["n"] += 1
        if rank == 1 and calls["n"] == 7:  # one call to create the params, 4 steps per epoch
            raise RuntimeError("rank 1's model broke")
        module.model(x, y)
        if new_param and calls["n"] >= 8:  # epoch 1, step 2 on
            pyro.factor("prior", -pyro.param("later", torch.tensor(0.5)) ** 2)

    try:
        fit_steps = []
        from pgm_lab import train as train_module

        step = train_module._step

        def counting(*a, **k):  # noqa: ANN002, ANN003, ANN202
            fit_steps.append(a[3])
            return step(*a, **k)

        train_module._step = counting
        train_module.fit(model, module.guide, regression_data(), epochs=3, batch_size=20,
                         device="cpu", progress=False, check_every=3)
    except Exception as exc:  # noqa: BLE001 -- the test compares the ranks' errors
        return f"{type(exc).__name__}: {exc} | last step: {fit_steps[-1]}"
    finally:
        train_module._step = step
    return "no error"


def bad_data_in_window() -> str:
    """Each rank's error when rank 1's share of the global minibatch of step 1 holds a
    non-binary pixel, inside a window of 3 steps (0-2) run without validation after step 0."""
    from pgm_lab.guides import AmortizedNormal
    from pgm_lab.models import VAE
    from pgm_lab.train import fit

    pyro.clear_param_store()
    calls = {"n": 0}

    def poison(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 3:  # the first rows (to create the params), steps 0, 1
            x = x.clone()
            x[6, 3] = 0.5  # row 6 of 8: rank 1's share
        return x

    torch.manual_seed(0)
    vae, guide = VAE(12, 2, (8,)), AmortizedNormal(12, 2, (8,))
    x = torch.bernoulli(torch.full((48, 12), 0.4), generator=torch.Generator().manual_seed(0))
    try:
        fit(vae.model, guide, x, epochs=1, batch_size=8, device="cpu", progress=False,
            transform=poison, shuffle=False, check_every=3)
    except Exception as exc:  # noqa: BLE001 -- the test compares the ranks' errors
        return f"{type(exc).__name__}: {exc}"
    return "no error"


def train_rbm(rank: int) -> dict:
    """PCD-1 on 2 ranks from rank-dependent initial weights: the broadcast and the averaged
    gradients must leave equal parameters, each rank with its own Gibbs noise."""
    from pgm_lab.rbm import RBM, ContrastiveDivergence
    from pgm_lab.train import fit

    pyro.clear_param_store()
    torch.manual_seed(rank)
    rbm = RBM(6, 3)
    v = (torch.rand(40, 6, generator=torch.Generator().manual_seed(2)) < 0.5).float()
    cd = ContrastiveDivergence(k=1, persistent=True, seed=4)
    fit(rbm, None, v, loss=cd, optim=pyro.optim.SGD({"lr": 0.1}), epochs=2, batch_size=10,
        device="cpu", progress=False)
    pyro.clear_param_store()
    torch.manual_seed(rank)
    by_fit = RBM(6, 3)
    by_fit.fit(v, epochs=2, batch_size=10, device="cpu")  # engine "auto" under torchrun
    return {"rbm": {k: t.detach().clone() for k, t in rbm.state_dict().items()},
            "rbm_fit": {k: t.detach().clone() for k, t in by_fit.state_dict().items()},
            "gibbs_seed": cd._generator.initial_seed()}


def noisy_model(x: torch.Tensor) -> None:
    """z_n ~ N(0, 1), x_n ~ N(z_n, 1): with the prior as guide, the one-particle ELBO of a
    point is log N(x_n; z_n, 1), so every per-point estimate shows its own draw."""
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def noisy_guide(x: torch.Tensor) -> None:
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))


def sharded_noise(n: int = 2000) -> dict[str, torch.Tensor | str]:
    """Sharded bounds of ``n`` identical points, each twice from the same global seed, and the
    global generator's next value after each; AIS (its own seed) after two other states, and
    the message of a bad AIS seed."""
    from pgm_lab.errors import ConfigError
    from pgm_lab.infer import ais, elbo, iwae

    x = torch.zeros(n, dtype=torch.float64)
    out: dict[str, torch.Tensor | str] = {}
    for run in ("first", "again"):
        torch.manual_seed(7)
        out[f"elbo_{run}"] = elbo(noisy_model, noisy_guide, x, num_particles=1)
        out[f"iwae_{run}"] = iwae(noisy_model, noisy_guide, x[:20], num_particles=3)
        out[f"next_{run}"] = torch.rand((), dtype=torch.float64)
    for run, state in (("first", 11), ("again", 12)):
        torch.manual_seed(state)
        out[f"ais_{run}"] = ais(noisy_model, noisy_guide, x[:8], num_steps=3, num_chains=2,
                                leapfrog_steps=2, seed=3)
        out[f"ais_next_{run}"] = torch.rand((), dtype=torch.float64)
    try:
        ais(noisy_model, noisy_guide, x[:8], num_steps=3, seed=-1)
    except ConfigError as exc:
        out["bad_seed"] = str(exc)
    return out


def evaluation_problem() -> tuple:
    """The linear-Gaussian oracle and 11 points (uneven shares): with the exact posterior as
    guide every log weight equals log p(x_n), whatever the random numbers."""
    from pgm_lab.models import LinearGaussian

    w = torch.tensor([[1.0, 0.5], [-0.3, 2.0], [0.7, -1.0]], dtype=torch.float64)
    lg = LinearGaussian(w, torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64), 0.5)
    return lg, lg.sample(11, seed=1)


if __name__ == "__main__":
    main()
