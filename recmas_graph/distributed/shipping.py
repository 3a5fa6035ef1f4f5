"""Rebuilding the caller's registry in a Ray actor or worker (or a data-parallel training worker).

Actors and workers compile the topology again in their own process. With the installed plugins
alone, a role, link type, metric or tool that the caller registered with
``Registry.create([my_plugin])`` would be missing there. :func:`ship_registry` packs what
rebuilds the caller's registry: the plugins given to ``Registry.create``, each pickled by Ray's
cloudpickle (a module travels by name and is imported there; an object or a class defined in a
function travels by value), and whether entry points load. :meth:`ShippedRegistry.rebuild`
makes the registry on the other side. A plugin that cannot travel is refused on the caller's side,
and one that cannot be loaded on the other side is named there, each with the fix. Without Ray,
the ``cloudpickle`` package packs the plugins (and without it, ``pickle``: plugins travel by
import path only); ``where`` names the processes in the messages.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

from ..errors import PluginError

__all__ = ["ShippedRegistry", "ship_registry"]

_FIX = ("make its module importable in those processes (install it as a package with a recmas_graph entry point, "
        "or for Ray put it in the runtime_env's py_modules), or define the plugin inside a function so it travels "
        "by value")


@dataclass(frozen=True)
class ShippedRegistry:
    """What rebuilds a registry in another process: ``(name, pickled plugin)`` pairs and whether
    entry points load. No plugins and entry points on: the process's default registry."""

    plugins: tuple[tuple[str, bytes], ...] = ()
    load_entrypoints: bool = True

    def rebuild(self, where: str = "a Ray process") -> Any:
        """The registry (a :class:`~recmas_graph.plugins.Registry`), in this process (``where``, for messages)."""
        from ..plugins.manager import Registry, default_registry

        if not self.plugins and self.load_entrypoints:
            return default_registry()
        items = []
        for name, blob in self.plugins:
            try:
                items.append((name, pickle.loads(blob)))
            except Exception as err:  # noqa: BLE001 - any failure to load is the plugin's
                raise PluginError(f"the plugin {name!r} of the caller's registry cannot be loaded in {where}: "
                                  f"{type(err).__name__}: {err}", culprit=f"plugin {name!r}", hint=_FIX) from None
        return Registry.create(items, load_entrypoints=self.load_entrypoints)


def _pickler() -> Any:
    """Ray's cloudpickle, else the cloudpickle package, else pickle (by import path only)."""
    try:
        from ray import cloudpickle

        return cloudpickle
    except ImportError:
        pass
    try:
        import cloudpickle as packaged

        return packaged
    except ImportError:
        return pickle


def ship_registry(registry: Any, where: str = "Ray processes") -> ShippedRegistry:
    """Pack ``registry`` (a :class:`~recmas_graph.plugins.Registry`, or a catalog without plugins)
    for other processes (``where``, for messages); a plugin that cannot be pickled is refused, named."""
    given = tuple(getattr(registry, "given_plugins", ()))
    if not given:
        return ShippedRegistry((), bool(getattr(registry, "loaded_entrypoints", True)))
    cloudpickle = _pickler()

    packed = []
    for name, plugin in given:
        try:
            packed.append((name, cloudpickle.dumps(plugin)))
        except Exception as err:  # noqa: BLE001 - any failure to pickle is the plugin's
            raise PluginError(f"the plugin {name!r} of this registry cannot be sent to {where}: "
                              f"{type(err).__name__}: {err}", culprit=f"plugin {name!r}",
                              hint="keep unpicklable state (locks, open files, models) out of the plugin object, "
                                   "or " + _FIX) from None
    return ShippedRegistry(tuple(packed), bool(registry.loaded_entrypoints))
