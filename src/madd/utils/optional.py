"""Packages only one feature needs (ONNX export, box AP, Hub weights): imported when that feature runs, with one
clear message naming the package to install when it is missing, instead of a traceback from deep inside a
library. Every such package is still declared in ``pyproject.toml``; this only covers an incomplete install.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence
from types import ModuleType

from madd.errors import MissingDependencyError

INSTALL = 'pip install -e ".[dev]"'


def missing_dependency(package: str, needed_for: str, cause: BaseException | None = None) -> MissingDependencyError:
    """The error for ``package`` (its pip name) being absent when ``needed_for`` runs."""
    detail = f" ({cause})" if cause is not None else ""
    return MissingDependencyError(
        f"{needed_for} needs the package {package!r}, which is not installed{detail}. It is one of madd's "
        f"dependencies (pyproject.toml): install it with `pip install {package}`, or reinstall madd with `{INSTALL}`"
    )


def require(module: str, package: str, needed_for: str) -> ModuleType:
    """``import module`` (pip name ``package``), or :class:`MissingDependencyError` naming the package."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise missing_dependency(package, needed_for, err) from None


def first_installed(modules: Sequence[str], package: str, needed_for: str) -> str:
    """The first of ``modules`` that is installed (checked without importing it), or the error for ``package``."""
    for module in modules:
        if importlib.util.find_spec(module) is not None:
            return module
    raise missing_dependency(package, needed_for)
