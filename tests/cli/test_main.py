import argparse
import os
import subprocess
import sys
import warnings

import pytest

import pgm_lab
from pgm_lab.cli import main as cli_main
from pgm_lab.cli.main import build_parser, main
from pgm_lab.errors import PgmLabWarning


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "pgm-lab" in out
    sub = build_parser()._subparsers._group_actions[0].choices  # registered subcommands
    for name in sub:
        assert name in out


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert pgm_lab.__version__ in capsys.readouterr().out


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "usage: pgm-lab" in capsys.readouterr().out


def test_unknown_command_is_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_console_script_runs_as_module():
    proc = subprocess.run([sys.executable, "-m", "pgm_lab", "--version"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and pgm_lab.__version__ in proc.stdout


def _cli_with_command(monkeypatch, run):
    """Make ``main(["noisy"])`` call ``run()`` (instead of discovering the real subcommands)."""
    parser = argparse.ArgumentParser(prog="pgm-lab")
    parser.add_subparsers().add_parser("noisy").set_defaults(func=lambda args: run())
    monkeypatch.setattr(cli_main, "build_parser", lambda: parser)


def test_cli_hides_warnings_of_other_libraries(monkeypatch, capsys):
    def run():
        for category in (FutureWarning, DeprecationWarning, UserWarning, RuntimeWarning):
            warnings.warn_explicit("a notice", category, "lib.py", 1, module="some_lib.sub")
        return 0

    _cli_with_command(monkeypatch, run)
    assert main(["noisy"]) == 0
    assert capsys.readouterr().err == ""


def test_cli_keeps_pgm_lab_warnings(monkeypatch):
    # issued with a stacklevel pointing at the calling pgm_lab.cli line; the suite's policy
    # turns them into errors, a user sees them on stderr
    _cli_with_command(monkeypatch, lambda: warnings.warn_explicit(
        "ours", PgmLabWarning, "bn.py", 1, module="pgm_lab.cli.bn"))
    with pytest.raises(PgmLabWarning, match="ours"):
        main(["noisy"])


@pytest.mark.slow
def test_rbm_command_on_a_fresh_machine_prints_no_library_notice(tmp_path):
    # ArviZ 0.23 warns on its first import of the day, decided by a stamp in the user cache
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env.update({"HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
                "XDG_CONFIG_HOME": str(tmp_path / "config"), "MPLBACKEND": "Agg"})
    proc = subprocess.run([sys.executable, "-m", "pgm_lab", "rbm", "--dataset", "bars",
                           "--hidden", "4", "--epochs", "1", "--gibbs-steps", "2",
                           "--no-progress", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


# --- bad invocations: one line on stderr naming the flag, no traceback, before any work ------

AFILE = "afile"  # replaced by a file in tmp_path
BN_SAMPLE = ["bn", "sample", "asia"]
RBM = ["rbm", "--dataset", "bars", "--hidden", "4", "--epochs", "1", "--no-progress"]
CB = ["compare-bounds", "--epochs", "1", "--objectives", "elbo", "--no-progress"]
FULL = "/dev/full"  # every write fails with ENOSPC
UNWRITABLE = "/proc/pgm_lab_out"  # not writable even for root
BAD_INVOCATIONS = [
    # (argv, the flag the error line must name); the first 19 are the ones of the report
    ([*BN_SAMPLE, "-n", str(10**15)], "--num-samples"),  # MemoryError
    ([*BN_SAMPLE, "--seed", "-1"], "--seed"),  # accepted while rbm/compare-bounds crashed
    ([*BN_SAMPLE, "--seed", str(2**64 + 1)], "--seed"),  # OverflowError
    ([*BN_SAMPLE, "--out", FULL], "--out"),  # OSError traceback
    ([*RBM, "--seed", "-1"], "--seed"),  # ValueError from NumPy after loading the data
    ([*RBM, "--seed", str(2**64 + 1)], "--seed"),
    ([*RBM, "--hidden", str(10**12)], "--hidden"),  # MemoryError
    ([*RBM, "--out", AFILE], "--out"),
    ([*RBM, "--out", f"{AFILE}/sub"], "--out"),  # NotADirectoryError
    ([*RBM, "--out", UNWRITABLE], "--out"),  # FileNotFoundError
    ([*RBM, "--checkpoint", f"{UNWRITABLE}/c.pt"], "--checkpoint"),  # after training
    ([*RBM, "--checkpoint", f"{AFILE}/c.pt"], "--checkpoint"),  # after training
    ([*RBM, "--checkpoint", "."], "--checkpoint"),  # IsADirectoryError after training
    ([*CB, "--seed", "-1"], "--seed"),
    ([*CB, "--seed", str(2**64 + 1)], "--seed"),
    ([*CB, "--z-dim", str(10**12)], "--z-dim"),  # MemoryError
    ([*CB, "--out", AFILE], "--out"),  # FileExistsError
    ([*CB, "--out", FULL], "--out"),
    ([*CB, "--epochs", "0"], "--epochs"),  # evaluated untrained networks, exit 0
    # beyond the report
    ([*BN_SAMPLE, "--json", "--out", FULL], "--out"),
    ([*BN_SAMPLE, "--out", "."], "--out"),
    ([*BN_SAMPLE, "-n", "\u0663"], "--num-samples"),  # Arabic-Indic 3: int() takes it
    (["bn", "query", "asia", "lung", "-e", "=yes"], "--evidence"),
    ([*RBM, "--epochs", "0"], "--epochs"),
    ([*RBM, "--resume"], "--resume"),
    ([*RBM, "--dataset", "mnist"], "--data-dir"),
    ([*RBM, "--out", FULL], "--out"),
    ([*CB, "--objectives", f"iwae-{10**12}"], "--objectives"),
    ([*CB, "--eval-k", "1", str(10**12)], "--eval-k"),
    ([*CB, "--threads", str(10**6)], "--threads"),
    ([*CB, "--out", f"{AFILE}/sub"], "--out"),
    ([*CB, "--out", UNWRITABLE], "--out"),
    ([*CB, "--device", "tpu"], "--device"),
    ([*CB, "--out", ""], "--out"),  # wrote into the current folder
    ([*RBM, "--dataset", "mnist", "--data-dir", "missing"], "--data-dir"),
]


def _exit_code(argv):
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.fixture
def no_training(monkeypatch):
    """Training of any command fails the test: bad flags are refused before it."""
    import pgm_lab.cli.compare_bounds as cli_cb
    from pgm_lab.rbm import RBM

    def refuse(*args, **kwargs):
        raise AssertionError("a bad invocation reached training")

    monkeypatch.setattr(cli_cb, "fit", refuse)
    monkeypatch.setattr(RBM, "fit", refuse)


@pytest.mark.parametrize(("argv", "flag"), BAD_INVOCATIONS, ids=lambda v: " ".join(v)[-40:]
                         if isinstance(v, list) else v)
def test_bad_invocation_is_one_line_naming_the_flag(argv, flag, tmp_path, monkeypatch, capsys,
                                                    no_training):
    if FULL in argv and not os.path.exists(FULL):
        pytest.skip("no /dev/full here")
    (tmp_path / AFILE).write_text("")
    monkeypatch.chdir(tmp_path)
    if "--out" not in argv and argv[0] != "bn":
        argv = [*argv, "--out", str(tmp_path / "out")]
    code = _exit_code(argv)
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code not in (0, None), (argv, out)
    assert len(lines) == 1 and flag in lines[0], err
    assert lines[0].startswith(f"pgm-lab {argv[0]}") and "Traceback" not in err


def _numeric_flags():
    """(argv prefix, flag) for every option of every subcommand with a numeric argparse type."""
    def walk(parser, prefix):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, [*prefix, name])
            name = getattr(action.type, "__name__", "")
            if action.option_strings and name.startswith(("integer", "number", "seed")):
                yield prefix, action.option_strings[-1]

    for prefix, flag in walk(build_parser(), []):
        positionals = {"info": ["asia"], "sample": ["asia"], "query": ["asia", "lung"]}
        yield [*prefix, *positionals.get(prefix[-1], [])], flag


NUMERIC_FLAGS = list(_numeric_flags())


def test_every_numeric_flag_is_fuzzed():
    flags = {flag for _, flag in NUMERIC_FLAGS}
    assert {"--num-samples", "--seed", "--hidden", "--z-dim", "--epochs", "--lr",
            "--momentum", "--eval-k", "--threads", "--ais-betas"} <= flags
    assert len(NUMERIC_FLAGS) >= 25


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "-inf", "1e400", "\u0663", "\uff11", "",
                                   "0x10", "1e30", "1.5", str(2**64 + 1)])
def test_every_numeric_flag_refuses_garbage_in_one_line(value, capsys):
    for prefix, flag in NUMERIC_FLAGS:
        if value in ("1e30", "1.5", str(2**64 + 1)) and flag in FLOAT_FLAGS:
            continue  # finite reals: valid values of these flags
        with pytest.raises(SystemExit) as exc:
            build_parser().parse_args([*prefix, flag, value])
        assert exc.value.code == 2
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and f"argument {flag}" in lines[0].replace("-n/", ""), lines


FLOAT_FLAGS = {"--lr", "--momentum", "--weight-decay"}


# --- runtime errors: one line, exit 1 ------------------------------------------------------

def test_os_error_while_running_is_one_line(monkeypatch, capsys):
    def run():
        raise OSError(28, "No space left on device", "runs/x/results.json")

    _cli_with_command(monkeypatch, run)
    assert main(["noisy"]) == 1
    assert capsys.readouterr().err == ("pgm-lab: error: No space left on device: "
                                       "'runs/x/results.json'\n")


def test_os_error_inside_out_names_the_flag(monkeypatch, capsys, tmp_path):
    parser = argparse.ArgumentParser(prog="pgm-lab")
    noisy = parser.add_subparsers().add_parser("noisy")
    noisy.add_argument("--out")

    def run(args):
        raise OSError(28, "No space left on device", str(tmp_path / "results.json"))

    noisy.set_defaults(func=run)
    monkeypatch.setattr(cli_main, "build_parser", lambda: parser)
    assert main(["noisy", "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (f"pgm-lab: error: cannot write --out: No space left on "
                                       f"device: '{tmp_path / 'results.json'}'\n")


def test_out_of_memory_is_one_line_and_other_runtime_errors_are_bugs(monkeypatch, capsys):
    def oom():
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: "
                           "can't allocate memory: you tried to allocate 8000 bytes.\nmore")

    _cli_with_command(monkeypatch, oom)
    assert main(["noisy"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pgm-lab: error: out of memory; try smaller") and err.count("\n") == 1

    def bug():
        raise RuntimeError("shape mismatch")

    _cli_with_command(monkeypatch, bug)
    with pytest.raises(RuntimeError, match="shape mismatch"):  # a traceback, to be reported
        main(["noisy"])


def test_multi_line_library_message_is_one_line(monkeypatch, capsys):
    from pgm_lab.errors import DataError

    def run():
        raise DataError("expected x\n  got y")

    _cli_with_command(monkeypatch, run)
    assert main(["noisy"]) == 1
    assert capsys.readouterr().err == "pgm-lab: error: expected x got y\n"


def test_interrupt_is_one_line(monkeypatch, capsys):
    def run():
        raise KeyboardInterrupt

    _cli_with_command(monkeypatch, run)
    assert main(["noisy"]) == 130
    assert capsys.readouterr().err == "pgm-lab: interrupted\n"


def test_broken_pipe_in_process_is_quiet(monkeypatch, capsys):
    def run():
        raise BrokenPipeError(32, "Broken pipe")

    _cli_with_command(monkeypatch, run)
    assert main(["noisy"]) == 141
    assert capsys.readouterr().err == ""


def test_closed_pipe_ends_the_command_quietly():
    """``pgm-lab bn sample alarm -n 200000 | head -1``: BrokenPipeError traceback before."""
    proc = subprocess.Popen([sys.executable, "-m", "pgm_lab", "bn", "sample", "alarm", "-n",
                             "200000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    header = proc.stdout.readline()
    proc.stdout.close()  # what head does after its first line
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=300) != 0
    assert header.startswith(b"HYPOVOLEMIA,") and err == ""


# --- help: defaults shown, plain text --------------------------------------------------------

def _all_parsers(parser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_parsers(sub)


def test_help_shows_defaults_and_plain_text():
    parsers = list(_all_parsers(build_parser()))
    assert len(parsers) >= 7
    for parser in parsers:
        text = parser.format_help()
        for rest in ("``", ":func:", ":class:", ":meth:", "DESIGN"):
            assert rest not in text, (parser.prog, rest)
        for action in parser._actions:
            shows_default = action.default not in (None, False, argparse.SUPPRESS, [])
            if action.option_strings and shows_default and action.dest != "help":
                assert action.help, (parser.prog, action.dest)  # else no default is shown
    rbm = " ".join(next(p for p in parsers if p.prog == "pgm-lab rbm").format_help().split())
    top = " ".join(parsers[0].format_help().split())
    assert "Exit status: 0 done; 2 a bad flag" in top
    assert "(default: 100)" in rbm and "(default: 0.06)" in rbm and "(default: pcd)" in rbm
