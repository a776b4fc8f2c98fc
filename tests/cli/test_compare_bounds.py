import json
import math

import pytest
import torch
from _mnist_idx import make_tiny_mnist

from pgm_lab.cli.compare_bounds import format_table, parse_objective
from pgm_lab.cli.main import main
from pgm_lab.errors import ConfigError

TINY = ["--epochs", "2", "--hidden", "16", "--z-dim", "2", "--n-train", "200", "--n-test", "30",
        "--eval-k", "1", "3", "60", "--batch-size", "50", "--no-progress",
        "--ais-steps", "20", "--ais-chains", "4"]


def test_end_to_end_writes_schema_table_figures_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["compare-bounds", *TINY, "--objectives", "elbo", "iwae-3", "--estimator", "dreg",
            "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert ("| training objective | k=1 | k=3 | k=60 | AIS (20 steps) | prior IS (K=60) | "
            "ESS of 60 | PSIS k-hat (share > 0.7) | active units | train s |") in printed
    assert "AIS minus ELBO / minus the k=60 bound (paired over test images): elbo-dreg +" \
        in printed
    assert "ESS: effective sample size of the k=60 importance weights" in printed
    assert "| iwae-3-dreg |" in printed and "| elbo-dreg |" in printed
    assert "paired difference of the k=60 bound vs elbo-dreg" in printed
    res = json.loads((out / "results.json").read_text())
    assert res["dataset"] == "digits" and res["n_test"] == 30 and res["eval_k"] == [1, 3, 60]
    assert [(r["objective"], r["k_train"], r["estimator"]) for r in res["runs"]] == [
        ("elbo", 1, "dreg"), ("iwae", 3, "dreg")]
    for r in res["runs"]:
        assert set(r) >= {"objective", "k_train", "estimator", "bounds", "stderr",
                          "active_units", "train_seconds"}
        assert list(r["bounds"]) == list(r["stderr"]) == ["1", "3", "60"]
        assert all(math.isfinite(v) and v < 0 for v in r["bounds"].values())
        assert all(v > 0 for v in r["stderr"].values())
        assert r["bounds"]["60"] > r["bounds"]["1"]  # IWAE-60 is far tighter than the ELBO
        assert 0 <= r["active_units"] <= 2 and r["train_seconds"] > 0
        assert len(r["train_loss"]) == 2
        # AIS from the guide is above the ELBO it starts from; prior IS is a finite estimate
        gap = r["gap_to_ais"]["1"]
        assert gap["mean"] > 3 * gap["stderr"] > 0
        assert r["ais"]["mean"] == pytest.approx(r["bounds"]["1"] + gap["mean"], abs=1e-4)
        assert r["ais"]["stderr"] > 0 and list(r["prior_is"]) == ["60"]
        assert math.isfinite(r["prior_is"]["60"]) and "bdmc" not in r
    assert res["config"]["ais_steps"] == 20 and res["config"]["ais_chains"] == 4
    assert res["config"]["model"] == "vae" and res["config"]["bdmc"] is None
    assert set(res["runs"][0]["delta_vs_first"].values()) == {0.0}
    d = res["runs"][1]["delta_vs_first"]["60"]
    assert d == pytest.approx(res["runs"][1]["bounds"]["60"] - res["runs"][0]["bounds"]["60"],
                              abs=1e-4)  # float32 means
    names = {p.name for p in out.iterdir()}
    assert {"bounds_vs_k.png", "training_curves.png", "samples_iwae-3-dreg.png",
            "reconstructions_elbo-dreg.png", "checkpoints"} <= names
    assert (out / "checkpoints" / "iwae-3-dreg.pt").is_file()
    # Resuming finished runs retrains nothing and reproduces the evaluation exactly.
    assert main([*argv, "--resume"]) == 0
    again = json.loads((out / "results.json").read_text())
    for a, b in zip(res["runs"], again["runs"]):
        assert a["bounds"] == b["bounds"] and a["train_loss"] == b["train_loss"]
        assert a["ais"] == b["ais"] and a["prior_is"] == b["prior_is"]
        assert a["train_seconds"] == b["train_seconds"]


def test_table_has_ess_and_khat_columns():
    run = {"objective": "iwae", "k_train": 5, "estimator": "standard",
           "bounds": {"1": -40.0, "50": -39.0}, "stderr": {"1": 0.5, "50": 0.25},
           "active_units": 3, "train_seconds": 1.0, "ess_mean": 12.345, "khat_median": 0.61,
           "khat_frac_above_0.7": 0.125, "delta_vs_first": {"1": 0.0, "50": 0.0},
           "delta_stderr": {"1": 0.0, "50": 0.0}, "ais": {"mean": -38.5, "stderr": 0.24},
           "prior_is": {"50": -60.0},
           "gap_to_ais": {"1": {"mean": 1.5, "stderr": 0.1}, "50": {"mean": 0.5, "stderr": 0.01}}}
    without_khat = {**run, "k_train": 2, "khat_median": None, "khat_frac_above_0.7": None,
                    "active_units": None}
    config = {"ais_steps": 300, "ais_chains": 16, "bdmc": None}
    lines = format_table({"eval_k": [1, 50], "runs": [run, without_khat],
                          "config": config}).splitlines()
    assert lines[0] == ("| training objective | k=1 | k=50 | AIS (300 steps) | prior IS (K=50) | "
                        "ESS of 50 | PSIS k-hat (share > 0.7) | active units | train s |")
    assert lines[2] == ("| iwae-5 | -40.00 ± 0.50 | -39.00 ± 0.25 | -38.50 ± 0.24 | -60.00 | "
                        "12.3 | 0.61 (12%) | 3 | 1.0 |")
    assert lines[3] == ("| iwae-2 | -40.00 ± 0.50 | -39.00 ± 0.25 | -38.50 ± 0.24 | -60.00 | "
                        "12.3 | n/a | n/a | 1.0 |")
    assert lines[-1] == ("AIS minus ELBO / minus the k=50 bound (paired over test images): "
                         "iwae-5 +1.50 ± 0.10 / +0.500 ± 0.010; iwae-2 +1.50 ± 0.10 / "
                         "+0.500 ± 0.010")
    bdmc = {"n": 10, "lower": {"mean": -38.0, "stderr": 0.3}, "upper": {"mean": -37.9,
            "stderr": 0.3}, "gap": {"mean": 0.1, "stderr": 0.02}}
    lines = format_table({"eval_k": [1, 50], "runs": [{**run, "bdmc": bdmc}],
                          "config": {**config, "bdmc": 10}}).splitlines()
    assert "| BDMC lower / upper (gap), 10 simulated |" in lines[0]
    assert "| -38.50 ± 0.24 | -60.00 | -38.00 / -37.90 (0.100 ± 0.020) | 12.3 |" in lines[2]


def test_figures_say_what_they_show(tmp_path, monkeypatch):
    import pgm_lab.cli.compare_bounds as cb

    figures = {}

    def recording(plot):
        def record(*args, **kwargs):
            fig = plot(*args, **kwargs)
            figures[args[1].name] = fig
            return fig
        return record

    for name in ("image_grid", "plot_curves", "plot_errorbars"):
        monkeypatch.setattr(cb, name, recording(getattr(cb, name)))
    argv = ["compare-bounds", *TINY, "--epochs", "1", "--objectives", "elbo", "iwae-3",
            "--out", str(tmp_path)]
    assert main(argv) == 0
    (curves,) = figures["training_curves.png"].axes
    assert curves.get_title().startswith("training objective (each curve its own bound)")
    assert curves.get_legend().get_title().get_text() == "objective"
    (bounds,) = figures["bounds_vs_k.png"].axes
    assert "error bars: ± 1 standard error over test images" in bounds.get_title()
    assert "(bands: each model's AIS estimate of log p(x))" in bounds.get_title()
    labels = bounds.get_legend_handles_labels()[1]
    assert "iwae-3: AIS (20 steps) ± paired s.e." in labels
    (rec,) = figures["reconstructions_iwae-3.png"].axes
    assert [t.get_text() for t in rec.get_yticklabels()][:2] == ["test input", "reconstruction"]
    assert rec.get_title().startswith("iwae-3: test inputs and their reconstructions")
    assert figures["samples_elbo.png"].axes[0].get_title().startswith("elbo: 100 samples")


def test_mnist_from_tiny_idx_files(tmp_path):
    make_tiny_mnist(tmp_path, n_train=20, n_test=10)
    out = tmp_path / "mnist"
    argv = ["compare-bounds", "--dataset", "mnist", "--data-dir", str(tmp_path), "--epochs", "1",
            "--hidden", "8", "--z-dim", "2", "--objectives", "iwae-2", "--eval-k", "1", "4",
            "--eval-batch-size", "4", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["dataset"] == "mnist" and res["n_train"] == 20 and res["n_test"] == 10
    assert (out / "samples_iwae-2.png").is_file()


def _exit_code(argv: list[str]) -> int:
    """``main(argv)``'s exit status, also when argparse exits with SystemExit."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize(("extra", "code", "message"), [
    # usage errors (2) are refused by argparse, before any data is loaded
    (["--objectives", "vae"], 2, "argument --objectives: unknown objective 'vae'"),
    (["--objectives", "iwae-\u00b2"], 2, "unknown objective 'iwae-\u00b2'"),  # was a traceback
    (["--objectives", "iwae-1000000000000"], 2, "K <= 10000"),  # was a MemoryError
    (["--eval-k", "0"], 2, "argument --eval-k: expected an integer in [1, 100000], got 0"),
    (["--epochs", "-1"], 2, "argument --epochs: expected an integer in [1, 1000000], got -1"),
    # --epochs 0 evaluated untrained networks as if they were results
    (["--epochs", "0"], 2, "argument --epochs: expected an integer in [1, 1000000], got 0"),
    (["--eval-batch-size", "0"], 2, "argument --eval-batch-size: expected an integer in"),
    (["--seed", "-1"], 2, "argument --seed: expected an integer in [0, 4294967295], got -1"),
    (["--z-dim", str(10**12)], 2, "argument --z-dim: expected an integer in [1, 10000]"),
    (["--objectives", "iwae-5", "iwae-5"], 2, "expected distinct --objectives"),
    (["--ais-steps", "0"], 2, "argument --ais-steps: expected an integer in [1, 100000], got 0"),
    (["--ais-chains", "0"], 2, "argument --ais-chains: expected an integer in [1, 10000]"),
    (["--bdmc", "-3"], 2, "argument --bdmc: expected an integer in [1, 100000], got -3"),
    (["--model", "models.py"], 2, "argument --model: expected FILE.py:FACTORY, got 'models.py'"),
    (["--model", "/nonexistent.py:make"], 2,
     "argument --model: expected an existing Python file FILE.py before ':make', got "
     "'/nonexistent.py' (missing)"),
    (["--dataset", "mnist"], 2, "--dataset mnist needs --data-dir DIR"),
    # runtime errors (1)
    (["--dataset", "mnist", "--data-dir", "/nonexistent"], 2,
     "argument --data-dir: expected an existing folder, got '/nonexistent' (missing)"),
    (["--device", "tpu"], 2, "argument --device: unknown device 'tpu'"),
    (["--dataset", "mnist", "--data-dir", "/"], 1, "MNIST train files not found"),
])
def test_bad_options_exit_with_a_clear_error(tmp_path, capsys, extra, code, message):
    assert _exit_code(["compare-bounds", "--out", str(tmp_path), *extra]) == code
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1


def test_the_largest_seed_runs(tmp_path):
    """The evaluation seeds Pyro with seed + 1: at the largest seed that overflowed NumPy."""
    argv = ["compare-bounds", *TINY, "--epochs", "1", "--objectives", "elbo", "--eval-k", "1",
            "--seed", "4294967295", "--out", str(tmp_path)]
    assert main(argv) == 0


def test_parse_objective():
    assert parse_objective("ELBO") == ("elbo", 1)
    assert parse_objective("iwae-50") == ("iwae", 50)
    for bad in ("iwae", "iwae-0", "iwae-x", "iwae-\u00b2", "iwae--3", "iwae-3.5"):
        with pytest.raises(ConfigError, match="expected 'elbo' or 'iwae-K'"):
            parse_objective(bad)


def test_default_optimizer_trains_exactly_like_pyro_adam(tmp_path, monkeypatch):
    """compare-bounds steps with pgm_lab.optim.Adam; with pyro.optim.Adam instead (one torch
    optimizer per parameter) the training losses and the test bounds are the same."""
    import pyro.optim

    import pgm_lab.cli.compare_bounds as cb

    argv = ["compare-bounds", *TINY, "--epochs", "1", "--objectives", "iwae-3",
            "--eval-k", "1", "3"]
    assert main([*argv, "--out", str(tmp_path / "ours")]) == 0
    monkeypatch.setattr(cb, "Adam", pyro.optim.Adam)
    assert main([*argv, "--out", str(tmp_path / "pyro")]) == 0
    ours, ref = (json.loads((tmp_path / d / "results.json").read_text())["runs"][0]
                 for d in ("ours", "pyro"))
    assert ours["train_loss"] == pytest.approx(ref["train_loss"], rel=1e-6)
    assert ours["bounds"] == pytest.approx(ref["bounds"], rel=1e-5)
    params = [torch.load(tmp_path / d / "checkpoints" / "iwae-3.pt",
                         weights_only=True)["param_store"]["params"] for d in ("ours", "pyro")]
    assert len(params[0]) == 8
    torch.testing.assert_close(params[0], params[1])


DAG_FACTORY = '''
import pyro
import pyro.distributions as dist
import torch

from pgm_lab.dag import DAG
from pgm_lab.guides import AmortizedNormal


def make(d):
    """A declared DAG z -> x with a neural conditional, and an amortized guide over z."""
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, d))
    dag = DAG({"z": dist.Normal(torch.zeros(2), 1.0).to_event(1),
               "x": lambda z: dist.Bernoulli(logits=net(z)).to_event(1)})

    def model(x):
        pyro.module("decoder", net)
        return dag.model({"x": x})

    return model, AmortizedNormal(d, 2, (16,))


not_callable = 3


def wrong(d):
    return make(d)[0]
'''


def test_a_declared_dag_trains_through_model_flag_with_bdmc(tmp_path, capsys):
    (tmp_path / "dag_model.py").write_text(DAG_FACTORY)
    out = tmp_path / "run"
    argv = ["compare-bounds", *TINY, "--objectives", "elbo", "--bdmc", "12",
            "--model", f"{tmp_path / 'dag_model.py'}:make", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| BDMC lower / upper (gap), 12 simulated |" in printed
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["model"].endswith("dag_model.py:make")
    (r,) = res["runs"]
    assert r["active_units"] is None and r["train_loss"][-1] < r["train_loss"][0]
    assert r["gap_to_ais"]["1"]["mean"] > 3 * r["gap_to_ais"]["1"]["stderr"]
    b = r["bdmc"]
    assert b["n"] == 12
    assert b["gap"]["mean"] == pytest.approx(b["upper"]["mean"] - b["lower"]["mean"], abs=1e-4)
    # the sandwich holds within its standard error (reverse AIS is a stochastic upper bound)
    assert b["gap"]["mean"] > -3 * b["gap"]["stderr"]
    assert {p.name for p in out.iterdir()} >= {"bounds_vs_k.png", "training_curves.png"}
    assert not list(out.glob("samples_*.png"))  # image grids are the built-in VAE's


@pytest.mark.parametrize(("spec", "code", "message"), [
    ("dag_model.py:missing", 2, "argument --model: expected "),
    ("dag_model.py:not_callable", 2, "argument --model: expected 'not_callable' in "),
    ("broken.py:make", 2, "argument --model: importing "),
    ("dag_model.py:wrong", 1, "dag_model.py:wrong: expected the factory to return a (model, "
                              "guide) pair of callables, got function"),
])
def test_a_bad_model_factory_is_one_clear_line(tmp_path, capsys, spec, code, message):
    (tmp_path / "dag_model.py").write_text(DAG_FACTORY)
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    argv = ["compare-bounds", *TINY, "--epochs", "1", "--objectives", "elbo",
            "--model", str(tmp_path / spec), "--out", str(tmp_path / "out")]
    assert _exit_code(argv) == code
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1
    assert "--model" in err
