"""The wheel installs models/ and guides/ inside the pgm_lab namespace, with package data."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--target", str(target), str(ROOT)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return target


@pytest.mark.slow
def test_models_and_guides_import_from_installed_copy(installed, tmp_path):
    code = (
        "import pgm_lab, pgm_lab.models, pgm_lab.guides, pgm_lab.cli.main;"
        "print(pgm_lab.__file__); print(pgm_lab.models.__file__); print(pgm_lab.guides.__file__)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, env={"PYTHONPATH": str(installed), "PATH": "/usr/bin"},
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    files = [Path(p) for p in proc.stdout.split()]
    assert all(installed in p.parents for p in files), files
    assert files[1].parent.name == "models" and files[1].parent.parent.name == "pgm_lab"
    assert not (installed / "models").exists() and not (installed / "guides").exists()


@pytest.mark.slow
def test_package_data_is_installed(installed):
    shipped = sorted(p.name for p in (ROOT / "pgm_lab" / "dag" / "networks").glob("*.bif"))
    got = sorted(p.name for p in (installed / "pgm_lab" / "dag" / "networks").glob("*.bif"))
    assert got == shipped
