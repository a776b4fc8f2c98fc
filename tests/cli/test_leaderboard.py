"""``pgm-lab leaderboard --quick`` end to end: schema, and every exact number recomputed
independently (pgmpy's reading of the BIF files, brute-force log Z of the 20-hidden RBM)."""

import json
import math
import warnings

import numpy as np
import pytest
import torch

from pgm_lab.cli.main import main
from pgm_lab.data import load_dataset
from pgm_lab.leaderboard.entries import pixel_names

KEYS = ["name", "family", "test_ll", "stderr", "estimator", "bound", "interval",
        "train_seconds", "artifact"]


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    out = tmp_path_factory.mktemp("leaderboard")
    assert main(["leaderboard", "--out", str(out), "--quick", "--no-progress"]) == 0
    return out, json.loads((out / "leaderboard.json").read_text())


@pytest.fixture(scope="module")
def x_test():
    return load_dataset("digits", "test", binarize="static", seed=0).double()


def _entry(board, prefix):
    (e,) = [e for e in board["entries"] if e["name"].startswith(prefix)]
    return e


def test_schema_and_files(board):
    out, b = board
    assert list(b) == ["dataset", "n_test", "entries"] and b["n_test"] == 360
    families = {e["family"] for e in b["entries"]}
    assert families == {"baseline", "bayesian-network", "rbm", "vae", "gan"}
    for e in b["entries"]:
        assert list(e) == KEYS
        assert e["bound"] in ("exact", "stochastic-lower", "stochastic-upper", "lower")
        assert (e["bound"] == "exact") == (e["estimator"] == "exact")
        assert math.isfinite(e["test_ll"]) and e["stderr"] > 0 and e["train_seconds"] >= 0
        assert (out / e["artifact"]).stat().st_size > 0
        assert e["artifact"].endswith(".bif") == (e["family"] == "bayesian-network")
    lls = [e["test_ll"] for e in b["entries"]]
    assert lls == sorted(lls, reverse=True)
    assert len([e for e in b["entries"] if e["family"] == "vae"]) == 4  # 2 models x IWAE, AIS
    for name in ("leaderboard.png", "samples.png", "chow_liu_structure.png",
                 "hill_climb_structure.png"):
        assert (out / name).stat().st_size > 0


def _pgmpy_cpds(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgmpy.readwrite import BIFReader

        return {c.variable: c for c in BIFReader(str(path)).get_model().get_cpds()}


def _log_cpd(cpd, states):
    """log p(node | parents) per row from a pgmpy TabularCPD; ``states``: name -> str [N]."""
    values = cpd.get_values()  # [card, prod of parent cards], parents in cpd.variables[1:]
    row = np.array([cpd.state_names[cpd.variable].index(s) for s in states[cpd.variable]])
    col = np.zeros_like(row)
    for parent, card in zip(cpd.variables[1:], cpd.cardinality[1:]):
        idx = np.array([cpd.state_names[parent].index(s) for s in states[parent]])
        col = col * card + idx
    return np.log(values[row, col])


@pytest.mark.parametrize("prefix, artifact", [("Chow-Liu", "chow_liu.bif"),
                                              ("hill-climb", "hill_climb.bif")])
def test_network_numbers_recomputed_by_pgmpy(board, x_test, prefix, artifact):
    out, b = board
    e = _entry(b, prefix)
    assert e["artifact"] == artifact
    cpds = _pgmpy_cpds(out / artifact)
    states = {n: [str(int(v)) for v in x_test[:, i]] for i, n in enumerate(pixel_names(64))}
    ll = sum(_log_cpd(cpd, states) for cpd in cpds.values())
    assert abs(ll.mean() - e["test_ll"]) < 1e-9
    assert abs(ll.std(ddof=1) / math.sqrt(len(ll)) - e["stderr"]) < 1e-9


def test_latent_class_number_recomputed_from_pgmpy_tables(board, x_test):
    out, b = board
    e = _entry(b, "latent-class")
    cpds = _pgmpy_cpds(out / e["artifact"])
    k = cpds["class"].cardinality[0]
    log_joint = np.log(cpds["class"].get_values()[:, 0])[None, :].repeat(360, 0)  # [N, K]
    for i, n in enumerate(pixel_names(64)):
        x = [str(int(v)) for v in x_test[:, i]]
        for j in range(k):
            log_joint[:, j] += _log_cpd(cpds[n], {n: x, "class": [str(j)] * 360})
    ll = torch.logsumexp(torch.from_numpy(log_joint), 1)
    assert abs(float(ll.mean()) - e["test_ll"]) < 1e-9


def test_rbm_20_number_recomputed_by_brute_force_log_z(board, x_test):
    """log Z = logsumexp over all 2^20 hidden states h of c.h + sum_i softplus(b_i + W_i.h)."""
    out, b = board
    e = _entry(b, "RBM 20 hidden")
    state = torch.load(out / e["artifact"], weights_only=True)
    W, bv, c = (state[k].double() for k in ("W", "b", "c"))
    parts = []
    for start in range(0, 2**20, 2**16):
        codes = torch.arange(start, start + 2**16)
        h = ((codes[:, None] >> torch.arange(20)) & 1).double()
        parts.append(torch.logsumexp(h @ c + torch.nn.functional.softplus(h @ W.T + bv).sum(-1),
                                     0))
    log_z = torch.logsumexp(torch.stack(parts), 0)
    neg_f = x_test @ bv + torch.nn.functional.softplus(x_test @ W + c).sum(-1)
    assert abs(float((neg_f - log_z).mean()) - e["test_ll"]) < 1e-6
    assert (state["n_visible"], state["n_hidden"]) == (64, 20)


def test_rbm_artifacts_load_back_as_rbms(board):
    from pgm_lab.rbm import RBM

    out, b = board
    for hidden in (20, 100):
        rbm = RBM.load(out / _entry(b, f"RBM {hidden} hidden")["artifact"])
        assert (rbm.n_visible, rbm.n_hidden) == (64, hidden)


def test_baseline_and_ais_interval(board, x_test):
    out, b = board
    probs = torch.load(out / "baseline.pt", weights_only=True)["probs"]
    ll = (x_test * probs.log() + (1 - x_test) * (1 - probs).log()).sum(-1)
    assert abs(float(ll.mean()) - _entry(b, "independent pixels")["test_ll"]) < 1e-9
    rbm = _entry(b, "RBM 100 hidden")
    low, high = rbm["interval"]
    assert (low is None or low <= rbm["test_ll"]) and rbm["test_ll"] <= high


@pytest.mark.parametrize("flags, message", [
    (["--seed", "-1"], "argument --seed"),
    (["--threads", "0"], "argument --threads"),
    (["--out", ""], "argument --out"),
])
def test_bad_flags_exit_2(flags, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["leaderboard", *flags])
    assert exc.value.code == 2 and message in capsys.readouterr().err
