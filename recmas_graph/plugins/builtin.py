"""The built-in plugin: recmas_graph's own roles and the official ``reference:*`` roles, link types,
topologies, model sources and tools.

It uses exactly the hooks a third-party plugin uses; factories and loaders are import paths, so
registering them imports no torch. (The evaluation built-ins, datasets and metrics, are registered
by :mod:`recmas_graph.eval.plugin`.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..topology.catalog import LinkType, ModelSource
from ..topology.roles import Role
from .builtin_roles import BUILTIN_ROLES
from .hookspecs import hookimpl
from .reference_roles import REFERENCE_ROLES

__all__ = ["topologies_dir"]


def topologies_dir() -> Path:
    """Folder of the built-in topology JSON files (inside the wheel, or the source checkout)."""
    packaged = Path(__file__).resolve().parent.parent / "_topologies"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent.parent / "topologies"


@hookimpl
def recmas_roles() -> list[Role]:
    return [*BUILTIN_ROLES.values(), *REFERENCE_ROLES.values()]


@hookimpl
def recmas_link_types() -> list[LinkType]:
    from ..runtime.links import BUILTIN_LINK_TYPES

    return list(BUILTIN_LINK_TYPES)


@hookimpl
def recmas_model_sources() -> list[ModelSource]:
    from ..runtime.sources import BUILTIN_SOURCES

    return list(BUILTIN_SOURCES)


@hookimpl
def recmas_topologies() -> list[Path]:
    return sorted(topologies_dir().glob("*.json"))


@hookimpl
def recmas_tools() -> list[Any]:
    from ..tools import builtin_tools

    return builtin_tools()
