"""The warnings policy of the suite (pyproject's filterwarnings) and pgm_lab's warning class.

pgm_lab's own warnings and anything attributed to our code fail a test; a notice a third-party
library attributes to itself does not, whatever its text.
"""

import ast
import importlib
import sys
import warnings
from pathlib import Path

import pytest

from pgm_lab import errors
from pgm_lab.errors import PgmLabWarning

ROOT = Path(__file__).resolve().parents[1]

NOTICES = (DeprecationWarning, PendingDeprecationWarning, FutureWarning, ImportWarning)


def _library(tmp_path, monkeypatch, name: str, source: str):
    """Import a throw-away third-party package ``name`` whose ``__init__`` is ``source``."""
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("import warnings\n" + source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return importlib.import_module(name)


@pytest.mark.parametrize("category", NOTICES, ids=lambda c: c.__name__)
def test_a_third_party_notice_at_import_does_not_fail(tmp_path, monkeypatch, category):
    # any text: the policy must hold for the next library's notice, not only ArviZ's
    source = f"warnings.warn('a notice never seen before', {category.__name__})\n"
    _library(tmp_path, monkeypatch, f"notice_{category.__name__.lower()}", source)


@pytest.mark.parametrize("category", NOTICES, ids=lambda c: c.__name__)
def test_a_deprecation_attributed_to_our_code_fails(tmp_path, monkeypatch, category):
    # a library deprecating an API we call warns with stacklevel=2: the warning names our line
    lib = _library(tmp_path, monkeypatch, "deprecating_lib",
                   f"def old_api():\n    warnings.warn('old_api is deprecated', "
                   f"{category.__name__}, stacklevel=2)\n")
    with pytest.raises(category, match="old_api is deprecated"):
        lib.old_api()
    with pytest.raises(category):
        warnings.warn_explicit("x", category, "train.py", 1, module="pgm_lab.train")


@pytest.mark.parametrize("category", (UserWarning, RuntimeWarning))
def test_library_misuse_reports_fail_from_any_module(category):
    # e.g. Pyro's "Found vars in model but not guide" is issued from pyro.util's own frame
    with pytest.raises(category):
        warnings.warn_explicit("site in guide but not model", category, "util.py", 1,
                               module="pyro.util")


class _OurDeprecation(PgmLabWarning, FutureWarning):
    pass


@pytest.mark.parametrize("module", ("pgm_lab.dag.core", "tests.dag.test_core", "notebook_cell",
                                    "some_lib"))
@pytest.mark.parametrize("category", (PgmLabWarning, _OurDeprecation))
def test_pgm_lab_warnings_fail_wherever_attributed(module, category):
    with pytest.raises(category):
        warnings.warn_explicit("ours", category, "f.py", 1, module=module)


def _warn_calls():
    paths = sorted(p for d in ("pgm_lab", "models", "guides") for p in (ROOT / d).rglob("*.py"))
    for path in paths:
        for call in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(call, ast.Call) and (
                    getattr(call.func, "attr", None) == "warn"
                    or getattr(call.func, "id", None) == "warn"):
                yield f"{path.relative_to(ROOT)}:{call.lineno}", call


def test_every_warning_pgm_lab_issues_is_a_pgm_lab_warning_at_the_callers_line():
    calls = list(_warn_calls())
    assert calls, "expected at least the graphviz fallback warning in pgm_lab/dag/render.py"
    for where, call in calls:
        keywords = {k.arg: k.value for k in call.keywords}
        category = keywords.get("category", call.args[1] if len(call.args) > 1 else None)
        name = getattr(category, "id", None)
        assert issubclass(getattr(errors, str(name), type), PgmLabWarning), (where, name)
        stacklevel = keywords.get("stacklevel")
        assert isinstance(stacklevel, ast.Constant) and stacklevel.value >= 2, where

