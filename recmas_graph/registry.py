"""The registry: everything plugins (built-ins included) register, collected through pluggy.

>>> reg = Registry.create(load_entrypoints=False)
>>> "planner" in reg.roles and "outer_ln_res" in reg.link_types
True
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterable

import pluggy

from .errors import PluginError, SpecError
from .hookspecs import PROJECT, RecmasHookSpecs
from .roles import Role
from .spec import TopologySpec, parse_topology, read_topology_file

__all__ = [
    "LinkType",
    "ModelSource",
    "TopologyEntry",
    "Registry",
    "get_registry",
    "set_registry",
    "resolve_topology",
    "import_object",
]


def import_object(path: str) -> Any:
    """Import ``"package.module:attr"`` lazily (keeps torch out of spec/graph/render imports)."""
    module_name, _, attr = path.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr) if attr else module


@dataclass(frozen=True)
class LinkType:
    """A registered link type.

    ``kind`` is ``"inner"`` (hidden -> hidden of one agent), ``"outer"`` (source hidden -> target
    hidden) or ``"any"``. ``factory`` is a callable ``(in_dim, out_dim, **options) -> nn.Module`` or
    an import path ``"module:attr"`` to one, imported only when a link is built.
    """

    name: str
    kind: str
    factory: str | Callable[..., Any]
    description: str = ""

    def load_factory(self) -> Callable[..., Any]:
        """The constructor, importing it when given as a path."""
        return import_object(self.factory) if isinstance(self.factory, str) else self.factory


@dataclass(frozen=True)
class ModelSource:
    """A registered model source: references ``"<prefix>:<rest>"`` are resolved by ``loader``.

    ``loader`` is a callable or import path ``(ref: str) -> LoadedModel``; ``hidden_size`` (optional)
    answers ``(ref) -> int | None`` without loading weights. The prefix ``""`` is the fallback for
    references without a registered prefix (Hugging Face ids and local folders).
    """

    prefix: str
    loader: str | Callable[..., Any]
    description: str = ""
    hidden_size: str | Callable[..., Any] | None = None

    def load_loader(self) -> Callable[..., Any]:
        """The loader callable."""
        return import_object(self.loader) if isinstance(self.loader, str) else self.loader


@dataclass
class TopologyEntry:
    """A registered topology: where it came from and how to get its spec."""

    name: str
    plugin: str
    source: Path | TopologySpec

    @cached_property
    def spec(self) -> TopologySpec:
        """The parsed spec (files are read on first use)."""
        if isinstance(self.source, TopologySpec):
            return self.source
        return read_topology_file(self.source)


@dataclass
class Registry:
    """All registered roles, link types, topologies and model sources, with their plugins."""

    plugin_manager: pluggy.PluginManager
    roles: dict[str, Role] = field(default_factory=dict)
    link_types: dict[str, LinkType] = field(default_factory=dict)
    topologies: dict[str, TopologyEntry] = field(default_factory=dict)
    model_sources: dict[str, ModelSource] = field(default_factory=dict)
    origin: dict[tuple[str, str], str] = field(default_factory=dict)

    @classmethod
    def create(cls, plugins: Iterable[Any] = (), *, load_entrypoints: bool | None = None) -> "Registry":
        """Build a registry from the built-ins, ``plugins`` and (unless disabled) installed entry points.

        ``load_entrypoints=None`` loads them unless the environment variable
        ``RECMAS_DISABLE_PLUGINS`` is set to a non-empty value other than ``0``.
        """
        from . import builtin

        pm = pluggy.PluginManager(PROJECT)
        pm.add_hookspecs(RecmasHookSpecs)
        pm.register(builtin, name="recmas_graph.builtin")
        for plugin in plugins:
            pm.register(plugin)
        if load_entrypoints is None:
            load_entrypoints = os.environ.get("RECMAS_DISABLE_PLUGINS", "") in ("", "0")
        if load_entrypoints:
            try:
                pm.load_setuptools_entrypoints(PROJECT)
            except Exception as err:  # a plugin that fails to import
                raise PluginError(
                    f"an installed plugin failed to load: {type(err).__name__}: {err}",
                    culprit="entry points of group 'recmas_graph'",
                    hint="fix or uninstall the plugin, or set RECMAS_DISABLE_PLUGINS=1",
                ) from err
        registry = cls(plugin_manager=pm)
        registry._collect()
        return registry

    def _call_each(self, hook_name: str) -> list[tuple[str, Any]]:
        """Call a registration hook plugin by plugin, naming the plugin when one raises."""
        results: list[tuple[str, Any]] = []
        caller = getattr(self.plugin_manager.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            try:
                value = impl.function()
            except Exception as err:
                raise PluginError(
                    f"hook {hook_name} raised {type(err).__name__}: {err}",
                    culprit=f"plugin {impl.plugin_name!r}",
                    hint="fix the plugin, uninstall it, or set RECMAS_DISABLE_PLUGINS=1",
                ) from err
            for item in value or []:
                results.append((impl.plugin_name, item))
        return results

    def _add(self, table: dict[str, Any], kind: str, name: str, plugin: str, value: Any) -> None:
        if name in table:
            raise PluginError(
                f"{kind} {name!r} is registered twice: by plugin {self.origin[(kind, name)]!r} and by "
                f"plugin {plugin!r}",
                culprit=f"plugin {plugin!r}",
                hint="rename one of them, or uninstall one of the plugins",
            )
        table[name] = value
        self.origin[(kind, name)] = plugin

    def _collect(self) -> None:
        for plugin, role in self._call_each("recmas_roles"):
            self._add(self.roles, "role", role.name, plugin, role)
        for plugin, link in self._call_each("recmas_link_types"):
            self._add(self.link_types, "link type", link.name, plugin, link)
        for plugin, source in self._call_each("recmas_model_sources"):
            self._add(self.model_sources, "model source", source.prefix, plugin, source)
        for plugin, item in self._call_each("recmas_topologies"):
            if isinstance(item, TopologySpec):
                name, source = item.name, item
            else:
                source = Path(item)
                name = source.stem
            self._add(self.topologies, "topology", name, plugin, TopologyEntry(name, plugin, source))


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry (built on first use)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = Registry.create()
    return _REGISTRY


def set_registry(registry: Registry | None) -> None:
    """Replace the process-wide registry (``None``: rebuild on next use). Used by tests."""
    global _REGISTRY
    _REGISTRY = registry


def resolve_topology(ref: str | Path | TopologySpec | dict[str, Any], registry: Registry | None = None) -> TopologySpec:
    """Resolve a built-in / plugin topology name, a JSON file path, a dict or a spec into a spec."""
    if isinstance(ref, TopologySpec):
        return ref
    if isinstance(ref, dict):
        return parse_topology(ref)
    path = Path(ref)
    if path.suffix == ".json" or path.exists() or os.sep in str(ref):
        return read_topology_file(path)
    registry = registry or get_registry()
    entry = registry.topologies.get(str(ref))
    if entry is None:
        known = ", ".join(sorted(registry.topologies)) or "none"
        raise SpecError(
            "no such built-in topology and no such file",
            culprit=str(ref),
            hint=f"give a path to a .json file or one of: {known}",
        )
    return entry.spec
