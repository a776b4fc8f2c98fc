"""``pgm-lab leaderboard --resume``: a run stopped after some entries continues to the board an
uninterrupted run writes; another configuration or a damaged progress file is refused."""

import json
import shutil

import pytest

from pgm_lab.cli.main import main
from pgm_lab.leaderboard import entries as zoo
from pgm_lab.leaderboard.progress import PROGRESS_FILE

QUICK = ["leaderboard", "--quick", "--no-progress"]
TRAINERS = ["train_baseline", "train_network", "train_latent_class", "train_rbm", "train_vae",
            "train_gan"]
FIRST_SEVEN = ["baseline", "Chow-Liu", "hill-climb BIC", "latent class", "RBM 20", "RBM 100",
               "VAE ELBO"]


def _spy(monkeypatch, stop_at=None):
    """Record each trainer call as (function, first str argument); raise KeyboardInterrupt (a
    Ctrl-C, or a kill) when the call ``stop_at`` (such a pair) comes."""
    calls = []
    for name in TRAINERS:
        original = getattr(zoo, name)

        def wrapper(*args, _name=name, _original=original, **kwargs):
            key = (_name, next((a for a in args if isinstance(a, str)), None))
            if key == stop_at:
                raise KeyboardInterrupt
            calls.append(key)
            return _original(*args, **kwargs)

        monkeypatch.setattr(zoo, name, wrapper)
    return calls


def _without_timings(board):
    return {**board, "entries": [{k: v for k, v in e.items() if k != "train_seconds"}
                                 for e in board["entries"]]}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    assert main([*QUICK, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def partial(tmp_path_factory):
    """A run stopped while training the IWAE VAE, the eighth of nine entries."""
    out = tmp_path_factory.mktemp("partial")
    with pytest.MonkeyPatch.context() as mp:
        calls = _spy(mp, stop_at=("train_vae", "iwae"))
        assert main([*QUICK, "--out", str(out)]) == 130
    assert len(calls) == 7 and not (out / "leaderboard.json").exists()
    return out


@pytest.fixture
def copy_of_partial(partial, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(partial, out)
    return out


def _progress(out):
    return json.loads((out / PROGRESS_FILE).read_text())


def test_progress_file_records_each_finished_entry(partial):
    progress = _progress(partial)
    assert [e["label"] for e in progress["entries"]] == FIRST_SEVEN
    assert progress["config"]["seed"] == 0 and progress["config"]["quick"] is True
    vae = progress["entries"][-1]
    assert [r["estimator"] for r in vae["rows"]] == ["iwae-20", "ais-5"]
    assert vae["files"] == ["vae_elbo.pt"] and len(vae["samples"]) == 10
    assert progress["entries"][1]["files"] == ["chow_liu.bif", "chow_liu_structure.png"]


def test_resume_trains_only_the_rest_and_writes_the_uninterrupted_board(
        uninterrupted, copy_of_partial, monkeypatch, capsys):
    out = copy_of_partial
    recorded = {e["label"]: e for e in _progress(out)["entries"]}
    calls = _spy(monkeypatch)
    assert main([*QUICK, "--out", str(out), "--resume"]) == 0
    assert calls == [("train_vae", "iwae"), ("train_gan", None)]
    assert "reused 7 finished entries" in capsys.readouterr().out
    resumed = json.loads((out / "leaderboard.json").read_text())
    expected = json.loads((uninterrupted / "leaderboard.json").read_text())
    assert _without_timings(resumed) == _without_timings(expected)
    # reused rows keep the training time measured when they were trained
    reused = {r["name"]: r["train_seconds"] for e in recorded.values() for r in e["rows"]}
    for e in resumed["entries"]:
        if e["name"] in reused:
            assert e["train_seconds"] == reused[e["name"]]
    # the same ten samples of every model, reused or not: the same figure, byte for byte
    assert (out / "samples.png").read_bytes() == (uninterrupted / "samples.png").read_bytes()
    assert [e["label"] for e in _progress(out)["entries"]] == [*FIRST_SEVEN, "VAE IWAE", "GAN"]


def test_an_entry_whose_artifact_is_gone_is_trained_again(copy_of_partial, monkeypatch):
    out = copy_of_partial
    (out / "hill_climb_structure.png").unlink()
    calls = _spy(monkeypatch)
    assert main([*QUICK, "--out", str(out), "--resume"]) == 0
    assert calls == [("train_network", "hill-climb"), ("train_vae", "iwae"), ("train_gan", None)]
    assert (out / "hill_climb_structure.png").stat().st_size > 0


@pytest.mark.parametrize("flags, difference", [
    (["--seed", "1"], "--seed: 0 -> 1"),
    ([], "--quick: True -> False"),
])
def test_resume_with_another_configuration_is_refused(copy_of_partial, monkeypatch, capsys,
                                                      flags, difference):
    out = copy_of_partial
    before = (out / PROGRESS_FILE).read_bytes()
    calls = _spy(monkeypatch)
    argv = ["leaderboard", "--no-progress", "--out", str(out), "--resume", *flags]
    if difference.startswith("--seed"):
        argv.append("--quick")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert f"got 1 difference(s) (progress file -> now): {difference}." in err
    assert "run without --resume" in err
    assert calls == [] and (out / PROGRESS_FILE).read_bytes() == before


def _truncate(text):
    return text[: len(text) // 2]


def _retype_test_ll(text):
    state = json.loads(text)
    state["entries"][0]["rows"][0]["test_ll"] = "-27.3"
    return json.dumps(state)


def _ragged_samples(text):
    state = json.loads(text)
    state["entries"][2]["samples"][3] = state["entries"][2]["samples"][3][:-1]
    return json.dumps(state)


def _path_as_file(text):
    state = json.loads(text)
    state["entries"][0]["files"] = ["../baseline.pt"]
    return json.dumps(state)


def _nan(text):
    return text.replace('"test_ll": ', '"test_ll": NaN, "x": ', 1)


@pytest.mark.parametrize("damage, message", [
    (_truncate, "JSONDecodeError"),
    (_retype_test_ll, "'entries[0].rows[0].test_ll': expected a float, got str '-27.3'"),
    (_ragged_samples, "'entries[2].samples': expected 10 images of the same size"),
    (_path_as_file, "expected a file name in the output folder, got '../baseline.pt'"),
    (_nan, "expected finite numbers, got NaN"),
])
def test_a_damaged_progress_file_is_a_clear_error(copy_of_partial, monkeypatch, capsys,
                                                   damage, message):
    out = copy_of_partial
    path = out / PROGRESS_FILE
    path.write_text(damage(path.read_text()))
    calls = _spy(monkeypatch)
    assert main([*QUICK, "--out", str(out), "--resume"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and calls == []
    assert f"cannot resume from {path}" in err and "damaged" in err and message in err
    assert "delete it or run without --resume" in err


def test_without_resume_the_progress_file_is_overwritten(copy_of_partial, monkeypatch):
    out = copy_of_partial
    _spy(monkeypatch, stop_at=("train_baseline", None))
    assert main([*QUICK, "--out", str(out)]) == 130
    progress = _progress(out)
    assert progress["entries"] == [] and progress["config"]["quick"] is True
