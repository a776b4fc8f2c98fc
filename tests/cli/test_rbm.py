"""``pgm-lab rbm`` end to end on bars-and-stripes (exact and AIS evaluation)."""

import json

import pytest
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


def test_rbm_command_refuses_bad_settings_before_training(tmp_path, capsys, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("bad settings must be refused before training")

    monkeypatch.setattr(RBM, "fit", no_training)
    afile = tmp_path / "afile"
    afile.write_text("")
    cases = [(["--hidden", "0"], "argument --hidden: expected an integer in [1, 100000], got 0"),
             (["--ais-runs", "1"], "argument --ais-runs: expected an integer in [2, 100000]"),
             (["--ais-betas", "5"], "argument --ais-betas: expected an integer in [10, "),
             (["--gibbs-steps", "-1"], "argument --gibbs-steps: expected an integer in [0, "),
             (["--max-exact-units", "40"], "argument --max-exact-units: expected an integer "
                                           "in [0, 25], got 40"),
             (["--out", str(afile)], "argument --out: expected a writable output folder, got "
                                     "the existing file"),
             # found only after training, when the first checkpoint was written
             (["--checkpoint", str(afile / "c.pt")], "argument --checkpoint: expected a "
                                                     "writable file path"),
             (["--checkpoint", str(tmp_path)], "argument --checkpoint: expected a writable "
                                               "file path, got the folder"),
             (["--resume"], "--resume needs --checkpoint PATH"),
             # crashed in NumPy's seeding after the data were loaded
             (["--seed", "-1"], "argument --seed: expected an integer in [0, 4294967295]"),
             (["--seed", str(2**64 + 1)], "argument --seed: expected an integer in [0, "),
             (["--hidden", str(10**12)], "argument --hidden: expected an integer in [1, "),
             (["--epochs", "0"], "argument --epochs: expected an integer in [1, "),
             (["--lr", "nan"], "argument --lr: expected a finite number > 0, got 'nan'"),
             (["--momentum", "1"], "argument --momentum: expected a finite number in [0, 1)")]
    for extra, match in cases:
        argv = [*COMMON, "--out", str(tmp_path / "o"), *extra]
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2, extra
        err = capsys.readouterr().err
        assert match in err and len(err.splitlines()) == 1, (extra, err)


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
