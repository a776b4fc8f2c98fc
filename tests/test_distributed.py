"""Data-parallel training and sharded evaluation on 2 CPU processes (gloo).

Each test starts two ranks of tests/_distributed_worker.py with the environment torchrun sets,
every launch bounded by a timeout, and compares with the single-process result computed here.
"""

import math
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _distributed_worker import evaluation_problem, train

from pgm_lab.distributed import (
    DEFAULT_TIMEOUT,
    Context,
    _cuda_devices,
    _rank_seed,
    _rank_stream,
    evaluate_sharded,
    shard,
)
from pgm_lab.errors import ConfigError
from pgm_lab.infer import ais, elbo, iwae, iwae_curve

WORKER = Path(__file__).with_name("_distributed_worker.py")
LAUNCH_TIMEOUT = 90  # seconds: a hang fails the test instead of the suite


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp_path: Path, *args: str, world_size: int = 2) -> list[subprocess.CompletedProcess]:
    """Run ``world_size`` ranks of the worker; returns their completed processes (rank order)."""
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
           "WORLD_SIZE": str(world_size), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(WORKER.parent)}
    procs = [subprocess.Popen([sys.executable, str(WORKER), *args], cwd=tmp_path,
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(world_size)]
    done = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=LAUNCH_TIMEOUT)
            done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return done


def results(tmp_path: Path, runs: list[subprocess.CompletedProcess]) -> list[dict]:
    for r, run in enumerate(runs):
        assert run.returncode == 0, f"rank {r} failed:\n{run.stderr[-3000:]}"
    return [torch.load(tmp_path / f"out.{r}", weights_only=True) for r in range(len(runs))]


def assert_params_equal(got: dict, want: dict) -> None:
    assert set(got) - {"writes"} == set(want) - {"writes"}
    for name in set(want) - {"writes"}:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-7,
                                   check_dtype=False, msg=name)


def test_shard_splits_rows_contiguously_like_tensor_split():
    for n, w in [(63, 2), (3, 2), (10, 4), (2, 3)]:
        got = [shard(n, Context(r, w, DEFAULT_TIMEOUT)) for r in range(w)]
        want = torch.tensor_split(torch.arange(n), w)
        assert [list(range(n))[s] for s in got] == [t.tolist() for t in want]


def test_two_processes_train_like_one_and_resume_from_rank_0s_checkpoint(tmp_path):
    ckpt = str(tmp_path / "ckpt.pt")
    first = results(tmp_path, launch(tmp_path, "train", "out", "2", ckpt, "0"))
    assert_params_equal(first[0], train(2, distributed=False))
    assert_params_equal(first[1], first[0])
    # only rank 0 probes, writes the checkpoint and its history
    assert first[0]["writes"] == ["check_writable"] + ["save_atomic", "write_text_atomic"] * 2
    assert first[1]["writes"] == []
    # both ranks resume from that checkpoint to the uninterrupted single-process result
    resumed = results(tmp_path, launch(tmp_path, "train", "out", "4", ckpt, "1"))
    uninterrupted = train(4, distributed=False)
    for r in range(2):
        assert_params_equal(resumed[r], uninterrupted)


def test_a_nan_stops_every_rank_and_a_dead_rank_fails_the_others_clearly(tmp_path):
    t0 = time.monotonic()
    rank0, rank1 = launch(tmp_path, "die", "out")
    assert rank1.returncode == 3
    assert rank0.returncode != 0
    assert "TrainingError: rank 0 of 2:" in rank0.stderr
    assert "died or stalled" in rank0.stderr
    # before that, a NaN on rank 1 only stopped both ranks at the same step
    nan = [torch.load(tmp_path / f"out.{r}", weights_only=True)["nan"] for r in range(2)]
    assert nan[0].startswith("rank 0 of 2: another rank failed at epoch 1, step 0"), nan
    assert nan[1].startswith("a value became NaN or infinite") and "at epoch 1, step 0" in nan[1]
    # a rank that fails inside a window of steps whose loss is read once stops with the others
    # at the window's end (steps 0-2 of epoch 1), raising its own error
    # (also when rank 0 creates a parameter after rank 1 failed: it does not wait for rank 1
    # to join the parameter's broadcast until the timeout)
    for key in ("window", "window_new_param"):
        window = [torch.load(tmp_path / f"out.{r}", weights_only=True)[key] for r in range(2)]
        assert window[0] == ("TrainingError: rank 0 of 2: another rank failed at epoch 1, "
                             "steps 0-2 (its log names the error); every rank stops | last "
                             "step: epoch 1, step 2"), (key, window)
        assert window[1].startswith("RuntimeError: rank 1's model broke"), (key, window)
        assert window[1].endswith(" | last step: epoch 1, step 2"), (key, window)
    # data refused by a deferred check on one rank stop every rank at the window's end too
    bad = [torch.load(tmp_path / f"out.{r}", weights_only=True)["bad_data"] for r in range(2)]
    assert bad[0].startswith("TrainingError: rank 0 of 2: another rank failed at epoch 0, "
                             "steps 0-2"), bad
    assert bad[1].startswith("DataError: at epoch 0, step 1 (a step run without Pyro's "
                             "validation"), bad
    assert "expected binary x" in bad[1] and "x[2, 3] = 0.5" in bad[1], bad
    assert time.monotonic() - t0 < LAUNCH_TIMEOUT


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> list[dict]:
    """One launch of the worker's "evaluate" mode (sharded bounds, then a PCD run)."""
    folder = tmp_path_factory.mktemp("evaluate")
    return results(folder, launch(folder, "evaluate", "out"))


def test_pcd_ranks_share_parameters_and_draw_their_own_gibbs_noise(evaluated):
    for run in ("rbm", "rbm_fit"):  # ContrastiveDivergence under fit, and RBM.fit
        for name, value in evaluated[0][run].items():
            torch.testing.assert_close(evaluated[1][run][name], value, msg=f"{run} {name}")
    assert [r["gibbs_seed"] for r in evaluated] == [4, 5]


def test_sharded_evaluation_refuses_data_that_differ_between_ranks(evaluated):
    for got in evaluated:
        assert "expected the same data on every rank, got other data on rank 1" in \
            got["other_data"]


def test_sharded_evaluation_returns_every_point_in_data_order(evaluated):
    lg, x = evaluation_problem()
    # from the exact posterior every AIS weight is p(x_n) too: the path's targets are
    # p(z | x_n) p(x_n)^beta
    want = {"ais": ais(lg.model, lg.exact_guide, x, num_steps=5, num_chains=2),
            "elbo": elbo(lg.model, lg.exact_guide, x, num_particles=3),
            "iwae": iwae(lg.model, lg.exact_guide, x, num_particles=7),
            "curve": iwae_curve(lg.model, lg.exact_guide, x, ks=(1, 2, 4))._asdict()}
    torch.testing.assert_close(want["iwae"], lg.log_prob(x))  # the oracle is exact
    torch.testing.assert_close(want["ais"], lg.log_prob(x))
    for rank, got in enumerate(evaluated):
        assert got["rows"] == [6 - rank]  # each rank evaluated its share only: 6 + 5 points
        torch.testing.assert_close(got["ais"], want["ais"])
        torch.testing.assert_close(got["elbo"], want["elbo"])
        torch.testing.assert_close(got["iwae"], want["iwae"])
        for key in ("bounds", "stderr"):
            assert got["curve"][key].keys() == want["curve"][key].keys()
            for k in want["curve"][key]:
                torch.testing.assert_close(got["curve"][key][k], want["curve"][key][k],
                                           atol=1e-7, rtol=1e-7)
        torch.testing.assert_close(got["curve"]["ess"], want["curve"]["ess"])
        assert got["curve"]["num_groups"] == want["curve"]["num_groups"]


def test_sharded_evaluation_gives_each_rank_its_own_reproducible_stream(evaluated):
    noise = evaluated[0]["noise"]
    for name, value in evaluated[1]["noise"].items():  # the same on every rank
        if isinstance(value, str):
            assert value == noise[name], name
        else:
            assert torch.equal(value, noise[name]), name
    # identical points: rank 1's shard (the second half) must not repeat rank 0's draws
    for name, half in (("elbo", 1000), ("iwae", 10), ("ais", 4)):
        first = noise[f"{name}_first"]
        assert first.shape == (2 * half,)
        assert (first[:half] != first[half:]).all(), name
        assert torch.equal(noise[f"{name}_again"], first), name  # reproducible from the seed
    # the global generator advances by one draw per sharded bound (elbo, iwae), alike on
    # every rank; AIS, seeded by its argument, neither reads nor advances it
    torch.manual_seed(7)
    for _ in range(2):
        torch.randint(0, 2**63 - 1, ())
    assert noise["next_first"] == noise["next_again"] == torch.rand((), dtype=torch.float64)
    for run, state in (("first", 11), ("again", 12)):
        torch.manual_seed(state)
        assert noise[f"ais_next_{run}"] == torch.rand((), dtype=torch.float64)
    assert noise["bad_seed"] == "seed must be an int in [0, 2**63), got -1"


def test_sharded_elbo_is_distributed_like_the_unsharded_one(evaluated):
    # elbo_n = log N(0; z_n, 1), z_n ~ N(0, 1): mean -log(2 pi) / 2 - 1/2, variance 1/2
    e = evaluated[0]["noise"]["elbo_first"]
    n = e.shape[0]
    truth = -0.5 * math.log(2 * math.pi) - 0.5
    assert abs(e.mean().item() - truth) < 4 * math.sqrt(0.5 / n)
    # the shards' errors are uncorrelated (with one stream for all ranks, the correlation of
    # the two halves was 1 and the mean's standard error sqrt(2) too small)
    r = torch.corrcoef(torch.stack([e[: n // 2], e[n // 2:]]))[0, 1].item()
    assert abs(r) < 4 / math.sqrt(n // 2)


def test_evaluate_sharded_without_a_group_is_fn_itself():
    x = torch.zeros(5, dtype=torch.float64)
    torch.manual_seed(3)
    got = evaluate_sharded(lambda a: a + torch.randn(a.shape, dtype=a.dtype), (x,))
    got_next = torch.rand(())
    torch.manual_seed(3)
    assert torch.equal(got, x + torch.randn(x.shape, dtype=x.dtype))
    assert got_next == torch.rand(())  # no extra draw, no fork
    seeds = []
    evaluate_sharded(lambda a, seed: seeds.append(seed), (x,), seed=9)
    assert seeds == [9]


def test_rank_seeds_are_distinct_63_bit_and_deterministic():
    for common in (0, 1, 2**63 - 2):
        seeds = [_rank_seed(common, r) for r in range(8)]
        assert len(set(seeds)) == 8
        assert all(0 <= s < 2**63 for s in seeds)
        assert seeds == [_rank_seed(common, r) for r in range(8)]
    assert _rank_seed(0, 0) != _rank_seed(1, 0)


def test_rank_stream_seeds_every_global_generator_and_restores_it():
    seed = 2**40 + 3
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())  # noqa: NPY002
    with _rank_stream(seed, []):
        inside = (torch.rand(()).item(), np.random.rand(), random.random())  # noqa: NPY002
    assert torch.equal(torch.get_rng_state(), before[0])
    assert (np.random.get_state()[1] == before[1]).all()  # noqa: NPY002
    assert random.getstate() == before[2]
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    random.seed(seed)
    assert inside == (torch.rand(()).item(), np.random.rand(), random.random())  # noqa: NPY002


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_rank_stream_seeds_and_restores_the_cuda_generator_in_use():
    x = torch.zeros(3, device="cuda")
    devices = _cuda_devices((x,))
    assert devices == [torch.cuda.current_device()]
    before = torch.cuda.get_rng_state()
    with _rank_stream(5, devices):
        inside = torch.randn(3, device="cuda")
    assert torch.equal(torch.cuda.get_rng_state(), before)
    torch.cuda.manual_seed(5)
    assert torch.equal(inside, torch.randn(3, device="cuda"))


def test_distributed_true_without_torchrun_is_a_config_error(monkeypatch):
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="torchrun"):
        train(1, distributed=True)
    with pytest.raises(ConfigError, match="distributed must be"):
        train(1, distributed="yes")


@pytest.mark.slow
def test_torchrun_compare_bounds_trains_evaluates_and_reports_once(tmp_path):
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
            f"--master_port={_free_port()}", "-m", "pgm_lab", "compare-bounds", "--epochs", "1",
            "--hidden", "16", "--z-dim", "2", "--n-train", "200", "--n-test", "31",
            "--objectives", "elbo", "--eval-k", "1", "5", "--ais-steps", "5", "--ais-chains",
            "2", "--no-progress", "--out", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("| training objective |") == 1  # rank 0 alone prints
    assert (out / "results.json").exists() and (out / "checkpoints" / "elbo.pt").exists()
