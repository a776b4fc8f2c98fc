"""Sphinx configuration of the pgm_lab documentation: API reference and example notebooks.

Build (from the repository root, with ``pip install -e ".[docs]"``)::

    sphinx-build -W --keep-going -b html docs docs/_build/html

The reference is generated from the docstrings (Google style, read by napoleon), each object
documented once, in the module that defines it (as Pyro's reference does); a reference through
the path a user imports it from (``pgm_lab.dag.DAG`` for ``pgm_lab.dag.core.DAG``) resolves to
it too. Every cross-reference inside pgm_lab must resolve (``nitpicky``); references into other
projects are not checked: the build runs offline, without intersphinx inventories.
"""

import importlib
import os

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
autodoc_class_signature = "separated"
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


def _resolve_by_identity(app, env, node, contnode):
    """Resolve a Python reference whose target is documented under another dotted name.

    The target is looked up as Python does from the referring docstring (absolute, then
    relative to its class and module); if that object is documented, link there. Otherwise a
    bare name that ends exactly one documented pgm_lab name (``DAG.tables``) links to it, as
    Sphinx does for ``.name`` references. An existing private helper (``_contract``) is not in
    the reference: it is shown as code, unlinked.
    """
    if node.get("refdomain") != "py":
        return None
    domain = env.get_domain("py")
    if not hasattr(env, "_pgm_lab_documented"):
        env._pgm_lab_documented = {id(obj): name for name in domain.objects
                                   if (obj := _locate(name)) is not None}
    target = node["reftarget"].lstrip(".~")
    module, cls = node.get("py:module"), node.get("py:class")
    scopes = [f"{module}.{cls}." if module and cls else None, f"{module}." if module else None]
    for name in [target] + [scope + target for scope in scopes if scope]:
        obj = _locate(name)
        documented = env._pgm_lab_documented.get(id(obj)) if obj is not None else None
        if documented is not None:
            return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"],
                                       documented, node, contnode)
        if obj is not None and name.rsplit(".", 1)[-1].startswith("_"):
            return contnode
    ends = [name for name in domain.objects if name.endswith("." + target)]
    if len(ends) == 1:
        return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], ends[0],
                                   node, contnode)
    return None


def setup(app):
    app.connect("missing-reference", _resolve_by_identity)
