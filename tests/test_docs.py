"""docs/: the API reference names every public module of the package.

The reference itself is built by ``.ci/run`` (``sphinx-build -W``), which fails on a broken
docstring or cross-reference; this test catches a module left out of it: named neither by an
``automodule`` nor found by a ``submodules`` directive (one level of a package, see
docs/conf.py), e.g. a new subpackage with modules of its own.
"""

import importlib
import pkgutil
import re
from pathlib import Path

import pgm_lab
import pgm_lab.guides
import pgm_lab.models

DOCS = Path(__file__).resolve().parents[1] / "docs"
NOT_IN_REFERENCE = ("pgm_lab.cli",)  # documented by ``pgm-lab --help``


def _public_modules() -> set[str]:
    names = set()
    for package in (pgm_lab, pgm_lab.models, pgm_lab.guides):
        names.add(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not any(part.startswith("_") for part in info.name.split(".")):
                names.add(info.name)
    return {n for n in names if not n.startswith(NOT_IN_REFERENCE)}


def _documented_modules() -> set[str]:
    text = "\n".join(p.read_text() for p in (*DOCS.rglob("*.rst"), *DOCS.rglob("*.md"))
                     if "_build" not in p.parts)
    names = set(re.findall(r"^\s*\.\. automodule:: ([\w.]+)", text, flags=re.M))
    directive = r"^\.\. submodules:: ([\w.]+)\n(?:   :exclude: ([\w ]+)\n)?"
    for package_name, exclude in re.findall(directive, text, flags=re.M):
        package = importlib.import_module(package_name)
        names |= {f"{package_name}.{info.name}" for info in pkgutil.iter_modules(package.__path__)
                  if info.name not in exclude.split()}
    return names


def test_every_public_module_is_in_the_api_reference():
    assert _public_modules() - _documented_modules() == set()
