import subprocess
import sys

import pytest

import pgm_lab
from pgm_lab.cli.main import build_parser, main


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
