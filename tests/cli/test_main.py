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
