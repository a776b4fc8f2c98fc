"""pgm_lab.leaderboard.progress: rows and samples come back exactly; configurations compared."""

import json

import pytest
import torch

from pgm_lab.errors import CheckpointError
from pgm_lab.leaderboard import SCALES, Entry
from pgm_lab.leaderboard.progress import PROGRESS_FILE, Progress, run_config

ROW = Entry("RBM 100 hidden", "rbm", -27.507612969315162, 0.19763497215651926, "ais",
            "stochastic-upper", [None, -27.37388566142333], 0.031, "rbm_100.pt")


def _config(seed=0, quick=True, x_test=None):
    x = torch.zeros(5, 4)
    return run_config(seed, quick, SCALES["quick" if quick else "default"], x,
                      x if x_test is None else x_test)


def test_rows_and_float32_samples_come_back_exactly(tmp_path):
    samples = torch.rand(10, 64, generator=torch.Generator().manual_seed(0))
    progress = Progress.start(tmp_path, _config())
    progress.record("RBM 100", [ROW], samples, ["rbm_100.pt"])
    (tmp_path / "rbm_100.pt").write_bytes(b"x")
    done = Progress.resume(tmp_path, _config()).finished("RBM 100")
    assert done.rows == [ROW] and done.files == ["rbm_100.pt"]
    assert done.samples.dtype == torch.float32 and torch.equal(done.samples, samples)


def test_an_entry_with_a_missing_file_is_not_finished(tmp_path):
    progress = Progress.start(tmp_path, _config())
    progress.record("RBM 100", [ROW], torch.zeros(10, 4), ["rbm_100.pt"])
    assert Progress.resume(tmp_path, _config()).finished("RBM 100") is None
    assert Progress.resume(tmp_path, _config()).finished("GAN") is None


def test_start_overwrites_and_resume_without_a_file_starts_afresh(tmp_path):
    Progress.start(tmp_path, _config()).record("a", [ROW], torch.zeros(10, 4), [])
    assert Progress.start(tmp_path, _config()).entries == {}
    assert json.loads((tmp_path / PROGRESS_FILE).read_text())["entries"] == []
    (tmp_path / PROGRESS_FILE).unlink()
    assert Progress.resume(tmp_path, _config()).entries == {}
    assert (tmp_path / PROGRESS_FILE).exists()


@pytest.mark.parametrize("new, difference", [
    (_config(seed=3), "--seed: 0 -> 3"),
    (_config(x_test=torch.ones(5, 4)), "data.test.sha256: '"),
])
def test_another_configuration_is_refused_naming_the_difference(tmp_path, new, difference):
    Progress.start(tmp_path, _config())
    with pytest.raises(CheckpointError, match="1 difference") as exc:
        Progress.resume(tmp_path, new)
    assert difference in str(exc.value)


def test_quick_difference_is_named_without_the_sizes_it_implies(tmp_path):
    Progress.start(tmp_path, _config())
    with pytest.raises(CheckpointError, match=r"1 difference\(s\) .*: --quick: True -> False\."):
        Progress.resume(tmp_path, _config(quick=False))


def test_changed_sizes_under_the_same_flags_are_named(tmp_path):
    Progress.start(tmp_path, _config())
    saved = json.loads((tmp_path / PROGRESS_FILE).read_text())
    saved["config"]["scale"]["eval_k"] = 10
    saved["config"]["versions"]["pgm_lab"] = "0.0.1"
    (tmp_path / PROGRESS_FILE).write_text(json.dumps(saved))
    with pytest.raises(CheckpointError, match="2 difference") as exc:
        Progress.resume(tmp_path, _config())
    assert "scale.eval_k: 10 -> 20" in str(exc.value)
    assert "versions.pgm_lab: '0.0.1' -> " in str(exc.value)


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.update(format="other"), "key 'format': expected 'pgm_lab leaderboard"),
    (lambda s: s.update(version=2), "key 'version': expected 1, got 2"),
    (lambda s: s["entries"][0].pop("samples"), "'entries[0].samples' is missing"),
    (lambda s: s["entries"][0]["rows"][0].update(extra=1), "expected the keys"),
    (lambda s: s["entries"][0]["rows"][0].update(interval=[1.0]), "expected [low, high]"),
    (lambda s: s["entries"][0]["samples"][0].__setitem__(0, 2.0), "expected pixel values in"),
    (lambda s: s["entries"][0]["samples"].pop(), "expected 10 images"),
    (lambda s: s["entries"][0]["samples"][0].__setitem__(0, True), "expected lists of number"),
])
def test_a_damaged_file_is_refused_naming_the_key(tmp_path, edit, message):
    Progress.start(tmp_path, _config()).record("a", [ROW], torch.zeros(10, 4), [])
    saved = json.loads((tmp_path / PROGRESS_FILE).read_text())
    edit(saved)
    (tmp_path / PROGRESS_FILE).write_text(json.dumps(saved))
    with pytest.raises(CheckpointError, match="damaged") as exc:
        Progress.resume(tmp_path, _config())
    assert message in str(exc.value)
