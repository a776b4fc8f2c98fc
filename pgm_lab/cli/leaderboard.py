"""``pgm-lab leaderboard``: Bayesian networks, RBMs, VAEs and a GAN scored on the same images.

Trains one model per family on the digits train split and scores every one on the 360
statically binarized test images (``load_dataset("digits", "test", binarize="static",
seed=0)``, the images compare-bounds uses) in mean nats per image with standard errors over
the images: independent Bernoulli pixels, a Chow-Liu tree, a hill-climbed BIC network and a
latent-class model (hidden root fit by EM; exact log-likelihoods by the networks' own
inference), RBMs with 20 hidden units (exact log Z) and 100 (AIS with its interval; reverse AIS
in the row's name), VAEs trained with the ELBO and with IWAE (DReG gradients), each scored by
IWAE-5000 and AIS, and a GAN scored by AIS from the prior. Writes ``leaderboard.json``, every
model (a BIF file per network, a torch state file otherwise), ``leaderboard.png`` and
``samples.png`` to ``--out`` and prints a Markdown table. Each finished entry is recorded in
``leaderboard_progress.json`` there, so a killed run continues with ``--resume``, which
trains only the entries left and writes the same numbers. ``--quick`` runs the same pipeline
with tiny sizes in seconds (its numbers mean nothing). Wu, Burda, Salakhutdinov & Grosse
(2017), "On the quantitative analysis of decoder-based generative models"; Salakhutdinov &
Murray (2008), "On the quantitative analysis of deep belief networks".
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import remove_stale_temporaries, write_text_atomic
from ..data import image_shape, load_dataset
from ..leaderboard import entries as zoo
from ..leaderboard.progress import PROGRESS_FILE, Finished, Progress, run_config
from ..leaderboard.report import format_table, plot_leaderboard, sample_grid, to_json
from ._args import SEED_MAX, HelpFormatter, int_in, output_dir, plain, seed

__all__ = ["register", "run", "leaderboard"]

Job = Callable[[], tuple[Any, zoo.Sampler]]  # () -> (Entry or [Entry], sampler)


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "leaderboard", help="score every model family in nats on the same binarized digits",
        description=plain(__doc__.split("\n\n")[1]), formatter_class=HelpFormatter)
    p.add_argument("--out", type=output_dir, default="runs/leaderboard",
                   help="output folder (created if missing)")
    p.add_argument("--seed", type=seed, default=0,
                   help=f"random seed of training and estimators, an integer in [0, {SEED_MAX}]"
                        " (the test images are always binarized with seed 0)")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes (one epoch, a few AIS steps): checks the pipeline in "
                        "seconds; the numbers are not comparable to the default run's")
    p.add_argument("--resume", action="store_true",
                   help=f"reuse the entries an earlier run into OUT finished, recorded in "
                        f"OUT/{PROGRESS_FILE}, and train the rest; refused when that run had "
                        "another --seed, --quick, data or pgm_lab/torch version. Without "
                        "--resume the progress file is overwritten: every entry is trained")
    p.add_argument("--threads", type=int_in(1, 1024), default=1,
                   help="torch CPU threads")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars (default: on a terminal outside CI)")
    p.set_defaults(func=run, _parser=p)
    return p


def _jobs(args: argparse.Namespace, out: Path, scale: zoo.Scale,
          data: Mapping[str, torch.Tensor]) -> dict[str, tuple[Job, tuple[str, ...]]]:
    """Every entry by label: the function that trains and scores it, and the files it writes
    besides its rows' artifacts. Each seeds itself from ``--seed`` (none reads a random number
    another one left), so skipping finished entries leaves the others' numbers unchanged."""
    x_grey, x_train, x_test = data["grey"], data["train"], data["test"]
    s, progress = args.seed, args.progress
    return {
        "baseline": (lambda: zoo.train_baseline(x_train, x_test, out), ()),
        "Chow-Liu": (lambda: zoo.train_network(x_train, x_test, out, "chow-liu"),
                     ("chow_liu_structure.png",)),
        "hill-climb BIC": (lambda: zoo.train_network(x_train, x_test, out, "hill-climb"),
                           ("hill_climb_structure.png",)),
        "latent class": (lambda: zoo.train_latent_class(
            x_train, x_test, out, scale.latent_classes, scale.em_iterations, s), ()),
        "RBM 20": (lambda: zoo.train_rbm(x_train, x_test, out, 20, scale, s, progress), ()),
        "RBM 100": (lambda: zoo.train_rbm(x_train, x_test, out, 100, scale, s, progress), ()),
        "VAE ELBO": (lambda: zoo.train_vae(x_grey, x_test, out, "elbo", scale, s, progress),
                     ()),
        "VAE IWAE": (lambda: zoo.train_vae(x_grey, x_test, out, "iwae", scale, s, progress),
                     ()),
        "GAN": (lambda: zoo.train_gan(x_grey, x_test, out, scale, s, progress), ()),
    }


def _train(label: str, job: Job, extra_files: tuple[str, ...], seed: int,
           progress: Progress) -> Finished:
    """Train and score one entry, draw its ten samples, and record it in the progress file."""
    entry, sampler = job()
    rows = entry if isinstance(entry, list) else [entry]
    files = list(dict.fromkeys([*(r.artifact for r in rows), *extra_files]))
    return progress.record(label, rows, sampler(10, seed), files)


def _report(rows: list[zoo.Entry], samples: dict[str, torch.Tensor], out: Path,
            n_test: int) -> dict[str, Any]:
    board = to_json(rows, "digits", n_test)
    write_text_atomic(json.dumps(board, indent=2, allow_nan=False), out / "leaderboard.json")
    plot_leaderboard(board, out / "leaderboard.png")
    sample_grid(samples, out / "samples.png", image_shape("digits"))
    return board


def leaderboard(args: argparse.Namespace) -> dict[str, Any]:
    """Train and score every entry for parsed ``args``; returns ``leaderboard.json``'s dict.

    Each finished entry is recorded in ``OUT/leaderboard_progress.json``
    (:class:`pgm_lab.leaderboard.progress.Progress`); with ``args.resume`` the entries an
    earlier run with the same configuration finished are reused, not trained again, and the
    report is the one an uninterrupted run writes (``train_seconds`` aside, a timing).
    """
    scale = zoo.SCALES["quick" if args.quick else "default"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = {"grey": load_dataset("digits", "train"),
            "train": load_dataset("digits", "train", binarize="static", seed=args.seed),
            "test": load_dataset("digits", "test", binarize="static", seed=0)}
    config = run_config(args.seed, args.quick, scale, data["grey"], data["test"])
    remove_stale_temporaries(out / PROGRESS_FILE)
    progress = (Progress.resume if getattr(args, "resume", False) else Progress.start)(
        out, config)
    rows, samples, reused = [], {}, []
    for label, (job, extra_files) in _jobs(args, out, scale, data).items():
        done = progress.finished(label)
        if done is None:
            done = _train(label, job, extra_files, args.seed, progress)
        else:
            reused.append(label)
        rows += done.rows
        samples[label] = done.samples
    if reused:
        print(f"resumed: reused {len(reused)} finished entries from {progress.path} "
              f"({', '.join(reused)})")
    return _report(rows, samples, out, int(data["test"].shape[0]))


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        board = leaderboard(args)
    finally:
        torch.set_num_threads(threads)
    print(f"leaderboard on {board['dataset']} (test n={board['n_test']}, statically binarized "
          "with seed 0; mean test log-likelihood in nats per image ± standard error over test "
          "images)")
    print(format_table(board))
    print("bound: exact = exact inference / exact log Z; stochastic-lower = an estimate whose "
          "expectation is at most log p(x) (IWAE-k, AIS over a decoder's latents); "
          "stochastic-upper = at least log p(x) in expectation (an RBM's test LL from an AIS "
          "log Z, which underestimates log Z); interval: AIS log Z ± 3σ flipped into the "
          "log-likelihood")
    print(f"wrote {Path(args.out) / 'leaderboard.json'}, models and figures in {args.out} "
          f"({time.perf_counter() - t0:.0f} s)")
    return 0
