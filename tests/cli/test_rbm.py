"""``pgm-lab rbm`` end to end on bars-and-stripes (exact and AIS evaluation)."""

import json

import torch

from pgm_lab.cli.main import main
from pgm_lab.data import load_dataset
from pgm_lab.rbm import RBM

COMMON = ["rbm", "--dataset", "bars", "--hidden", "8", "--epochs", "3", "--batch-size", "10",
          "--lr", "0.1", "--gibbs-steps", "20", "--no-progress"]


def _reload(out):
    rbm = RBM(16, 8)
    rbm.load_state_dict(torch.load(out / "rbm.pt"))
    return rbm


def test_rbm_command_exact_evaluation(tmp_path, capsys):
    out = tmp_path / "exact"
    assert main([*COMMON, "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    for name in ("samples.png", "filters.png", "curves.png", "trace.png"):
        assert (out / name).stat().st_size > 0
    assert res["log_likelihood"]["method"] == "exact" and len(res["loss"]) == 3
    rbm = _reload(out)
    x = load_dataset("bars", "train", binarize="static")
    assert abs(res["log_likelihood"]["train"] - float(rbm.log_prob(x).mean())) < 1e-5
    assert abs(res["pseudo_likelihood"]["test"]
               - float(rbm.pseudo_likelihood(x, exact=True).mean())) < 1e-5
    assert set(res["gibbs_diagnostics"]) == {"free_energy", "energy", "visible_mean",
                                             "hidden_mean"}
    assert "| train |" in capsys.readouterr().out


def test_rbm_command_ais_evaluation_brackets_exact(tmp_path):
    out = tmp_path / "ais"
    assert main([*COMMON, "--max-exact-units", "4", "--ais-runs", "50", "--ais-betas", "2000",
                 "--out", str(out)]) == 0
    ll = json.loads((out / "results.json").read_text())["log_likelihood"]
    assert ll["method"] == "ais"
    exact = float(_reload(out).log_prob(load_dataset("bars", "test", binarize="static")).mean())
    lo, hi = ll["test_interval"]
    assert lo <= exact <= hi and abs(ll["test"] - exact) < 0.1


def test_rbm_command_reports_bad_arguments(tmp_path, capsys):
    assert main(["rbm", "--dataset", "bars", "--hidden", "0", "--out", str(tmp_path)]) == 1
    assert "n_hidden must be a positive int" in capsys.readouterr().err


def test_rbm_command_refuses_bad_settings_before_training(tmp_path, capsys, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("bad settings must be refused before training")

    monkeypatch.setattr(RBM, "fit", no_training)
    afile = tmp_path / "afile"
    afile.write_text("")
    cases = [(["--ais-runs", "1"], "--ais-runs must be >= 2, got 1"),
             (["--ais-betas", "5"], "--ais-betas must be >= 10, got 5"),
             (["--gibbs-steps", "-1"], "--gibbs-steps must be >= 0, got -1"),
             (["--max-exact-units", "40"], "--max-exact-units must be in [0, 25], got 40"),
             (["--out", str(afile)], "--out must be a folder")]
    for extra, match in cases:
        argv = [*COMMON, "--out", str(tmp_path / "o"), *extra]
        assert main(argv) == 1, extra
        assert match in capsys.readouterr().err


def test_rbm_command_writes_strict_json_when_the_ais_interval_is_unbounded(tmp_path,
                                                                           monkeypatch):
    """An AIS interval with a -inf end (relative error > 1/3) was written as -Infinity."""
    import pgm_lab.cli.rbm as cli_rbm

    real = cli_rbm._log_likelihoods

    def unbounded(*args):
        ll = real(*args)
        ll["test_interval"] = [float("-inf"), ll["test"]]
        return ll

    monkeypatch.setattr(cli_rbm, "_log_likelihoods", unbounded)
    out = tmp_path / "inf"
    assert main([*COMMON, "--epochs", "1", "--max-exact-units", "4", "--ais-runs", "10",
                 "--ais-betas", "100", "--out", str(out)]) == 0

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    res = json.loads((out / "results.json").read_text(), parse_constant=refuse)
    assert res["log_likelihood"]["test_interval"][0] is None
