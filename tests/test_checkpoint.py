"""Checkpoint I/O: safe loading, atomic writes, stale temporaries, validation, fingerprints."""

import ast
import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions.constraints as constraints
import pytest
import torch

from pgm_lab import checkpoint
from pgm_lab.errors import CheckpointError


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: a stand-in for any code a pickle may run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _dead_pid():
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(proc.stdout)


@pytest.mark.parametrize("writer", ["torch.save", "pickle protocol 2", "pickle protocol 4"])
def test_load_refuses_a_malicious_pickle_without_running_it(tmp_path, writer):
    marker, path = tmp_path / "marker", tmp_path / "evil.pt"
    payload = {"version": 2, "epoch": 1, "evil": _Payload(marker)}
    with open(path, "wb") as f:
        if writer == "torch.save":
            torch.save(payload, f)
        else:
            pickle.dump(payload, f, protocol=int(writer[-1]))
    match = "nothing in it was run" if writer != "pickle protocol 4" else "evil.pt"
    with pytest.raises(CheckpointError, match=match):
        checkpoint.load(path)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04 truncated zip"])
def test_load_of_garbage_is_a_checkpoint_error(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="bad.pt"):
        checkpoint.load(path)


def test_save_atomic_refuses_objects_that_need_unpickling_code(tmp_path):
    with pytest.raises(CheckpointError, match=r"rng\.numpy\[1\].*numpy.ndarray"):
        checkpoint.save_atomic({"rng": {"numpy": ("MT19937", np.zeros(3))}}, tmp_path / "c.pt")
    assert list(tmp_path.iterdir()) == []


def test_saved_state_loads_with_weights_only(tmp_path):
    state = {"a": torch.arange(3), "b": [1, 2.5, "x", None, True], "c": (1, {"d": 2})}
    checkpoint.save_atomic(state, tmp_path / "sub" / "c.pt")
    loaded = torch.load(tmp_path / "sub" / "c.pt", weights_only=True)
    assert loaded["b"] == state["b"] and loaded["c"] == state["c"]
    torch.testing.assert_close(loaded["a"], state["a"])


def test_stale_temporaries_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    target = tmp_path / "ck.pt"
    stale = tmp_path / f".ck.pt.{_dead_pid()}.tmp"
    live = tmp_path / f".ck.pt.{os.getppid()}.tmp"
    other = tmp_path / f".other.pt.{_dead_pid()}.tmp"
    for p in (stale, live, other):
        p.write_bytes(b"partial")
    assert checkpoint.remove_stale_temporaries(target) == [stale]
    assert not stale.exists() and live.exists() and other.exists()


@pytest.mark.parametrize("case", ["directory", "parent is a file", "unwritable folder"])
def test_check_writable_refuses_bad_paths(tmp_path, case):
    if case == "directory":
        path, match = tmp_path, "must be a file path, got the directory"
    elif case == "parent is a file":
        (tmp_path / "file").write_text("x")
        path, match = tmp_path / "file" / "sub" / "ck.pt", "expected a folder as parent"
    else:
        path, match = "/proc/ck.pt", "is not writable"  # read-only, even for root
    with pytest.raises(CheckpointError, match=match):
        checkpoint.check_writable(path)


def test_check_writable_creates_missing_folders_and_leaves_no_probe(tmp_path):
    path = checkpoint.check_writable(tmp_path / "a" / "b" / "ck.pt")
    assert path.parent.is_dir() and list(path.parent.iterdir()) == []


@pytest.mark.parametrize(
    ("state", "key", "expected", "match"),
    [
        ({}, "epoch", int, "'epoch' is missing: expected an int"),
        ({"epoch": "3"}, "epoch", int, "'epoch': expected an int, got str '3'"),
        ({"epoch": True}, "epoch", int, "'epoch': expected an int, got bool"),
        ([], "epoch", int, "expected a dict, got list"),
    ],
)
def test_require_names_the_key_and_what_was_expected(state, key, expected, match):
    with pytest.raises(CheckpointError, match=match):
        checkpoint.require(state, key, expected, "an int")
    assert checkpoint.require({"n": [5]}, "n", list, "a list") == [5]
    assert checkpoint.require([1, 2], 1, int, "an int", "xs") == 2


def test_data_fingerprint_sees_values_order_shape_and_dtype():
    x = torch.arange(12.0).reshape(3, 4)
    base = checkpoint.data_fingerprint([x])
    assert base == checkpoint.data_fingerprint([x.clone()])
    changed = x.clone()
    changed[2, 3] += 1e-6
    for other in ([changed], [x.flip(0)], [x.reshape(4, 3)], [x.double()], [x, x[:, 0]]):
        assert checkpoint.data_fingerprint(other)["sha256"] != base["sha256"]


def test_differences_lists_each_changed_leaf_old_to_new():
    old = {"batch_size": 16, "optim": {"args": {"lr": 0.05}}, "loss": {"class": "A"}}
    new = {"batch_size": 32, "optim": {"args": {"lr": 0.05}}, "loss": {"class": "B", "k": 2}}
    assert checkpoint.differences(old, new) == [
        "batch_size: 16 -> 32", "loss.class: 'A' -> 'B'", "loss.k: (none) -> 2"]


def test_global_rng_state_round_trips_exactly_through_a_weights_only_file(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)  # noqa: NPY002
    random.seed(3)
    np.random.standard_normal()  # noqa: NPY002 -- leaves a cached gaussian in the state
    checkpoint.save_atomic({"rng": checkpoint.global_rng_state()}, tmp_path / "r.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002
    random.seed(0)
    checkpoint.set_global_rng_state(checkpoint.load(tmp_path / "r.pt")["rng"])
    torch.testing.assert_close(torch.rand(3), expected[0], rtol=0, atol=0)
    assert np.array_equal(np.random.rand(3), expected[1])  # noqa: NPY002
    assert random.random() == expected[2]


def test_set_global_rng_state_refuses_malformed_states():
    state = checkpoint.global_rng_state()
    state["numpy"]["keys"] = torch.zeros(3, dtype=torch.int64)
    with pytest.raises(CheckpointError, match="'rng.numpy.keys': expected 624 words"):
        checkpoint.set_global_rng_state(state)
    state = checkpoint.global_rng_state()
    state["torch"] = torch.zeros(7, dtype=torch.uint8)
    with pytest.raises(CheckpointError, match="'rng.torch': expected a valid RNG state"):
        checkpoint.set_global_rng_state(state)
    del state["python"]
    with pytest.raises(CheckpointError, match="'rng.python' is missing"):
        checkpoint.set_global_rng_state(state)


def test_param_store_round_trip_keeps_constraints_and_refuses_other_shapes(tmp_path):
    pyro.param("p", torch.tensor([0.2, 0.7]), constraint=constraints.unit_interval)
    pyro.param("s", torch.tensor(2.0), constraint=constraints.interval(1.0, 3.0))
    checkpoint.save_atomic(checkpoint.param_store_state(), tmp_path / "ps.pt")
    pyro.clear_param_store()
    checkpoint.restore_param_store(checkpoint.load(tmp_path / "ps.pt"))
    store = pyro.get_param_store()
    torch.testing.assert_close(store["p"], torch.tensor([0.2, 0.7]))
    torch.testing.assert_close(store["s"], torch.tensor(2.0))
    assert store._constraints["p"] is constraints.unit_interval
    s_constraint = store._constraints["s"]
    assert (s_constraint.lower_bound, s_constraint.upper_bound) == (1.0, 3.0)
    assert store.param_name(store._params["s"]) == "s"
    pyro.clear_param_store()
    pyro.param("p", torch.tensor([0.5, 0.5, 0.5]), constraint=constraints.unit_interval)
    with pytest.raises(CheckpointError, match=r"param_store\.params\.p: expected .*\(3,\)"):
        checkpoint.restore_param_store(checkpoint.load(tmp_path / "ps.pt"))


def test_the_package_calls_torch_load_only_in_checkpoint_load():
    """Every file the package reads goes through checkpoint.load (weights_only=True)."""
    root = Path(checkpoint.__file__).parent
    calls = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr in ("load", "loads", "Unpickler") and \
                    isinstance(node.func.value, ast.Name) and \
                    node.func.value.id in ("torch", "pickle", "dill", "cloudpickle"):
                keywords = {k.arg: ast.literal_eval(k.value) for k in node.keywords
                            if k.arg == "weights_only"}
                calls.append((path.relative_to(root).as_posix(), node.func.value.id, keywords))
    assert calls == [("checkpoint.py", "torch", {"weights_only": True})]
