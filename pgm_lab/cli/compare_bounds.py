"""``pgm-lab compare-bounds``: train VAEs with ELBO and IWAE objectives, compare test bounds.

For each training objective (default ``elbo iwae-5 iwae-50``) a fresh VAE and amortized guide
are trained with :func:`pgm_lab.train.fit` (dynamic binarization, checkpoints), then evaluated
on the statically binarized test set with IWAE-k for every ``--eval-k`` (default
``1 5 50 5000``; ``k = 1`` is the ELBO) from one stream of ``max(k)`` particles per point
(:func:`pgm_lab.infer.iwae_curve`), plus active units, ESS and PSIS k-hat, and measured
against an annealed importance sampling estimate of log p(x) (:func:`pgm_lab.infer.ais`,
``--ais-steps``, ``--ais-chains``) and against importance sampling with the prior as proposal
at the largest k. ``--bdmc N`` adds the bidirectional Monte Carlo sandwich of log p(x) on N
images simulated from each trained model (:func:`pgm_lab.infer.bdmc`); ``--model
FILE.py:FACTORY`` trains the user's ``(model, guide)`` pair in place of the VAE. Writes
``results.json`` (one entry per training objective), PNG figures and image grids to
``--out``, and prints a Markdown table. Burda, Grosse & Salakhutdinov (2015), "Importance
Weighted Autoencoders"; Wu, Burda, Salakhutdinov & Grosse (2017), "On the quantitative
analysis of decoder-based generative models"; Grosse, Ghahramani & Adams (2015),
"Sandwiching the marginal likelihood using bidirectional Monte Carlo".
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import pyro
import torch

from ..data import DATASETS, dynamic_binarize, image_shape, load_dataset
from ..distributed import is_main_process
from ..errors import ConfigError
from ..guides import AmortizedNormal
from ..infer import (
    ESTIMATORS,
    IWAE,
    active_units,
    bdmc,
    posterior_means,
    simulate,
    standard_error,
)
from ..infer.report import evaluate_model
from ..models import VAE
from ..optim import Adam
from ..plots import image_grid, plot_curves, plot_errorbars
from ..train import fit, resolve_device
from ._args import (
    SEED_MAX,
    HelpFormatter,
    device,
    float_in,
    input_dir,
    int_in,
    output_dir,
    plain,
    seed,
)
from ._factory import ModelFactory, build_pair, model_factory

__all__ = ["register", "run", "parse_objective", "compare_bounds"]

DEFAULT_OBJECTIVES = ("elbo", "iwae-5", "iwae-50")
DEFAULT_EVAL_K = (1, 5, 50, 5000)
DEFAULT_AIS_STEPS = 300  # digits, 360 test images: ~30 s CPU per model on one thread
DEFAULT_AIS_CHAINS = 16
MAX_TRAIN_K = 10_000


def parse_objective(spec: str) -> tuple[str, int]:
    """``"elbo"`` -> ``("elbo", 1)``; ``"iwae-K"`` -> ``("iwae", K)``."""
    s = spec.strip().lower()
    if s == "elbo":
        return "elbo", 1
    # isascii: str.isdigit accepts superscripts such as '²', which int() rejects.
    if s.startswith("iwae-") and s[5:].isascii() and s[5:].isdigit() and int(s[5:]) >= 1:
        return "iwae", int(s[5:])
    raise ConfigError(f"unknown objective {spec!r}; expected 'elbo' or 'iwae-K' with K >= 1, "
                      "e.g. --objectives elbo iwae-5 iwae-50")


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "compare-bounds",
        help="train VAEs with ELBO / IWAE objectives and compare test ELBO and IWAE-k bounds",
        description=plain(__doc__.split("\n\n")[1]),
        formatter_class=HelpFormatter)
    p.add_argument("--dataset", default="digits", choices=[d for d in DATASETS if d != "bars"],
                   help="training and test images")
    p.add_argument("--data-dir", type=input_dir, default=None,
                   help="torchvision root with MNIST/raw (mnist)")
    p.add_argument("--objectives", nargs="+", type=_objective, default=list(DEFAULT_OBJECTIVES),
                   help=f"training objectives: elbo, iwae-K (K at most {MAX_TRAIN_K})")
    p.add_argument("--estimator", default="standard", choices=ESTIMATORS,
                   help="gradient estimator of the IWAE objectives")
    # --epochs 0 would evaluate untrained networks: refused (at least one epoch).
    p.add_argument("--epochs", type=int_in(1, 1_000_000), default=50,
                   help="passes over the training data, at least 1")
    p.add_argument("--batch-size", type=int_in(1, 1_000_000), default=100,
                   help="training examples per step")
    p.add_argument("--lr", type=float_in(0, lo_open=True), default=3e-3,
                   help="Adam learning rate, > 0")
    p.add_argument("--z-dim", type=int_in(1, 10_000), default=8,
                   help="latent size, at most 10000")
    p.add_argument("--hidden", type=int_in(1, 100_000), nargs="+", default=[128],
                   help="hidden widths of encoder and decoder, each at most 100000")
    p.add_argument("--eval-k", type=int_in(1, 100_000), nargs="+", default=list(DEFAULT_EVAL_K),
                   help="numbers of particles of the test bounds, each at most 100000")
    p.add_argument("--ais-steps", type=int_in(1, 100_000), default=DEFAULT_AIS_STEPS,
                   help="annealing steps of the AIS estimate of log p(x) (and of --bdmc), at "
                        "most 100000; more steps tighten it, at 10 gradient evaluations each")
    p.add_argument("--ais-chains", type=int_in(1, 10_000), default=DEFAULT_AIS_CHAINS,
                   help="AIS chains per test image, at most 10000")
    p.add_argument("--bdmc", type=int_in(1, 100_000), default=None, metavar="N",
                   help="also sandwich log p(x) between forward and reverse AIS on N images "
                        "simulated from each trained model, at most 100000")
    p.add_argument("--model", type=model_factory, default=None, metavar="FILE.py:FACTORY",
                   help="train FACTORY(D)'s (model, guide) instead of the VAE (D: pixels per "
                        "image; the file is imported, which runs it; --z-dim and --hidden are "
                        "then unused)")
    p.add_argument("--n-train", type=int_in(2, 10**9), default=None,
                   help="use only the first N train images")
    p.add_argument("--n-test", type=int_in(2, 10**9), default=None,
                   help="use only the first N test images")
    p.add_argument("--eval-batch-size", type=int_in(1, 10**9), default=None,
                   help="test points per evaluation batch (bounds memory on large test sets)")
    p.add_argument("--seed", type=seed, default=0,
                   help=f"random seed, an integer in [0, {SEED_MAX}]")
    p.add_argument("--device", type=device, default="auto", help="'auto', 'cpu' or 'cuda[:i]'")
    p.add_argument("--threads", type=int_in(1, 1024), default=1,
                   help="torch CPU threads (1 is fastest for the small default networks)")
    p.add_argument("--out", type=output_dir, default="runs/compare-bounds",
                   help="output folder (created if missing)")
    p.add_argument("--resume", nargs="?", const=True, default=False, choices=["force"],
                   metavar="force",
                   help="continue from the checkpoints in OUT/checkpoints (more --epochs is "
                        "allowed; other settings or data are refused unless 'force' is given)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars (default: on a terminal outside CI)")
    p.set_defaults(func=run, _parser=p)
    return p


def _objective(spec: str) -> str:
    """argparse type of one ``--objectives`` entry: checked by :func:`parse_objective`, with
    K at most ``MAX_TRAIN_K`` (K particles per example per step)."""
    try:
        _, k = parse_objective(spec)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    if k > MAX_TRAIN_K:
        raise argparse.ArgumentTypeError(f"expected 'iwae-K' with K <= {MAX_TRAIN_K}, got "
                                         f"{spec!r}; try iwae-50")
    return spec


def _check_args(args: argparse.Namespace) -> list[tuple[str, int]]:
    """The objectives of ``args``; every flag was checked by its argparse type."""
    objectives = [parse_objective(o) for o in args.objectives]
    names = [_run_name(o, k, args.estimator) for o, k in objectives]
    if len(set(names)) != len(names):
        args._parser.error(f"expected distinct --objectives, got duplicates in "
                           f"{args.objectives}")
    if args.dataset == "mnist" and args.data_dir is None:
        args._parser.error("--dataset mnist needs --data-dir DIR (a torchvision root with "
                           "MNIST/raw); try --dataset digits")
    return objectives


def _run_name(objective: str, k: int, estimator: str) -> str:
    if objective == "elbo":
        return "elbo" if estimator == "standard" else f"elbo-{estimator}"
    return f"iwae-{k}" if estimator == "standard" else f"iwae-{k}-{estimator}"


def _loss(objective: str, k: int, estimator: str) -> pyro.infer.ELBO:
    # The ELBO baseline is Pyro's own Trace_ELBO (IWAE with K = 1 equals it, see tests).
    if objective == "elbo" and estimator == "standard":
        return pyro.infer.Trace_ELBO()
    return IWAE(num_particles=k, estimator=estimator)


def compare_bounds(args: argparse.Namespace) -> dict[str, Any]:
    """Run the whole job for parsed ``args``; returns the ``results.json`` dictionary."""
    objectives = _check_args(args)
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x_train = load_dataset(args.dataset, "train", data_dir=args.data_dir)
    x_test = load_dataset(args.dataset, "test", data_dir=args.data_dir, binarize="static",
                          seed=args.seed)
    x_train = x_train[: args.n_train] if args.n_train else x_train
    x_test = (x_test[: args.n_test] if args.n_test else x_test).to(device)
    d = int(x_train.shape[1])
    eval_k = sorted(set(args.eval_k))
    runs, curves = [], {}
    reference: dict[int, torch.Tensor] | None = None  # per-point bounds of the first run
    for objective, k in objectives:
        name = _run_name(objective, k, args.estimator)
        # pgm_lab.optim.Adam: the same updates as pyro.optim.Adam with one (fused where the
        # device has the kernel) optimizer for all parameters instead of one per parameter.
        pyro.clear_param_store()  # every run starts from the same initialization
        torch.manual_seed(args.seed)
        vae, model, guide = _build(args.model, d, args.z_dim, args.hidden, device)
        history = fit(model, guide, x_train, loss=_loss(objective, k, args.estimator),
                      optim=Adam({"lr": args.lr}), epochs=args.epochs,
                      batch_size=args.batch_size, seed=args.seed, device=device,
                      checkpoint=out / "checkpoints" / f"{name}.pt", resume=args.resume,
                      progress=args.progress, transform=dynamic_binarize, desc=f"train {name}",
                      num_threads=args.threads)
        t0 = time.perf_counter()
        # Every run sees the same random numbers, also after a resume (seeded, then restored).
        evaluation = evaluate_model(
            model, guide, x_test, ks=tuple(eval_k), ais_steps=args.ais_steps,
            ais_chains=args.ais_chains, seed=(args.seed + 1) % (SEED_MAX + 1),
            batch_size=args.eval_batch_size, progress=args.progress)
        eval_seconds = time.perf_counter() - t0
        est, summary = evaluation.curve, evaluation.bounds
        units = None if vae is None else active_units(posterior_means(guide, x_test))
        run = {
            "objective": objective,
            "k_train": k,
            "estimator": args.estimator,
            "bounds": {str(kk): float(b.mean()) for kk, b in est.bounds.items()},
            "stderr": {str(kk): standard_error(b) for kk, b in est.bounds.items()},
            "active_units": units,
            "train_seconds": round(history.seconds, 3),
            "eval_seconds": round(eval_seconds, 3),
            "train_loss": history.loss,
            "ess_mean": float(est.ess.mean()),
            "khat_median": None if est.khat is None else float(est.khat.median()),
            "khat_frac_above_0.7": None if est.khat is None
            else float((est.khat > 0.7).double().mean()),
            "ais": {"mean": summary.ais, "stderr": summary.ais_stderr},
            "gap_to_ais": {str(kk): {"mean": summary.gap_to_ais[kk],
                                     "stderr": summary.gap_stderr[kk]} for kk in eval_k},
            "prior_is": {str(kk): v for kk, v in summary.prior_is.items()},
        }
        if args.bdmc:
            run["bdmc"] = _sandwich(model, guide, args.bdmc, d, args, device)
        if reference is None:
            reference = est.bounds
        # Paired over test points (same images): far more precise than the unpaired stderr.
        diffs = {kk: est.bounds[kk] - reference[kk] for kk in eval_k}
        run["delta_vs_first"] = {str(kk): float(d.mean()) for kk, d in diffs.items()}
        run["delta_stderr"] = {str(kk): standard_error(d) for kk, d in diffs.items()}
        runs.append(run)
        curves[name] = history.loss
        if not is_main_process():  # under torchrun: every rank evaluates, rank 0 writes
            continue
        if vae is not None:
            _save_grids(vae, guide, x_test, out, name, args.seed)
        _plot_bounds(runs, out / "bounds_vs_k.png", args.estimator, args.ais_steps)
    if is_main_process():
        plot_curves(curves, out / "training_curves.png",
                    ylabel="training objective: negative bound (nats per example)",
                    title="training objective (each curve its own bound)\n"
                          "lower is better within a curve; not comparable across curves",
                    legend_title="objective")
    results = {
        "dataset": args.dataset,
        "n_train": int(x_train.shape[0]),
        "n_test": int(x_test.shape[0]),
        "eval_k": eval_k,
        "config": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                   "z_dim": args.z_dim, "hidden": list(args.hidden), "seed": args.seed,
                   "device": str(device), "estimator": args.estimator,
                   "model": "vae" if args.model is None else args.model.spec,
                   "ais_steps": args.ais_steps, "ais_chains": args.ais_chains,
                   "bdmc": args.bdmc},
        "runs": runs,
    }
    if is_main_process():
        (out / "results.json").write_text(json.dumps(results, indent=2))
    return results


def _build(factory: ModelFactory | None, d: int, z_dim: int, hidden: list[int],
           device: torch.device) -> tuple[VAE | None, Any, Any]:
    """``(vae, model, guide)``: the built-in VAE and its guide, or ``--model``'s pair (``vae``
    None)."""
    if factory is not None:
        return None, *build_pair(factory, d, device)
    vae = VAE(d, z_dim, hidden).to(device)
    return vae, vae.model, AmortizedNormal(d, z_dim, hidden).to(device)


def _sandwich(model: Any, guide: Any, n: int, d: int, args: argparse.Namespace,
              device: torch.device) -> dict[str, Any]:
    """BDMC on ``n`` images simulated from the trained ``model`` (the latents that generated
    them are exact posterior samples): means and standard errors over the images of the lower
    and upper bounds of log p(x) and of their gap."""
    seed = (args.seed + 2) % (SEED_MAX + 1)
    x_sim, latents = simulate(model, torch.zeros(n, d, device=device), seed=seed)
    res = bdmc(model, guide, x_sim, latents=latents, num_steps=args.ais_steps,
               num_chains=args.ais_chains, seed=seed)
    return {"n": n, **{key: {"mean": float(v.mean()), "stderr": standard_error(v)}
                       for key, v in (("lower", res.lower), ("upper", res.upper),
                                      ("gap", res.gap))}}


def _save_grids(vae: VAE, guide: AmortizedNormal, x_test: torch.Tensor, out: Path, name: str,
                seed: int) -> None:
    d = int(x_test.shape[1])
    shape = image_shape(d)
    image_grid(vae.sample(100, seed=seed).cpu(), out / f"samples_{name}.png", image_shape=shape,
               title=f"{name}: 100 samples, pixel means E[x | z] with z ~ p(z)")
    n = min(50, x_test.shape[0]) // 10 * 10
    if n:
        x = x_test[:n]
        rec = vae.reconstruct(x, guide)
        # Rows alternate: 10 test images, then their 10 reconstructions.
        pairs = torch.stack([x.reshape(-1, 10, d), rec.reshape(-1, 10, d)], 1).reshape(-1, d)
        image_grid(pairs.cpu(), out / f"reconstructions_{name}.png", image_shape=shape,
                   row_labels=("test input", "reconstruction"),
                   title=f"{name}: test inputs and their reconstructions\n"
                         "(reconstruction: E[x | z] at z = mean of q(z | x))")


def _plot_bounds(runs: list[dict[str, Any]], path: Path, estimator: str,
                 ais_steps: int) -> None:
    series, bands = {}, {}
    for run in runs:
        ks = [int(k) for k in run["bounds"]]
        name = _run_name(run["objective"], run["k_train"], estimator)
        series[name] = (ks, [run["bounds"][str(k)] for k in ks],
                        [run["stderr"][str(k)] for k in ks])
        # The band's width is the paired standard error of AIS - IWAE-max(k): the precision of
        # the comparison on the same images, not the spread of log p(x) over images.
        mean, err = run["ais"]["mean"], run["gap_to_ais"][str(ks[-1])]["stderr"]
        bands[name] = (f"{name}: AIS ({ais_steps} steps) ± paired s.e.", mean - err, mean + err)
    plot_errorbars(series, path, xlabel="k (test particles)",
                   ylabel="test IWAE-k bound (nats per example)",
                   errors="± 1 standard error over test images",
                   title="test bound vs k, per training objective\n"
                         "(bands: each model's AIS estimate of log p(x))",
                   legend_title="training objective", bands=bands, logx=True)


def format_table(results: dict[str, Any]) -> str:
    """The Markdown table printed by the command (one row per training objective)."""
    ks = [str(k) for k in results["eval_k"]]
    bdmc_n = results["config"]["bdmc"]
    head = ["training objective", *[f"k={k}" for k in ks],
            f"AIS ({results['config']['ais_steps']} steps)", f"prior IS (K={ks[-1]})",
            *([f"BDMC lower / upper (gap), {bdmc_n} simulated"] if bdmc_n else []),
            f"ESS of {ks[-1]}", "PSIS k-hat (share > 0.7)", "active units", "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in results["runs"]:
        name = _run_name(run["objective"], run["k_train"], run["estimator"])
        cells = [f"{run['bounds'][k]:.2f} ± {run['stderr'][k]:.2f}" for k in ks]
        khat = ("n/a" if run["khat_median"] is None else
                f"{run['khat_median']:.2f} ({run['khat_frac_above_0.7']:.0%})")
        cells.append(f"{run['ais']['mean']:.2f} ± {run['ais']['stderr']:.2f}")
        cells.append(f"{run['prior_is'][ks[-1]]:.2f}")
        if bdmc_n:
            b = run["bdmc"]
            cells.append(f"{b['lower']['mean']:.2f} / {b['upper']['mean']:.2f} "
                         f"({b['gap']['mean']:.3f} ± {b['gap']['stderr']:.3f})")
        units = "n/a" if run["active_units"] is None else str(run["active_units"])
        lines.append("| " + " | ".join([name, *cells, f"{run['ess_mean']:.1f}", khat, units,
                                        f"{run['train_seconds']:.1f}"]) + " |")
    first = results["runs"][0]
    name0 = _run_name(first["objective"], first["k_train"], first["estimator"])
    k = ks[-1]
    deltas = [f"{_run_name(r['objective'], r['k_train'], r['estimator'])} "
              f"{r['delta_vs_first'][k]:+.2f} ± {r['delta_stderr'][k]:.2f}"
              for r in results["runs"][1:]]
    if deltas:
        lines.append(f"\npaired difference of the k={k} bound vs {name0} (same test images): "
                     + "; ".join(deltas))
    gaps = [f"{_run_name(r['objective'], r['k_train'], r['estimator'])} "
            f"{r['gap_to_ais']['1']['mean']:+.2f} ± {r['gap_to_ais']['1']['stderr']:.2f} / "
            f"{r['gap_to_ais'][k]['mean']:+.3f} ± {r['gap_to_ais'][k]['stderr']:.3f}"
            for r in results["runs"] if "1" in r["gap_to_ais"]]
    if gaps:
        lines.append(f"AIS minus ELBO / minus the k={k} bound (paired over test images): "
                     + "; ".join(gaps))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    try:
        results = compare_bounds(args)
    finally:
        torch.set_num_threads(threads)  # --threads only for this job, not the caller's process
    if not is_main_process():
        return 0
    print(f"compare-bounds on {results['dataset']} (test n={results['n_test']}; mean test bound "
          "in nats per example ± standard error over test points)")
    print(format_table(results))
    print(f"ESS: effective sample size of the k={results['eval_k'][-1]} importance weights, mean "
          "over test points; PSIS k-hat: median over test points (share above 0.7, where "
          "importance sampling is unreliable)")
    print("AIS: annealed importance sampling estimate of log p(x), "
          f"{results['config']['ais_chains']} chains per image (a stochastic lower bound "
          "that becomes exact as --ais-steps grows); prior IS: "
          f"importance sampling with p(z) as proposal, K={results['eval_k'][-1]}"
          + ("; BDMC: forward / reverse AIS bounds on images simulated from the model"
             if results["config"]["bdmc"] else ""))
    print(f"wrote {Path(args.out) / 'results.json'} and figures in {args.out} "
          f"({time.perf_counter() - t0:.0f} s)")
    return 0
