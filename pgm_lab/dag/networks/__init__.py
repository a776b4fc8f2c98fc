"""Small Bayesian networks from the bnlearn repository, shipped as BIF package data.

``read_bif("asia")`` loads one by name. Source: https://www.bnlearn.com/bnrepository/
(files as distributed in pgmpy's wheel, decompressed, with the network block named after the
network instead of bnlearn's ``unknown``). Original references: asia --
Lauritzen and Spiegelhalter (1988); cancer -- Korb and Nicholson (2010); earthquake -- Korb
and Nicholson (2010); sachs -- Sachs et al. (2005); survey -- Scutari and Denis (2014);
child -- Spiegelhalter and Cowell (1992); alarm -- Beinlich et al. (1989).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ...errors import DAGError
from ..graph import suggest

__all__ = ["available", "network_path"]


def available() -> tuple[str, ...]:
    """Names of the bundled networks, sorted."""
    folder = resources.files(__name__)
    return tuple(sorted(p.name[: -len(".bif")] for p in folder.iterdir()
                        if p.name.endswith(".bif")))


def network_path(name: str) -> Path:
    """Path of the bundled network ``name``.

    Raises:
        DAGError: no such file and no bundled network of that name.
    """
    names = available()
    if name not in names:
        raise DAGError(f"{name!r} is neither a file nor a bundled network{suggest(name, names)}; "
                       f"bundled networks are {list(names)}")
    return Path(str(resources.files(__name__).joinpath(f"{name}.bif")))
