import json
import math
import subprocess
import sys
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from _fit_models import TinyFactor, tiny_data
from torch.overrides import TorchFunctionMode

from pgm_lab import train as train_module
from pgm_lab.errors import CheckpointError, ConfigError, DataError, TrainingError
from pgm_lab.guides import AmortizedNormal
from pgm_lab.infer import IWAE
from pgm_lab.models import VAE
from pgm_lab.train import fit, resolve_device, save_checkpoint_atomic, scale_plate

HERE = Path(__file__).parent


def test_fit_decreases_loss_and_returns_history():
    m = TinyFactor()
    hist = fit(m.model, m.guide, tiny_data(), optim=pyro.optim.Adam({"lr": 0.05}), epochs=15,
               batch_size=16, device="cpu", progress=False)
    assert len(hist.epochs) == 15
    assert hist.loss[-1] < 0.5 * hist.loss[0]
    assert all(r.steps == 6 and r.seconds > 0 for r in hist.epochs)


def test_scale_plate_scales_local_sites_only():
    def model(x):
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(w, 1.0), obs=x)

    x = torch.randn(5)
    tr = pyro.poutine.trace(scale_plate(model, "data", 4.0)).get_trace(x)
    tr.compute_log_prob()
    assert tr.nodes["w"]["scale"] == 1.0
    assert tr.nodes["x"]["scale"] == 4.0


def test_minibatch_loss_is_unbiased_for_full_data_loss():
    # With a guide equal to the prior-free delta of a global site, the Trace_ELBO loss is
    # deterministic, so the mean over all minibatches of one epoch must equal the full loss.
    def model(x):
        loc = pyro.param("loc", torch.tensor(0.3))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    x = torch.randn(40)
    elbo = pyro.infer.Trace_ELBO()
    full = elbo.loss(model, lambda x: None, x)
    parts = [elbo.loss(scale_plate(model, "data", 40 / 8), lambda x: None, x[i:i + 8])
             for i in range(0, 40, 8)]
    assert math.isclose(sum(parts) / len(parts), full, rel_tol=1e-6)


@pytest.mark.filterwarnings("ignore:Encountered NaN:UserWarning")
@pytest.mark.parametrize("poison", ["param", "factor", "factor_unvalidated", "overflow"])
def test_nan_raises_training_error_with_epoch_and_step(tmp_path, poison):
    calls = {"n": 0}

    def model(x):
        scale = pyro.param("scale", torch.tensor(1.0))
        pyro.sample("z", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(0.0, scale), obs=x)
        if poison.startswith("factor") and calls["n"] == 5:
            pyro.factor("bad", torch.tensor(float("nan")))

    def guide(x):
        calls["n"] += 1
        if poison == "param" and calls["n"] == 5:  # epoch 2 (2 steps per epoch), step 0
            pyro.get_param_store()["scale"].data.fill_(float("nan"))
        # a finite parameter whose square overflows float32 (as after a step with lr=1e30):
        # the draw is NaN and only the model's log_prob at "z" sees it
        w = pyro.param("w", torch.tensor(0.0))
        if poison == "overflow" and calls["n"] == 5:
            pyro.get_param_store()["w"].data.fill_(1e30)
        pyro.sample("z", dist.Normal(w * w - w * w, 1.0, validate_args=False))

    ckpt = tmp_path / "ck.pt"
    msg = {"param": "scale", "factor": "invalid values", "factor_unvalidated": "loss is nan",
           "overflow": "a value became NaN or infinite: .*site 'z'"}
    with pytest.raises(TrainingError, match=msg[poison] + r".* epoch 2, step 0.*ck\.pt"):
        with pyro.validation_enabled(poison != "factor_unvalidated"):
            fit(model, guide, torch.randn(8), epochs=5, batch_size=4, device="cpu",
                checkpoint=ckpt, progress=False)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2  # last good checkpoint kept


@pytest.mark.filterwarnings("ignore:Encountered NaN:UserWarning")
def test_a_nan_loss_between_checks_names_the_window_of_steps(tmp_path):
    calls = {"n": 0}

    def model(x):
        calls["n"] += 1
        loc = pyro.param("loc", torch.tensor(0.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)
        if calls["n"] == 9:  # epoch 2 (3 steps per epoch), step 2
            pyro.factor("bad", torch.tensor(float("nan")))

    ckpt = tmp_path / "ck.pt"
    with pytest.raises(TrainingError, match=r"loss is nan at epoch 2, steps 0-2 .*ck\.pt"):
        with pyro.validation_enabled(False):
            fit(model, None, torch.randn(12), loss=IWAE(1), epochs=5, batch_size=4,
                device="cpu", checkpoint=ckpt, progress=False, check_every=3)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2  # last good checkpoint kept


@pytest.mark.filterwarnings("ignore:Encountered NaN:UserWarning")
def test_a_nan_parameter_met_by_an_unvalidated_step_is_a_training_error(tmp_path):
    # Step 1 of a window of 3 runs without validation: its NaN gradient makes "p" NaN, and
    # step 2 draws from Categorical(logits=NaN), where torch raises a RuntimeError.
    calls = {"n": 0}

    def model(x):
        calls["n"] += 1
        p = pyro.param("p", torch.tensor(0.0))
        if calls["n"] == 5:  # epoch 1 (3 steps per epoch), step 1
            pyro.factor("bad", p * torch.tensor(float("nan")))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Categorical(torch.ones(x.shape[0], 2) / 2))
            pyro.sample("x", dist.Normal(p, 1.0), obs=x)

    def guide(x):
        p = pyro.param("p", torch.tensor(0.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Categorical(logits=torch.stack([p, -p]).expand(x.shape[0], 2)))

    ckpt = tmp_path / "ck.pt"
    with pytest.raises(TrainingError, match=r"parameters \['p'\] became NaN .* epoch 1, step 2"
                                            r".*ck\.pt"):
        fit(model, guide, torch.randn(12), epochs=3, batch_size=4, device="cpu",
            checkpoint=ckpt, progress=False, check_every=3)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1  # last good checkpoint kept


def _iwae_fit(**kw):
    pyro.clear_param_store()
    torch.manual_seed(0)
    m = TinyFactor()
    return fit(m.model, m.guide, tiny_data(), loss=IWAE(3), optim=pyro.optim.SGD({"lr": 1e-5}),
               epochs=2, batch_size=16, seed=5, device="cpu", progress=False, **kw)


class HostReads(TorchFunctionMode):
    """Records each read of a tensor's value by Python (``item``, ``float``, ``bool``,
    ``tolist``...: on a GPU each waits for every queued kernel) with the training step it
    happened in. Reads by ``torch.optim`` are left out: Adam's step counters are CPU tensors
    (no device wait) unless the kernel keeps them on the device."""

    READS = {"__bool__", "__float__", "__int__", "__index__", "item", "tolist", "numpy",
             "__array__", "__format__"}

    def __init__(self, monkeypatch):
        super().__init__()
        self.step, self.reads = -1, []
        original = train_module._step

        def counting_step(*args, **kwargs):
            self.step += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(train_module, "_step", counting_step)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if name in self.READS and self.step >= 0 and not caller.startswith("torch.optim"):
            self.reads.append((self.step, name, caller))
        return func(*args, **(kwargs or {}))


def _vae_fit(loss, **kw):
    pyro.clear_param_store()
    torch.manual_seed(0)
    vae, guide = VAE(12, 2, (8,)), AmortizedNormal(12, 2, (8,))
    x = torch.bernoulli(torch.full((48, 12), 0.4))
    return fit(vae.model, guide, x, loss=loss, epochs=2, batch_size=8, seed=5, device="cpu",
               progress=False, **kw)


def _rbm_fit(**kw):
    from pgm_lab.rbm import RBM, ContrastiveDivergence

    torch.manual_seed(0)
    rbm = RBM(12, 4, seed=0)
    x = torch.bernoulli(torch.full((48, 12), 0.4))
    return fit(rbm, None, x, loss=ContrastiveDivergence(k=1, persistent=True, seed=4),
               epochs=2, batch_size=8, seed=5, device="cpu", progress=False, **kw)


@pytest.mark.parametrize("case", ["vae_trace_elbo", "vae_iwae", "params_trace_elbo", "rbm_pcd"])
def test_steps_between_checks_read_nothing_to_the_host(monkeypatch, case):
    # With check_every=4 and 6 steps an epoch, the windows are steps 0-3 and 4-5: step 0 and 4
    # run validated (their checks may read), the others must not read at all, but for the
    # one read of the window's summed loss after its last step (3, 5).
    with HostReads(monkeypatch) as mode:
        if case == "params_trace_elbo":
            hist = _tiny_fit(None, epochs=2, check_every=4)
        elif case == "rbm_pcd":
            hist = _rbm_fit(check_every=4)
        else:
            loss = pyro.infer.Trace_ELBO() if case == "vae_trace_elbo" else IWAE(3, "dreg")
            hist = _vae_fit(loss, check_every=4)
    assert [r.steps for r in hist.epochs] == [6, 6]
    by_step = {s: [r for r in mode.reads if r[0] == s] for s in range(12)}
    for s, reads in by_step.items():
        if s % 6 in (0, 4):
            continue
        want = [(s, "tolist", "pgm_lab.train")] if s % 6 in (3, 5) else []
        assert reads == want, f"step {s}: {reads}"  # the window's read: the mode sees reads


@pytest.mark.parametrize("bad,step,what", [(0.5, 2, "expected binary x"),
                                            (float("nan"), 5, "x must be finite")])
def test_bad_data_met_by_an_unvalidated_step_is_refused_at_the_windows_end(bad, step, what):
    # The data are checked finite at the boundary; a transform may still make them bad. The
    # check of an unvalidated step runs on the device and is read with the window's loss.
    def poison(x, gen):
        calls["n"] += 1
        if calls["n"] == step + 1:
            x = x.clone()
            x[3, 7] = bad
        return x

    calls = {"n": 0}
    vae, guide = VAE(12, 2, (8,)), AmortizedNormal(12, 2, (8,))
    x = torch.bernoulli(torch.full((48, 12), 0.4))
    with pytest.raises(DataError, match=rf"at epoch 0, step {step} \(a step run without "
                                        rf".*{what}") as info:
        fit(vae.model, guide, x, epochs=1, batch_size=8, device="cpu", progress=False,
            transform=poison, shuffle=False, check_every=4)
    assert calls["n"] == (4 if step < 4 else 6)  # raised at the end of its window
    pyro.clear_param_store()  # a NaN step spoilt the parameters: start afresh
    vae, guide = VAE(12, 2, (8,)), AmortizedNormal(12, 2, (8,))
    with pytest.raises(DataError, match=what):  # a validated step refuses it at once
        calls["n"] = 0
        fit(vae.model, guide, x, epochs=1, batch_size=8, device="cpu", progress=False,
            transform=poison, shuffle=False, check_every=1)
    assert calls["n"] == step + 1 and info.value.__cause__ is not None


def test_only_the_first_step_of_each_window_runs_validated():
    seen = []

    def model(x):
        seen.append(pyro.poutine.util.is_validation_enabled())
        loc = pyro.param("loc", torch.tensor(0.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    fit(model, None, torch.randn(20), epochs=2, batch_size=4, device="cpu", progress=False,
        check_every=3)
    # 5 steps an epoch: windows 0-2 and 3-4
    assert seen == [True, False, False, True, False] * 2
    assert pyro.poutine.util.is_validation_enabled()  # the user's setting is restored


def test_check_every_does_not_change_the_history():
    assert _iwae_fit(check_every=4).loss == _iwae_fit(check_every=1).loss


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint_atomic({"a": torch.ones(3)}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint_atomic({"a": torch.zeros(3)}, path)
    monkeypatch.undo()
    torch.testing.assert_close(torch.load(path)["a"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_history_json_written_beside_checkpoint(tmp_path):
    m = TinyFactor()
    ckpt = tmp_path / "run" / "model.pt"
    hist = fit(m.model, m.guide, tiny_data(), epochs=3, batch_size=32, device="cpu",
               checkpoint=ckpt, progress=False)
    saved = json.loads((tmp_path / "run" / "model.history.json").read_text())
    assert [e["loss"] for e in saved["epochs"]] == hist.loss


def _run_script(ckpt, epochs, resume, kill, out):
    return subprocess.run(
        [sys.executable, str(HERE / "_fit_models.py"), str(ckpt), str(epochs), resume, kill,
         str(out)], cwd=HERE, capture_output=True, text=True, timeout=300)


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted_run(tmp_path):
    full = _run_script(tmp_path / "full.pt", 6, "0", "-", tmp_path / "full_params.pt")
    assert full.returncode == 0, full.stderr
    # 6 steps per epoch: step 22 is in the middle of epoch 3 (0-based).
    killed = _run_script(tmp_path / "ck.pt", 6, "0", "22", tmp_path / "unused.pt")
    assert killed.returncode == -9
    assert torch.load(tmp_path / "ck.pt", weights_only=True)["epoch"] == 3
    resumed = _run_script(tmp_path / "ck.pt", 6, "1", "-", tmp_path / "resumed_params.pt")
    assert resumed.returncode == 0, resumed.stderr
    a, b = torch.load(tmp_path / "full_params.pt"), torch.load(tmp_path / "resumed_params.pt")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    hist = json.loads((tmp_path / "ck.history.json").read_text())
    assert [e["epoch"] for e in hist["epochs"]] == list(range(6))


def test_resume_from_garbage_checkpoint_raises(tmp_path):
    ckpt = tmp_path / "bad.pt"
    ckpt.write_bytes(b"not a checkpoint")
    m = TinyFactor()
    with pytest.raises(CheckpointError, match="bad.pt"):
        fit(m.model, m.guide, tiny_data(), epochs=1, device="cpu", checkpoint=ckpt,
            resume=True, progress=False)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"epochs": -1}, ConfigError, "epochs"),
        ({"batch_size": 0}, ConfigError, "batch_size"),
        ({"resume": True}, ConfigError, "checkpoint"),
        ({"device": "tpu9"}, ConfigError, "device"),
        ({"num_threads": 0}, ConfigError, "num_threads"),
        ({"num_threads": True}, ConfigError, "num_threads"),
        ({"check_every": 0}, ConfigError, "check_every"),
        ({"check_every": True}, ConfigError, "check_every"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    m = TinyFactor()
    with pytest.raises(exc, match=match):
        fit(m.model, m.guide, tiny_data(), progress=False, **kwargs)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (torch.tensor([[0.1, float("nan")]]), "NaN"),
        ((torch.zeros(3, 2), torch.zeros(4)), "first dimension"),
        (torch.zeros(0, 4), "empty"),
        ("abc", "tensor"),
    ],
)
def test_bad_data(data, match):
    with pytest.raises(DataError, match=match):
        fit(lambda x: None, None, data, progress=False)


def test_resolve_device_auto_is_cpu_without_cuda():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


def test_progress_quiet_off_terminal_and_in_ci(monkeypatch, capsys):
    from pgm_lab.train import progress_enabled

    monkeypatch.setenv("CI", "true")
    assert progress_enabled(None) is False
    assert progress_enabled(True) is True and progress_enabled(False) is False
    m = TinyFactor()
    fit(m.model, m.guide, tiny_data(), epochs=1, device="cpu")
    assert capsys.readouterr().err == ""


def test_callback_can_stop_training():
    m = TinyFactor()
    seen = []

    def stop_after_two(epoch, record):
        seen.append((epoch, record.loss))
        return epoch == 1

    hist = fit(m.model, m.guide, tiny_data(), epochs=10, device="cpu", progress=False,
               callbacks=[stop_after_two])
    assert len(hist.epochs) == 2 and [e for e, _ in seen] == [0, 1]


def _recording_bernoulli_model():
    """A Bernoulli model over [B, 3] that records every batch it sees (validates 0/1 data)."""
    seen = []

    def model(x):
        seen.append(x.clone())
        p = pyro.param("p", torch.tensor(0.5), constraint=dist.constraints.unit_interval)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Bernoulli(p).expand([x.shape[0], 3]).to_event(1), obs=x)

    return model, seen


def test_transform_uses_the_seeded_generator():
    from pgm_lab.data import dynamic_binarize

    model, seen = _recording_bernoulli_model()
    x = torch.full((8, 3), 0.5)
    for _ in range(2):
        fit(model, None, x, epochs=2, batch_size=4, seed=3, device="cpu", progress=False,
            transform=dynamic_binarize)
    first, second = seen[:4], seen[4:]
    assert all(torch.equal(a, b) for a, b in zip(first, second))  # reproducible
    assert not all(torch.equal(first[0], b) for b in first[1:])   # resampled per batch
    assert all(set(b.unique().tolist()) <= {0.0, 1.0} for b in first)


def test_num_threads_applies_during_training_and_is_restored():
    before = torch.get_num_threads()
    seen = []

    def model(x):
        seen.append(torch.get_num_threads())
        loc = pyro.param("loc", torch.tensor(0.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    fit(model, None, torch.randn(8), epochs=1, batch_size=8, device="cpu", progress=False,
        num_threads=1)
    assert set(seen) == {1} and torch.get_num_threads() == before


def test_resume_materializes_params_on_transformed_data(tmp_path):
    from pgm_lab.data import dynamic_binarize

    model, seen = _recording_bernoulli_model()
    x = torch.full((8, 3), 0.5)
    kw = dict(batch_size=4, device="cpu", progress=False, transform=dynamic_binarize,
              checkpoint=tmp_path / "c.pt")
    fit(model, None, x, epochs=1, **kw)
    pyro.clear_param_store()
    fit(model, None, x, epochs=2, resume=True, **kw)
    assert all(set(b.unique().tolist()) <= {0.0, 1.0} for b in seen)


# ---- checkpoint safety: no code execution, no silent mix-ups ---------------------------------


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: a stand-in for any code a pickle may run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def svi_steps(monkeypatch):
    """``svi_steps["n"]``: the number of SVI steps :func:`fit` took during the test."""
    counter = {"n": 0}
    step = train_module._step

    def counting_step(*args, **kwargs):
        counter["n"] += 1
        return step(*args, **kwargs)

    monkeypatch.setattr(train_module, "_step", counting_step)
    return counter


def _tiny_fit(ckpt, *, epochs=1, resume=False, **kw):
    m = TinyFactor()
    args = dict(optim=pyro.optim.Adam({"lr": 0.05}), batch_size=16, seed=7, device="cpu",
                progress=False)
    args.update(kw)
    data = args.pop("data", tiny_data())
    return fit(m.model, m.guide, data, epochs=epochs, checkpoint=ckpt, resume=resume, **args)


def test_resume_refuses_a_malicious_checkpoint_and_runs_nothing(tmp_path):
    ckpt, marker = tmp_path / "ck.pt", tmp_path / "marker"
    _tiny_fit(ckpt)
    state = torch.load(ckpt, weights_only=True)
    state["history"] = _Payload(marker)
    torch.save(state, ckpt)
    with pytest.raises(CheckpointError, match="nothing in it was run"):
        _tiny_fit(ckpt, epochs=2, resume=True)
    assert not marker.exists()


def _edit(key_path, value):
    def edit(state):
        *parents, last = key_path
        target = state
        for k in parents:
            target = target[k]
        if value is KeyError:
            del target[last]
        else:
            target[last] = value(target[last]) if callable(value) else value
    return edit


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (_edit(["rng"], KeyError), "'rng' is missing: expected a dict of RNG states"),
        (_edit(["config"], KeyError), "'config' is missing"),
        (_edit(["epoch"], -1), "'epoch': expected an int >= 0 .*got -1"),
        (_edit(["epoch"], "1"), "'epoch': expected an int >= 0 .*got str"),
        (_edit(["history", "epochs"], 3), "'history.epochs': expected a list of 1"),
        (_edit(["history", "epochs"], []), "'history.epochs': expected 1 records"),
        (_edit(["history", "epochs", 0, "loss"], "low"), r"'history.epochs\[0\].loss'"),
        (_edit(["modules"], {}), "'modules': expected a list of 1 state dicts"),
        (_edit(["modules", 0], lambda sd: {**sd, "decoder.weight": torch.zeros(2, 2)}),
         r"'modules\[0\]': expected the state of TinyFactor"),
        (_edit(["param_store", "params", "encoder$$$bias"], torch.zeros(5)),
         r"param_store\.params\.encoder\$\$\$bias: expected .*\(2,\)"),
        (_edit(["optim"], [1, 2]), "'optim': expected a dict param name"),
        (_edit(["rng", "shuffle"], torch.zeros(3, dtype=torch.uint8)), "'rng.shuffle'"),
        (_edit(["rng", "python", "internal"], [1, 2]), "'rng.python.internal'"),
        (_edit(["version"], 1), "expected a dict with version 2, got version 1"),
    ],
)
def test_malformed_checkpoint_is_a_checkpoint_error_naming_the_key(tmp_path, svi_steps, edit,
                                                                    match):
    ckpt = tmp_path / "ck.pt"
    _tiny_fit(ckpt)
    state = torch.load(ckpt, weights_only=True)
    edit(state)
    torch.save(state, ckpt)
    svi_steps["n"] = 0
    with pytest.raises(CheckpointError, match=match):
        _tiny_fit(ckpt, epochs=2, resume=True)
    assert svi_steps["n"] == 0


def test_resume_refuses_the_state_of_another_optimizer(tmp_path):
    ckpt = tmp_path / "ck.pt"
    _tiny_fit(ckpt, optim=pyro.optim.Adagrad({"lr": 0.05}))
    for resume in (True, "force"):
        with pytest.raises(CheckpointError, match=r"'optim': expected the state of torch\.optim"
                           r"\.adam\.Adam .*got that of torch\.optim\.adagrad\.Adagrad"):
            _tiny_fit(ckpt, epochs=2, resume=resume)


def test_resume_with_another_architecture_is_a_checkpoint_error(tmp_path):
    ckpt = tmp_path / "ck.pt"
    _tiny_fit(ckpt)
    m = TinyFactor()
    m.decoder = torch.nn.Linear(1, 4, bias=False)
    with pytest.raises(CheckpointError, match=r"'modules\[0\]'.*decoder\.bias"):
        fit(m.model, m.guide, tiny_data(), optim=pyro.optim.Adam({"lr": 0.05}), epochs=2,
            batch_size=16, seed=7, device="cpu", checkpoint=ckpt, resume=True, progress=False)


@pytest.mark.parametrize("case", ["directory", "parent is a file", "unwritable"])
def test_bad_checkpoint_path_is_refused_before_the_first_step(tmp_path, svi_steps, case):
    (tmp_path / "file").write_text("x")
    path = {"directory": tmp_path, "parent is a file": tmp_path / "file" / "ck.pt",
            "unwritable": "/proc/ck.pt"}[case]
    with pytest.raises(CheckpointError, match="checkpoint"):
        _tiny_fit(path, epochs=2)
    assert svi_steps["n"] == 0


@pytest.mark.parametrize(
    ("change", "difference"),
    [
        ({"optim": pyro.optim.Adam({"lr": 0.1})}, "optim.args.lr: 0.05 -> 0.1"),
        ({"batch_size": 32}, "batch_size: 16 -> 32"),
        ({"loss": pyro.infer.TraceMeanField_ELBO()},
         "loss.class: 'pyro.infer.trace_elbo.Trace_ELBO' -> "
         "'pyro.infer.trace_mean_field_elbo.TraceMeanField_ELBO'"),
        ({"loss": pyro.infer.Trace_ELBO(num_particles=2)}, "loss.num_particles: 1 -> 2"),
        ({"data": tiny_data() + 1e-3}, "data.sha256: '"),
        ({"data": tiny_data(80)}, "data.shapes: [[96, 4]] -> [[80, 4]]"),
        ({"shuffle": False}, "shuffle: True -> False"),
        ({"seed": 8}, "seed: 7 -> 8"),
    ],
)
def test_resume_with_another_configuration_is_refused_listing_the_differences(
        tmp_path, svi_steps, change, difference):
    ckpt = tmp_path / "ck.pt"
    _tiny_fit(ckpt)
    svi_steps["n"] = 0
    with pytest.raises(CheckpointError, match="resume='force'") as info:
        _tiny_fit(ckpt, epochs=2, resume=True, **change)
    assert difference in str(info.value) and svi_steps["n"] == 0


def test_all_differences_are_listed_at_once(tmp_path):
    ckpt = tmp_path / "ck.pt"
    _tiny_fit(ckpt)
    with pytest.raises(CheckpointError, match="2 difference") as info:
        _tiny_fit(ckpt, epochs=2, resume=True, batch_size=32, optim=pyro.optim.Adam({"lr": 0.1}))
    assert "batch_size: 16 -> 32" in str(info.value)
    assert "optim.args.lr: 0.05 -> 0.1" in str(info.value)


def test_resume_force_continues_with_the_new_hyperparameters(tmp_path):
    from pgm_lab.optim import Adam

    ckpt = tmp_path / "ck.pt"
    _tiny_fit(ckpt, optim=Adam({"lr": 0.05}))
    optim = Adam({"lr": 0.01})
    hist = _tiny_fit(ckpt, epochs=2, resume="force", optim=optim, batch_size=32)
    assert len(hist.epochs) == 2 and hist.epochs[1].steps == 3  # 96 / 32
    assert {g["lr"] for g in optim.optimizer.param_groups} == {0.01}
    saved = torch.load(ckpt, weights_only=True)
    assert saved["config"]["batch_size"] == 32 and saved["epoch"] == 2


def test_resume_rejects_unknown_modes():
    m = TinyFactor()
    with pytest.raises(ConfigError, match="resume must be False, True or 'force'"):
        fit(m.model, m.guide, tiny_data(), checkpoint="x.pt", resume="yes", progress=False)


def test_stale_temporary_files_of_a_killed_write_are_removed_on_the_next_start(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ckpt = tmp_path / "ck.pt"
    _tiny_fit(ckpt)
    stale = [tmp_path / f".ck.pt.{dead}.tmp", tmp_path / f".ck.history.json.{dead}.tmp"]
    for p in stale:
        p.write_bytes(b"torn")
    _tiny_fit(ckpt, epochs=2, resume=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.history.json", "ck.pt"]
