import csv
import json

import pytest
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
    with pytest.raises(SystemExit) as exc:  # a usage error, found while parsing
        main(["bn", "query", "asia", "lung", "-e", "xray"])
    assert exc.value.code == 2
    assert "argument -e/--evidence: expected NODE=STATE, got 'xray'" in capsys.readouterr().err
    assert main(["bn", "info", "alarn"]) == 1
    assert "did you mean 'alarm'" in capsys.readouterr().err
    assert main(["bn"]) == 0


def test_impossible_evidence_is_an_error_not_a_traceback(capsys):
    # either = lung OR tub: either=no with lung=yes is impossible
    assert main(["bn", "query", "asia", "lung", "-e", "either=no", "-e", "lung=yes"]) == 1
    assert "probability zero" in capsys.readouterr().err


def test_sample_creates_the_folder_of_out(tmp_path):
    out = tmp_path / "new" / "s.csv"
    assert main(["bn", "sample", "asia", "-n", "3", "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 4


def test_sample_json_is_written_to_out(tmp_path, capsys):
    """``--json --out F`` printed the JSON and never wrote F."""
    out = tmp_path / "s.json"
    assert main(["bn", "sample", "asia", "-n", "4", "--seed", "2", "--json", "--out",
                 str(out)]) == 0
    assert capsys.readouterr().out == ""
    rows = json.loads(out.read_text())
    dag = read_bif("asia")
    ref = dag.sample(4, seed=2)
    assert [r["smoke"] for r in rows] == [dag.states("smoke")[i] for i in ref["smoke"].tolist()]
    assert main(["bn", "sample", "asia", "-n", "4", "--seed", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == rows


def test_sample_streams_large_n_in_chunks_from_one_seeded_stream(monkeypatch, capsys):
    """-n beyond one chunk is drawn chunk by chunk (bounded memory), reproducibly, and the
    chunks differ (one RNG stream, not the seed restarted per chunk)."""
    import pgm_lab.cli.bn as cli_bn

    monkeypatch.setattr(cli_bn, "CHUNK", 4)
    assert main(["bn", "sample", "asia", "-n", "10", "--seed", "5"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 11
    dag = read_bif("asia")
    first = dag.sample(4, seed=5)
    assert [r.split(",")[2] for r in rows[1:5]] == [dag.states("smoke")[i]
                                                     for i in first["smoke"].tolist()]
    assert main(["bn", "sample", "asia", "-n", "10", "--seed", "5"]) == 0
    assert capsys.readouterr().out.splitlines() == rows
    assert rows[1:5] != rows[5:9]  # what restarting the seed per chunk would give


def test_contradictory_repeated_evidence_is_an_error(capsys):
    # the last -e used to win silently
    assert main(["bn", "query", "asia", "lung", "-e", "xray=yes", "-e", "xray=no"]) == 1
    assert "expected one state per evidence node, got xray=yes and xray=no" in \
        capsys.readouterr().err
    assert main(["bn", "query", "asia", "lung", "-e", "xray=yes", "-e", "xray=yes"]) == 0
