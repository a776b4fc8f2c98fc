import csv
import json

import torch

from pgm_lab.cli.main import main
from pgm_lab.dag import read_bif


def test_info_prints_factorization_and_structure(capsys):
    assert main(["bn", "info", "asia"]) == 0
    out = capsys.readouterr().out
    assert "8 nodes, 8 edges, 18 free parameters" in out
    assert read_bif("asia").factorization() in out
    assert main(["bn", "info", "cancer", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["states"]["Smoker"] == ["True", "False"] and len(info["edges"]) == 4


def test_query_matches_exact_posterior(capsys, tmp_path):
    path = tmp_path / "asia.bif"
    read_bif("asia").to_bif(path)
    assert main(["bn", "query", str(path), "lung", "-e", "xray=yes", "-e", "smoke=no",
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    dag = read_bif("asia")
    ev = {"xray": "yes", "smoke": "no"}
    expected = dag.posterior("lung", ev)["lung"]
    got = torch.tensor([res["posterior"]["lung"][s] for s in dag.states("lung")],
                       dtype=torch.float64)
    torch.testing.assert_close(got, expected)
    assert abs(res["log_evidence"] - float(dag.log_evidence(ev))) < 1e-12
    assert main(["bn", "query", "asia", "lung", "-e", "xray=yes"]) == 0
    assert "p(lung | evidence):" in capsys.readouterr().out


def test_sample_writes_csv_of_state_names(tmp_path, capsys):
    out = tmp_path / "s.csv"
    assert main(["bn", "sample", "alarm", "-n", "25", "--seed", "3", "--out", str(out)]) == 0
    with out.open() as f:
        rows = list(csv.reader(f))
    dag = read_bif("alarm")
    assert rows[0] == list(dag.nodes) and len(rows) == 26
    ref = dag.sample(25, seed=3)
    assert [r[0] for r in rows[1:]] == [dag.states(dag.nodes[0])[i] for i in
                                        ref[dag.nodes[0]].tolist()]


def test_bad_input_gives_error_exit_code(capsys):
    assert main(["bn", "query", "asia", "lung", "-e", "xray=maybe"]) == 1
    assert "no state 'maybe'" in capsys.readouterr().err
    assert main(["bn", "query", "asia", "lung", "-e", "xray"]) == 1
    assert "NODE=STATE" in capsys.readouterr().err
    assert main(["bn", "info", "alarn"]) == 1
    assert "did you mean 'alarm'" in capsys.readouterr().err
    assert main(["bn"]) == 0


def test_unwritable_output_and_impossible_evidence_are_errors_not_tracebacks(tmp_path, capsys):
    assert main(["bn", "sample", "asia", "--out", str(tmp_path / "missing" / "s.csv")]) == 1
    assert "expected a writable --out path" in capsys.readouterr().err
    # either = lung OR tub: either=no with lung=yes is impossible
    assert main(["bn", "query", "asia", "lung", "-e", "either=no", "-e", "lung=yes"]) == 1
    assert "probability zero" in capsys.readouterr().err
    assert main(["bn", "sample", "asia", "-n", "0"]) == 1
    assert "positive int" in capsys.readouterr().err


def test_contradictory_repeated_evidence_is_an_error(capsys):
    # the last -e used to win silently
    assert main(["bn", "query", "asia", "lung", "-e", "xray=yes", "-e", "xray=no"]) == 1
    assert "expected one state per evidence node, got xray=yes and xray=no" in \
        capsys.readouterr().err
    assert main(["bn", "query", "asia", "lung", "-e", "xray=yes", "-e", "xray=yes"]) == 0
