"""The registry: everything plugins (built-ins included) register, collected through pluggy.

Installed plugins are loaded from the entry-point group ``recmas_graph`` unless
``RECMAS_DISABLE_PLUGINS=1``; ``RECMAS_TRACE_PLUGINS=1`` logs every hook call to the logger
``recmas_graph.plugins`` (level DEBUG). A plugin that fails to import, fails pluggy's validation or
raises inside a hook is reported as a :class:`~recmas_graph.errors.PluginError` naming the plugin
(and the hook).

>>> reg = Registry.create(load_entrypoints=False)
>>> "planner" in reg.roles and "outer_ln_res" in reg.link_types
True
>>> "python" in reg.tools and "gsm8k" in reg.datasets and "boxed_math" in reg.metrics
True
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterable

import pluggy

from .errors import PluginError, RecmasError, SpecError
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
    "BUILTIN_PLUGIN",
    "PLUGIN_LOGGER",
]

#: Name under which the built-in plugin (:mod:`recmas_graph.builtin`) is registered.
BUILTIN_PLUGIN = "recmas_graph.builtin"
#: Logger that receives hook-call traces when ``RECMAS_TRACE_PLUGINS=1``.
PLUGIN_LOGGER = "recmas_graph.plugins"

_log = logging.getLogger(PLUGIN_LOGGER)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def _plugin_name(plugin: Any) -> str:
    """A readable name for a plugin passed in code: a module's or class's name, else its type's."""
    name = getattr(plugin, "__name__", None)
    if isinstance(name, str) and name:
        return name
    return type(plugin).__name__


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

    ``loader`` is a callable or import path ``(ref: str, *, device: torch.device, dtype: torch.dtype |
    "auto") -> LoadedModel`` (called by :func:`recmas_graph.models.load_model`, which normalizes device and
    dtype first); ``hidden_size`` (optional)
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
    """Everything registered by plugins (the built-in one included), with the plugin of every name.

    Tables map a name to its object: ``roles``, ``link_types``, ``topologies``, ``model_sources``
    (by prefix), ``datasets``, ``metrics`` and ``tools``. ``origin[(kind, name)]`` is the plugin that
    registered it; ``plugin_dists[plugin]`` is ``(distribution, version)`` for installed plugins.
    """

    plugin_manager: pluggy.PluginManager
    roles: dict[str, Role] = field(default_factory=dict)
    link_types: dict[str, LinkType] = field(default_factory=dict)
    topologies: dict[str, TopologyEntry] = field(default_factory=dict)
    model_sources: dict[str, ModelSource] = field(default_factory=dict)
    datasets: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    tools: dict[str, Any] = field(default_factory=dict)
    origin: dict[tuple[str, str], str] = field(default_factory=dict)
    plugin_dists: dict[str, tuple[str, str]] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        plugins: Iterable[Any] = (),
        *,
        load_entrypoints: bool | None = None,
        trace: bool | None = None,
    ) -> "Registry":
        """Build a registry from the built-ins, ``plugins`` and (unless disabled) installed entry points.

        ``plugins`` are modules or objects with hook implementations, or ``(name, plugin)`` pairs
        to choose the name errors use. ``load_entrypoints=None`` loads the entry points of group
        ``recmas_graph`` unless ``RECMAS_DISABLE_PLUGINS`` is set to a non-empty value other than
        ``0``. ``trace=None`` traces hook calls to the ``recmas_graph.plugins`` logger when
        ``RECMAS_TRACE_PLUGINS`` is set likewise.
        """
        from . import builtin

        pm = pluggy.PluginManager(PROJECT)
        pm.add_hookspecs(RecmasHookSpecs)
        if trace if trace is not None else _env_flag("RECMAS_TRACE_PLUGINS"):
            pm.trace.root.setwriter(_log_trace)
            pm.enable_tracing()
        _register(pm, builtin, BUILTIN_PLUGIN)
        for item in plugins:
            name, plugin = item if isinstance(item, tuple) else (_plugin_name(item), item)
            base, n = name, 1
            while pm.has_plugin(name):
                n += 1
                name = f"{base}#{n}"
            _register(pm, plugin, name)
        dists: dict[str, tuple[str, str]] = {}
        if load_entrypoints is None:
            load_entrypoints = not _env_flag("RECMAS_DISABLE_PLUGINS")
        if load_entrypoints:
            dists = _load_entrypoints(pm)
        try:
            pm.check_pending()
        except pluggy.PluginValidationError as err:
            raise PluginError(
                str(err),
                culprit=f"plugin {pm.get_name(err.plugin) or _plugin_name(err.plugin)!r}",
                hint="hook implementations must use a hook name listed in docs/plugins.md (check the spelling)",
            ) from None
        registry = cls(plugin_manager=pm, plugin_dists=dists)
        registry._collect()
        return registry

    # ----------------------------------------------------------------- plugins and hooks

    @property
    def plugin_names(self) -> list[str]:
        """Names of the registered plugins, in registration order (the built-in one first)."""
        return [name for name, _ in self.plugin_manager.list_name_plugin()]

    def hooks_of(self, plugin_name: str) -> list[str]:
        """Names of the hooks the plugin ``plugin_name`` implements."""
        plugin = self.plugin_manager.get_plugin(plugin_name)
        if plugin is None:
            return []
        return sorted(h.name for h in self.plugin_manager.get_hookcallers(plugin) or [])

    def call_hook(self, name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call every implementation of hook ``name`` one by one and return ``(plugin, result)`` pairs.

        Order: ``tryfirst`` implementations, then the others in registration order (the built-in
        plugin first), then ``trylast`` ones; ``None`` results are left out. An exception inside an
        implementation becomes a :class:`PluginError` naming the plugin and the hook; a
        :class:`RecmasError` the plugin raised on purpose (e.g. a ``TopologyError`` from
        ``recmas_validate_topology``) is re-raised unchanged. Calls are traced when tracing is on.
        """
        pm = self.plugin_manager
        caller = getattr(pm.hook, name, None)
        if caller is None or not caller.has_spec():
            raise PluginError(f"no such hook {name!r}", culprit=name,
                              hint="use a hook listed in recmas_graph.hookspecs (docs/plugins.md)")
        impls = sorted(caller.get_hookimpls(), key=lambda i: 0 if i.tryfirst else 2 if i.trylast else 1)
        trace = pm.trace.root.get("hook")
        results: list[tuple[str, Any]] = []
        for impl in impls:
            where = f"plugin {impl.plugin_name!r}"
            if impl.hookwrapper or impl.wrapper:
                raise PluginError(f"hook {name}: hook wrappers are not supported", culprit=where,
                                  hint="implement the hook as a plain function")
            missing = [arg for arg in impl.argnames if arg not in kwargs]
            if missing:
                raise TypeError(f"call_hook({name!r}) is missing argument(s) {', '.join(missing)}")
            trace.root.indent += 1
            trace(name, f"[{impl.plugin_name}]", kwargs)
            try:
                value = impl.function(*(kwargs[arg] for arg in impl.argnames))
            except RecmasError:
                raise
            except Exception as err:
                raise PluginError(
                    f"hook {name} raised {type(err).__name__}: {err}",
                    culprit=where,
                    hint="fix the plugin, uninstall it, or set RECMAS_DISABLE_PLUGINS=1",
                ) from err
            finally:
                trace.root.indent -= 1
            trace("finish", name, f"[{impl.plugin_name}]", "-->", _summary(value))
            if value is not None:
                results.append((impl.plugin_name, value))
        return results

    def _call_each(self, hook_name: str) -> list[tuple[str, Any]]:
        """Call a registration hook plugin by plugin and flatten the returned lists."""
        results: list[tuple[str, Any]] = []
        for plugin, value in self.call_hook(hook_name):
            if not isinstance(value, (list, tuple)):
                raise PluginError(
                    f"hook {hook_name} must return a list, got {type(value).__name__}",
                    culprit=f"plugin {plugin!r}",
                    hint="return a list (an empty one when there is nothing to register)",
                )
            results.extend((plugin, item) for item in value)
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

    def _add_named(self, hook: str, table: dict[str, Any], kind: str, key: str = "name") -> None:
        for plugin, item in self._call_each(hook):
            name = getattr(item, key, None)
            if not isinstance(name, str):
                raise PluginError(
                    f"hook {hook} returned {type(item).__name__} without a string {key!r}",
                    culprit=f"plugin {plugin!r}",
                    hint=f"return {kind} objects (see docs/plugins.md)",
                )
            self._add(table, kind, name, plugin, item)

    def _collect(self) -> None:
        self._add_named("recmas_roles", self.roles, "role")
        self._add_named("recmas_link_types", self.link_types, "link type")
        self._add_named("recmas_model_sources", self.model_sources, "model source", key="prefix")
        for plugin, item in self._call_each("recmas_topologies"):
            if isinstance(item, TopologySpec):
                name, source = item.name, item
            else:
                source = Path(item)
                name = source.stem
            self._add(self.topologies, "topology", name, plugin, TopologyEntry(name, plugin, source))
        self._add_named("recmas_datasets", self.datasets, "dataset")
        self._add_named("recmas_metrics", self.metrics, "metric")
        self._add_named("recmas_tools", self.tools, "tool")

    def registered_by(self, plugin_name: str) -> dict[str, list[str]]:
        """What ``plugin_name`` registered: ``{kind: [names]}`` (e.g. ``{"role": ["judge"]}``)."""
        found: dict[str, list[str]] = {}
        for (kind, name), plugin in self.origin.items():
            if plugin == plugin_name:
                found.setdefault(kind, []).append(name)
        return found


def _summary(value: Any) -> str:
    """Short text of a hook result for the trace."""
    if isinstance(value, (list, tuple)):
        names = [str(getattr(v, "name", getattr(v, "prefix", v))) for v in value]
        text = ", ".join(Path(n).name if os.sep in n else n for n in names)
        return f"{len(value)} item(s): {text[:200]}"
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _log_trace(text: str) -> None:
    for line in text.splitlines():
        if line.strip():
            _log.debug(line.rstrip())


def _register(pm: pluggy.PluginManager, plugin: Any, name: str) -> None:
    """Register ``plugin`` as ``name``; pluggy's validation errors name the plugin."""
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as err:
        raise PluginError(
            str(err), culprit=f"plugin {name!r}",
            hint="a hook implementation's arguments must be among the hook's (see docs/plugins.md)",
        ) from None
    except ValueError as err:  # already registered
        raise PluginError(str(err), culprit=f"plugin {name!r}", hint="register each plugin once") from None


def _load_entrypoints(pm: pluggy.PluginManager) -> dict[str, tuple[str, str]]:
    """Load and register the installed plugins (entry-point group ``recmas_graph``)."""
    dists: dict[str, tuple[str, str]] = {}
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group != PROJECT or pm.has_plugin(ep.name) or pm.is_blocked(ep.name):
                continue
            dist_name = dist.metadata["Name"] or "?"
            where = f"plugin {ep.name!r} (distribution {dist_name} {dist.version}, entry point {ep.value})"
            try:
                plugin = ep.load()
            except Exception as err:
                raise PluginError(
                    f"failed to import: {type(err).__name__}: {err}",
                    culprit=where,
                    hint=f"fix or uninstall {dist_name} (pip uninstall {dist_name}), or set RECMAS_DISABLE_PLUGINS=1",
                ) from err
            if pm.is_registered(plugin):  # also passed explicitly
                continue
            _register(pm, plugin, ep.name)
            dists[ep.name] = (dist_name, dist.version)
    return dists


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
