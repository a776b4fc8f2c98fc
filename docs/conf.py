"""Sphinx configuration of the pgm_lab documentation: API reference and example notebooks.

Build (from the repository root, with ``pip install -e ".[docs]"``)::

    sphinx-build -W --keep-going -b html docs docs/_build/html

The reference is generated from the docstrings (Google style, read by napoleon), each object
documented once, in the module that defines it (as Pyro's reference does), every public module
found by itself (``.. submodules:: package``, below); a reference through
the path a user imports it from (``pgm_lab.dag.DAG`` for ``pgm_lab.dag.core.DAG``) resolves to
it too. Every cross-reference inside pgm_lab must resolve (``nitpicky``); references into other
projects are not checked: the build runs offline, without intersphinx inventories.
"""

import importlib
import inspect
import os
import pkgutil

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

import pgm_lab

project = "pgm_lab"
author = "pgm_lab contributors"
copyright = "pgm_lab contributors"
version = release = pgm_lab.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax", "myst_nb"]
exclude_patterns = ["_build"]
html_theme = "furo"
html_title = f"pgm_lab {release}"

autodoc_member_order = "bysource"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # "Attributes:" as fields: autodoc lists NamedTuple fields itself

nitpicky = True
_OTHER_PROJECTS = (r"(torch|pyro|numpy|np|arviz|az|matplotlib|graphviz|sklearn|tqdm|"
                   r"torchvision|opt_einsum|pgmpy|argparse|collections|typing|os|pathlib|dataclasses|"
                   r"contextlib|random|io)(\..+)?")
nitpick_ignore_regex = [(r"py:.*", _OTHER_PROJECTS)]
# other projects' classes named bare, in annotations or in docstrings inherited from Pyro
nitpick_ignore = [("py:class", name)
                  for name in ("Tensor", "Module", "Figure", "ExpandedDistribution")]

# The notebooks run in smoke mode (PGM_LAB_SMOKE=1: loops scaled down), each in a temporary
# folder, with the kernel's inline figures (an inherited MPLBACKEND=Agg would hide them).
# PGM_LAB_DOCS_EXECUTE=off renders them without outputs (a quick check of the docstrings).
# Their stderr (other libraries' notices on import, e.g. ArviZ's and tqdm's) is not rendered:
# the notebooks are checked by the test suite, the pages show their results and figures.
nb_execution_mode = os.environ.get("PGM_LAB_DOCS_EXECUTE", "force")
nb_execution_in_temp = True
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_merge_streams = True
nb_output_stderr = "remove"
os.environ["PGM_LAB_SMOKE"] = "1"
os.environ.pop("MPLBACKEND", None)


def _locate(name: str):
    """The Python object a dotted name denotes (module prefix imported), or None."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr, None)
        return obj
    return None


def _is_ours(obj) -> bool:
    module = obj.__name__ if inspect.ismodule(obj) else getattr(obj, "__module__", None)
    return module is None or module.split(".")[0] == "pgm_lab"


_DOCUMENTED: dict[int, str] = {}  # id(object) -> the dotted name it is documented under


def _index_documented(app, env):
    """Once every page is read: map each documented object to its documented name."""
    _DOCUMENTED.clear()
    _DOCUMENTED.update({id(obj): name for name in env.get_domain("py").objects
                        if (obj := _locate(name)) is not None})


def _resolve_by_identity(app, env, node, contnode):
    """Resolve a Python reference whose target is documented under another dotted name.

    The target is looked up as Python does from the referring docstring (absolute, then
    relative to its class and module); if that object is documented, link there. Otherwise a
    bare name that ends exactly one documented pgm_lab name (``DAG.tables``) links to it, as
    Sphinx does for ``.name`` references. An existing private helper (``_contract``) is not in
    the reference, nor is another project's object named through the referring module
    (``Transform`` imported from torch): they are shown as code, unlinked.
    """
    if node.get("refdomain") != "py":
        return None
    domain = env.get_domain("py")
    target = node["reftarget"].lstrip(".~")
    module, cls = node.get("py:module"), node.get("py:class")
    scopes = [f"{module}.{cls}." if module and cls else None, f"{module}." if module else None]
    for name in [target] + [scope + target for scope in scopes if scope]:
        obj = _locate(name)
        documented = _DOCUMENTED.get(id(obj)) if obj is not None else None
        if documented is not None:
            return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"],
                                       documented, node, contnode)
        if obj is not None and (name.rsplit(".", 1)[-1].startswith("_") or not _is_ours(obj)):
            return contnode
    ends = [name for name in domain.objects if name.endswith("." + target)]
    if len(ends) == 1:
        return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], ends[0],
                                   node, contnode)
    return None


class Submodules(SphinxDirective):
    """``.. submodules:: package``: a section with ``automodule`` for each public module of it.

    Modules (and subpackages) are discovered with ``pkgutil.iter_modules``, private ones and those
    named in ``:exclude:`` left out, so a new module is in the reference without editing it.
    Those named in the content come first, in that order; the others follow alphabetically.
    """

    required_arguments = 1
    has_content = True
    option_spec = {"exclude": directives.unchanged}

    def run(self):
        package = importlib.import_module(self.arguments[0])
        found = {info.name for info in pkgutil.iter_modules(package.__path__)
                 if not info.name.startswith("_")}
        found -= set(self.options.get("exclude", "").split())
        first = " ".join(self.content).split()
        if set(first) - found:
            raise self.error(f"expected modules of {package.__name__} in the content, got "
                             f"{sorted(set(first) - found)}; found {sorted(found)}")
        source, _ = self.get_source_info()
        text = StringList()
        for name in first + sorted(found - set(first)):
            title = f"``{package.__name__}.{name}``"
            for line in (title, "-" * len(title), "", f".. automodule:: {package.__name__}.{name}",
                         "   :members:", "   :undoc-members:", "   :show-inheritance:", ""):
                text.append(line, source)
        container = nodes.Element()
        nested_parse_with_titles(self.state, text, container)
        return container.children


def setup(app):
    app.add_directive("submodules", Submodules)
    app.connect("env-updated", _index_documented)
    app.connect("missing-reference", _resolve_by_identity)
