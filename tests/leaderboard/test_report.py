"""pgm_lab.leaderboard.report: JSON order, the Markdown table and the figure."""

import json

from pgm_lab.leaderboard import Entry, format_table, plot_leaderboard, to_json


def _board():
    rows = [Entry("b", "baseline", -30.0, 0.2, "exact", "exact", None, 0.1, "b.pt"),
            Entry("r", "rbm", -25.0, 0.2, "ais", "stochastic-upper", [None, -24.9], 1.0,
                  "r.pt")]
    return to_json(rows, "digits", 360)


def test_to_json_sorts_best_first_and_is_strict_json():
    board = _board()
    assert [e["name"] for e in board["entries"]] == ["r", "b"]
    json.dumps(board, allow_nan=False)


def test_table_rows_and_unbounded_interval():
    lines = format_table(_board()).splitlines()
    assert lines[0].startswith("| model | family | test LL (nats)")
    assert lines[2] == "| r | rbm | -25.00 ± 0.20 | ais | stochastic-upper | [-inf, -24.90] | 1.0 |"
    assert lines[3].endswith("| exact | exact |  | 0.1 |")


def test_plot_marks_exact_and_bounds(tmp_path):
    fig = plot_leaderboard(_board(), tmp_path / "lb.png")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["exact", "stochastic lower bound",
                      "stochastic upper bound (RBM: AIS log Z)", "AIS interval (log Z ± 3σ)"]
    assert (tmp_path / "lb.png").stat().st_size > 0
