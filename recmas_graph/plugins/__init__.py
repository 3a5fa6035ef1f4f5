"""The plugin layer: hook specifications, the plugin manager (:class:`Registry`) and the built-ins.

Plugins import their marker and record types from here or from the package root::

    from recmas_graph import hookimpl, LinkType, Role, SlotSection
"""

from __future__ import annotations

from .hookspecs import HOOK_PHASES, PROJECT, RecmasHookSpecs, hookimpl, hookspec
from .manager import (BUILTIN_PLUGIN, DEFAULT_PLUGINS, PLUGIN_LOGGER, Registry, TopologyEntry, default_registry,
                      resolve_topology, set_default_registry)

__all__ = [
    "hookimpl", "hookspec", "PROJECT", "RecmasHookSpecs", "HOOK_PHASES",
    "Registry", "TopologyEntry", "default_registry", "set_default_registry", "resolve_topology",
    "DEFAULT_PLUGINS", "BUILTIN_PLUGIN", "PLUGIN_LOGGER",
]
