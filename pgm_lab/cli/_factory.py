"""``--model FILE.py:FACTORY``: a user's ``(model, guide)`` factory loaded from a Python file.

Loading the file runs its code, as ``python FILE.py`` would: that is what the flag asks for.
The factory is called once per training run as ``FACTORY(D)``, ``D`` the number of pixels of
an image, and must return a fresh ``(model, guide)`` pair of Pyro callables, ``model(x)`` and
``guide(x)`` with ``x [N, D]`` and one latent value per image in ``pyro.plate("data", N)``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ..errors import ConfigError

__all__ = ["ModelFactory", "model_factory", "build_pair"]

EXAMPLE = "--model my_models.py:make_model"


class ModelFactory(NamedTuple):
    """A parsed ``--model`` value: the text given and the loaded factory."""

    spec: str
    factory: Callable[[int], Any]


def model_factory(text: str) -> ModelFactory:
    """argparse type of ``--model``: ``FILE.py:FACTORY`` with FILE an existing Python file that
    defines a callable FACTORY (the file is imported to check it)."""
    path_text, sep, name = text.rpartition(":")
    if not sep or not path_text.strip() or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected FILE.py:FACTORY, got {text!r}; try "
                                         f"{EXAMPLE}")
    path = Path(path_text).expanduser()
    if path.suffix != ".py" or not path.is_file():
        what = "missing" if not path.exists() else "not a .py file"
        raise argparse.ArgumentTypeError(f"expected an existing Python file FILE.py before "
                                         f"':{name}', got {path_text!r} ({what})")
    module_name = f"_pgm_lab_user_model_{abs(hash(path.resolve()))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's code may raise anything: report it in one line
        del sys.modules[module_name]
        raise argparse.ArgumentTypeError(f"importing {path_text!r} failed: "
                                         f"{type(exc).__name__}: {exc}") from exc
    factory = getattr(module, name, None)
    if factory is None:
        defined = sorted(n for n, v in vars(module).items()
                         if callable(v) and not n.startswith("_"))
        raise argparse.ArgumentTypeError(f"expected {path_text!r} to define {name!r}, got the "
                                         f"callables {defined}; try one of them")
    if not callable(factory):
        raise argparse.ArgumentTypeError(f"expected {name!r} in {path_text!r} to be callable, "
                                         f"got {type(factory).__name__}")
    return ModelFactory(text, factory)


def build_pair(factory: ModelFactory, d: int, device: torch.device
               ) -> tuple[Callable, Callable]:
    """``factory(d)`` checked to be a ``(model, guide)`` pair of callables, moved to ``device``
    (modules, and the modules that bound methods belong to)."""
    pair = factory.factory(d)
    if not (isinstance(pair, tuple) and len(pair) == 2 and all(map(callable, pair))):
        got = (f"a {len(pair)}-tuple" if isinstance(pair, tuple) else type(pair).__name__)
        raise ConfigError(f"--model {factory.spec}: expected the factory to return a (model, "
                          f"guide) pair of callables, got {got}; try `return vae.model, guide`")
    for fn in pair:
        owner = fn if isinstance(fn, torch.nn.Module) else getattr(fn, "__self__", None)
        if isinstance(owner, torch.nn.Module):
            owner.to(device)
    return pair
