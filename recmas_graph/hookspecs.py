"""Hook specifications: the contract between recmas_graph and its plugins (pluggy).

Project name and entry-point group: ``recmas_graph``. Every hook is prefixed ``recmas_``.
Built-in roles, link types, topologies and model sources are registered through these same hooks
(see :mod:`recmas_graph.builtin`). Registration hooks take no arguments and return a list; the
registry collects every plugin's list and refuses a name registered twice, naming both plugins.
"""

from __future__ import annotations

from typing import Any

import pluggy

__all__ = ["hookspec", "hookimpl", "PROJECT", "RecmasHookSpecs"]

PROJECT = "recmas_graph"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class RecmasHookSpecs:
    """Registration hooks (phase: start-up)."""

    @hookspec
    def recmas_roles(self) -> list[Any]:
        """Return :class:`recmas_graph.roles.Role` objects to register, each under its ``name``."""

    @hookspec
    def recmas_link_types(self) -> list[Any]:
        """Return :class:`recmas_graph.registry.LinkType` entries (name, kind, lazy factory)."""

    @hookspec
    def recmas_topologies(self) -> list[Any]:
        """Return topologies to register: paths to JSON files or :class:`TopologySpec` objects."""

    @hookspec
    def recmas_model_sources(self) -> list[Any]:
        """Return :class:`recmas_graph.registry.ModelSource` entries (a reference prefix and a loader)."""
