"""Lazy module attributes: a package names its torch-dependent exports and imports them on first use."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, table: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``table[name]`` (a submodule path relative to ``package``)
    the first time ``name`` is asked for.

    >>> getattr_ = lazy_exports("recmas_graph.topology", {"Pass": "schedule"})
    >>> getattr_("Pass").__name__
    'Pass'
    """

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f".{module}", package), name)

    return __getattr__
