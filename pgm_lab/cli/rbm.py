"""``pgm-lab rbm``: train a binary RBM by CD/PCD and evaluate its log-likelihood.

Trains on a statically binarized dataset, reports train/test log-likelihood -- exact when the
smaller layer has at most ``--max-exact-units`` units, else AIS with its ±3σ interval and the
reverse-AIS check -- plus pseudo-likelihood and reconstruction error, and writes
``results.json``, ``rbm.pt`` (the state dict), ``samples.png`` (Gibbs samples),
``filters.png`` (weights of each hidden unit), ``curves.png`` (training curves) and
``trace.png`` (ArviZ trace of the sampling chains) to ``--out``. ``results.json`` is strict
JSON: an unbounded end of an AIS interval is written as ``null``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from ..checkpoint import save_atomic
from ..distributed import current, init_process_group, is_main_process, launched, leave
from ..rbm.partition import MAX_EXACT_UNITS
from ._args import (
    SEED_MAX,
    HelpFormatter,
    device,
    float_in,
    input_dir,
    int_in,
    output_dir,
    output_file,
    plain,
    seed,
)

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("rbm", help="train and evaluate a restricted Boltzmann machine",
                              description=plain(__doc__), formatter_class=HelpFormatter)
    p.add_argument("--dataset", default="digits", choices=("digits", "mnist", "bars"),
                   help="training data (statically binarized)")
    p.add_argument("--data-dir", type=input_dir, default=None,
                   help="torchvision root for --dataset mnist")
    p.add_argument("--hidden", type=int_in(1, 100_000), default=100,
                   help="number of hidden units H, at most 100000")
    p.add_argument("--method", default="pcd", choices=("cd", "pcd"),
                   help="contrastive divergence, or persistent CD")
    p.add_argument("--k", type=int_in(1, 10_000), default=1,
                   help="Gibbs steps per update, at most 10000")
    p.add_argument("--epochs", type=int_in(1, 1_000_000), default=10,
                   help="passes over the training data, at least 1")
    p.add_argument("--batch-size", type=int_in(1, 1_000_000), default=10,
                   help="examples per update")
    p.add_argument("--lr", type=float_in(0, lo_open=True), default=0.06,
                   help="learning rate, > 0")
    p.add_argument("--momentum", type=float_in(0, 1, hi_open=True), default=0.0,
                   help="SGD momentum, in [0, 1)")
    p.add_argument("--weight-decay", type=float_in(0), default=0.0,
                   help="L2 penalty on the weights W, >= 0")
    p.add_argument("--num-chains", type=int_in(1, 100_000), default=None,
                   help="persistent chains of PCD, at most 100000 (default: one per example "
                        "of a batch)")
    p.add_argument("--seed", type=seed, default=0,
                   help=f"random seed, an integer in [0, {SEED_MAX}]")
    p.add_argument("--device", type=device, default="auto", help="'auto', 'cpu' or 'cuda[:i]'")
    p.add_argument("--max-exact-units", type=int_in(0, MAX_EXACT_UNITS), default=20,
                   help="use exact log Z when min(V, H) <= this, else AIS (exact log Z "
                        f"enumerates 2^units states: at most {MAX_EXACT_UNITS})")
    p.add_argument("--ais-runs", type=int_in(2, 100_000), default=100,
                   help="AIS runs, in [2, 100000]")
    p.add_argument("--ais-betas", type=int_in(10, 10_000_000), default=14500,
                   help="AIS intermediate temperatures, in [10, 10^7]")
    p.add_argument("--gibbs-steps", type=int_in(0, 10_000_000), default=1000,
                   help="Gibbs steps for the sample grid, at most 10^7")
    p.add_argument("--checkpoint", type=output_file, default=None,
                   help="checkpoint file, rewritten after every epoch (needed by --resume)")
    p.add_argument("--resume", nargs="?", const=True, default=False, choices=["force"],
                   metavar="force",
                   help="continue training from --checkpoint (more --epochs is allowed; other "
                        "settings or data are refused unless 'force' is given)")
    p.add_argument("--out", type=output_dir, default="runs/rbm",
                   help="output folder (created if missing)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars (default: on a terminal outside CI)")
    p.set_defaults(func=run, _parser=p)
    return p


def _log_likelihoods(rbm, train: torch.Tensor, test: torch.Tensor, args) -> dict:
    if min(rbm.n_visible, rbm.n_hidden) <= args.max_exact_units:
        log_z = rbm.log_partition("exact", max_units=args.max_exact_units)
        return {"method": "exact", "log_z": float(log_z),
                "train": float(rbm.log_prob(train, log_z=log_z).mean()),
                "test": float(rbm.log_prob(test, log_z=log_z).mean())}
    res = rbm.log_partition("ais", num_runs=args.ais_runs, num_betas=args.ais_betas,
                            base_data=train, reverse=True, return_result=True, seed=args.seed)
    out = {"method": "ais", "log_z": float(res.log_z), "ais": res.to_dict()}
    for split, x in (("train", train), ("test", test)):
        with torch.no_grad():
            neg_f = float((-rbm.free_energy(rbm.check_visible(x))).mean())
        out[split] = neg_f - float(res.log_z)
        # a larger log Z means a smaller log-likelihood: the interval flips
        out[f"{split}_interval"] = [neg_f - float(res.log_z_upper),
                                    neg_f - float(res.log_z_lower)]
        out[f"{split}_reverse"] = neg_f - float(res.reverse.log_z)
    return out


def _check_args(args: argparse.Namespace) -> None:
    """Refuse combinations of flags that their types cannot check one by one."""
    if args.resume and args.checkpoint is None:
        args._parser.error("--resume needs --checkpoint PATH")
    if args.dataset == "mnist" and args.data_dir is None:
        args._parser.error("--dataset mnist needs --data-dir DIR (a torchvision root with "
                           "MNIST/raw); try --dataset digits")


def _json_safe(obj: object) -> object:
    """``obj`` with non-finite floats as ``None``: an AIS interval is unbounded when the
    weights' relative error exceeds 1/3, and ``json.dumps`` would write ``-Infinity``, which
    strict JSON readers (``jq``, JavaScript) reject."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def run(args: argparse.Namespace) -> int:
    from pyro.infer import MCMC

    from ..data import image_shape, load_dataset
    from ..plots import image_grid, plot_curves
    from ..rbm import RBM, GibbsKernel
    from ..rbm.diagnostics import plot_trace, summary, to_inference_data
    from ..train import resolve_device

    _check_args(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = load_dataset(args.dataset, "train", data_dir=args.data_dir, binarize="static")
    test = load_dataset(args.dataset, "test", data_dir=args.data_dir, binarize="static")
    device = resolve_device(args.device)
    rbm = RBM(train.shape[1], args.hidden, data=train, seed=args.seed).to(device)
    test_pl: list[float] = []

    # exact pseudo-likelihood costs V free energies per example: sklearn's estimator beyond 256
    exact_pl = train.shape[1] <= 256
    pl_gen = torch.Generator().manual_seed(args.seed)

    def pseudo_ll(x: torch.Tensor) -> float:
        return float(rbm.pseudo_likelihood(x, exact=exact_pl, generator=pl_gen).mean())

    def track(epoch, record) -> None:  # noqa: ANN001
        test_pl.append(pseudo_ll(test))

    if launched():  # under torchrun: join the process group (fit trains data-parallel in it)
        init_process_group(device)
    t0 = time.perf_counter()
    history = rbm.fit(train, method=args.method, k=args.k, epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                      weight_decay=args.weight_decay, num_chains=args.num_chains,
                      seed=args.seed, device=device, checkpoint=args.checkpoint,
                      resume=args.resume, progress=args.progress, callbacks=[track])
    train_seconds = time.perf_counter() - t0
    if current() is not None:  # under torchrun: the ranks trained together, rank 0 reports
        main = is_main_process()
        leave()  # before rank 0's evaluation, which may outlast the group's timeout
        if not main:
            return 0
    rbm = rbm.cpu()

    ll = _log_likelihoods(rbm, train, test, args)
    gen = torch.Generator().manual_seed(args.seed)
    v0 = torch.bernoulli(torch.full((100, rbm.n_visible), 0.5), generator=gen)
    samples = rbm.gibbs(v0, args.gibbs_steps, generator=gen)
    shape = image_shape(rbm.n_visible)
    image_grid(torch.sigmoid(rbm.visible_logits(samples.h)).detach(), out / "samples.png",
               image_shape=shape, title=f"100 Gibbs chains after {args.gibbs_steps} steps "
                                        "from random images (p(v = 1 | h))")
    image_grid(rbm.W.detach().T[:100], out / "filters.png", image_shape=shape, scale_each=True,
               title="filters: the weights W[:, j] of each hidden unit, each scaled to [0, 1]")
    plot_curves({"CD objective (train)": history.loss}, out / "curves.png",
                ylabel="F(data) - F(model samples), per example",
                title=f"{args.method}-{args.k} training objective")
    if test_pl:
        plot_curves({"test pseudo-log-likelihood": test_pl}, out / "pseudo_likelihood.png",
                    ylabel="nats per example",
                    title="test pseudo-log-likelihood (higher is better)")

    mcmc = MCMC(GibbsKernel(rbm, batch_shape=(4,), seed=args.seed), num_samples=500,
                warmup_steps=100, disable_progbar=True)
    mcmc.run()
    idata = to_inference_data(mcmc, rbm, include_units=False)
    plot_trace(idata, out / "trace.png")
    diag = summary(idata)

    results = {
        "dataset": args.dataset, "n_train": int(train.shape[0]), "n_test": int(test.shape[0]),
        "n_visible": rbm.n_visible, "n_hidden": rbm.n_hidden, "method": args.method,
        "k": args.k, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "momentum": args.momentum, "weight_decay": args.weight_decay,
        "train_seconds": train_seconds, "loss": history.loss,
        "log_likelihood": ll,
        "pseudo_likelihood": {
            "estimator": "exact" if exact_pl else "sklearn (one random unit per example)",
            "train": pseudo_ll(train), "test": pseudo_ll(test), "test_per_epoch": test_pl},
        "reconstruction_error": {"train": float(rbm.reconstruction_error(train).mean()),
                                 "test": float(rbm.reconstruction_error(test).mean())},
        "gibbs_diagnostics": {name: {"r_hat": float(diag.loc[name, "r_hat"]),
                                     "ess_bulk": float(diag.loc[name, "ess_bulk"])}
                              for name in diag.index},
    }
    (out / "results.json").write_text(json.dumps(_json_safe(results), indent=2,
                                                  allow_nan=False))
    save_atomic(rbm.state_dict(), out / "rbm.pt")
    how = "exact" if ll["method"] == "exact" else "AIS"
    print(f"| {args.dataset} | RBM {rbm.n_visible}x{rbm.n_hidden} {args.method}-{args.k} | "
          f"{args.epochs} epochs, {train_seconds:.1f} s |")
    print("| split | log-likelihood (" + how + ") | pseudo-LL | recon. error |")
    print("|---|---|---|---|")
    for split in ("train", "test"):
        extra = ""
        if f"{split}_interval" in ll:
            lo, hi = ll[f"{split}_interval"]
            extra = f" [{lo:.2f}, {hi:.2f}], reverse {ll[f'{split}_reverse']:.2f}"
        print(f"| {split} | {ll[split]:.3f}{extra} | "
              f"{results['pseudo_likelihood'][split]:.3f} | "
              f"{results['reconstruction_error'][split]:.3f} |")
    print(f"wrote {out / 'results.json'} and PNGs to {out}")
    return 0
