"""Small Pyro models shared by the training-engine tests (also run as a subprocess script)."""

from __future__ import annotations

import os
import signal
import sys

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule


class TinyFactor(PyroModule):
    """x_n ~ N(W z_n + mu, 0.5^2 I), z_n ~ N(0, 1) with an amortized guide; D=4, Z=1."""

    def __init__(self) -> None:
        super().__init__()
        self.decoder = torch.nn.Linear(1, 4)
        self.encoder = torch.nn.Linear(4, 2)

    def model(self, x: torch.Tensor) -> None:
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([x.shape[0], 1]).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), 0.5).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        pyro.module("encoder", self.encoder)
        out = self.encoder(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(out[:, :1], out[:, 1:].exp()).to_event(1))


def tiny_data(n: int = 96) -> torch.Tensor:
    gen = torch.Generator().manual_seed(123)
    z = torch.randn(n, 1, generator=gen)
    return z @ torch.tensor([[1.0, -2.0, 0.5, 3.0]]) + 0.3 * torch.randn(n, 4, generator=gen)


def run(ckpt: str, epochs: int, resume: bool, kill_at_step: int | None) -> TinyFactor:
    from pgm_lab.train import fit

    torch.manual_seed(0)
    module = TinyFactor()
    calls = {"n": 0}

    def guide(x: torch.Tensor) -> None:
        calls["n"] += 1
        if kill_at_step is not None and calls["n"] == kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)
        module.guide(x)

    fit(module.model, guide, tiny_data(), optim=pyro.optim.Adam({"lr": 0.05}), epochs=epochs,
        batch_size=16, seed=7, device="cpu", checkpoint=ckpt, resume=resume, progress=False)
    return module


if __name__ == "__main__":
    ckpt, epochs, resume, kill, out = sys.argv[1:6]
    mod = run(ckpt, int(epochs), resume == "1", int(kill) if kill != "-" else None)
    torch.save({k: v.detach().clone() for k, v in mod.state_dict().items()}, out)
