"""The registry: the plugin manager (pluggy) and everything plugins register, with who registered it.

A :class:`Registry` registers the default plugins (:data:`DEFAULT_PLUGINS`: the runtime's built-ins
and the evaluation built-ins, through the same hooks a third-party plugin uses), then the plugins
passed in, then the installed ones (entry-point group ``recmas_graph``, unless
``RECMAS_DISABLE_PLUGINS=1``). It is the :class:`~recmas_graph.topology.Catalog` topologies compile
against and the builder of their systems. ``RECMAS_TRACE_PLUGINS=1`` logs every hook call to the
logger ``recmas_graph.plugins`` (level DEBUG).

Hooks are called through pluggy (``registry.hooks.recmas_<name>(...)``); each plain implementation
is wrapped once at registration so an exception inside it becomes a
:class:`~recmas_graph.errors.PluginError` naming the plugin and the hook.

The registry is passed explicitly through the library; only the public API surface
(:func:`recmas_graph.compile` and the CLI) falls back to :func:`default_registry`.

>>> reg = Registry.create(load_entrypoints=False)
>>> "planner" in reg.roles and "outer_ln_res" in reg.link_types
True
>>> "python" in reg.tools and "gsm8k" in reg.datasets and "boxed_math" in reg.metrics
True
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from ..errors import PluginError, RecmasError, SpecError
from ..topology.catalog import LinkType, ModelSource, import_object
from ..topology.compile import CompiledTopology, compile_topology
from ..topology.roles import Role
from ..topology.spec import TopologySpec, parse_topology, read_topology_file
from .hookspecs import HOOK_PHASES, PROJECT, RecmasHookSpecs

if TYPE_CHECKING:  # pragma: no cover
    from ..runtime.system import RecursiveSystem

__all__ = [
    "TopologyEntry",
    "Registry",
    "default_registry",
    "set_default_registry",
    "resolve_topology",
    "DEFAULT_PLUGINS",
    "BUILTIN_PLUGIN",
    "PLUGIN_LOGGER",
]

#: The built-in plugins, registered first (by module path, so this module imports neither).
DEFAULT_PLUGINS: tuple[str, ...] = ("recmas_graph.plugins.builtin", "recmas_graph.eval.plugin", "recmas_graph.train.plugin")
#: Name of the runtime's built-in plugin (:mod:`recmas_graph.plugins.builtin`).
BUILTIN_PLUGIN = DEFAULT_PLUGINS[0]
#: Logger that receives hook-call traces when ``RECMAS_TRACE_PLUGINS=1``.
PLUGIN_LOGGER = "recmas_graph.plugins"

_log = logging.getLogger(PLUGIN_LOGGER)
_REGISTRATION = frozenset(HOOK_PHASES["registration"]) - {"recmas_cli_commands"}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def _plugin_name(plugin: Any) -> str:
    """A readable name for a plugin passed in code: a module's or class's name, else its type's."""
    name = getattr(plugin, "__name__", None)
    if isinstance(name, str) and name:
        return name
    return type(plugin).__name__


class _Registered(list):
    """A registration hook's list, tagged with the plugin that returned it."""

    plugin: str = ""


@dataclass
class TopologyEntry:
    """A registered topology: the plugin that registered it and where its spec comes from."""

    name: str
    plugin: str
    source: Path | TopologySpec

    @cached_property
    def spec(self) -> TopologySpec:
        """The parsed spec (files are read on first use)."""
        if isinstance(self.source, TopologySpec):
            return self.source
        return read_topology_file(self.source)

    @property
    def base_dir(self) -> Path | None:
        """The folder relative link-weight paths are resolved against (the file's folder)."""
        return None if isinstance(self.source, TopologySpec) else self.source.parent


@dataclass
class Registry:
    """Everything registered by plugins (the built-ins included), with the plugin of every name.

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
    #: The ``(name, plugin)`` pairs given to :meth:`create` (besides the defaults and entry points),
    #: and whether entry points were loaded: what rebuilds this registry in another process.
    given_plugins: tuple[tuple[str, Any], ...] = ()
    loaded_entrypoints: bool = True

    @classmethod
    def create(
        cls,
        plugins: Iterable[Any] = (),
        *,
        load_entrypoints: bool | None = None,
        trace: bool | None = None,
    ) -> "Registry":
        """Build a registry from the default plugins, ``plugins`` and (unless disabled) installed entry points.

        ``plugins`` are modules or objects with hook implementations, or ``(name, plugin)`` pairs
        to choose the name errors use. ``load_entrypoints=None`` loads the entry points of group
        ``recmas_graph`` unless ``RECMAS_DISABLE_PLUGINS`` is set to a non-empty value other than
        ``0``. ``trace=None`` traces hook calls to the ``recmas_graph.plugins`` logger when
        ``RECMAS_TRACE_PLUGINS`` is set likewise.
        """
        pm = pluggy.PluginManager(PROJECT)
        pm.add_hookspecs(RecmasHookSpecs)
        tracing = trace if trace is not None else _env_flag("RECMAS_TRACE_PLUGINS")
        if tracing:
            pm.trace.root.setwriter(_log_trace)
            pm.enable_tracing()
        for path in DEFAULT_PLUGINS:
            _register(pm, import_object(path), path, tracing)
        given: list[tuple[str, Any]] = []
        for item in plugins:
            name, plugin = item if isinstance(item, tuple) else (_plugin_name(item), item)
            base, n = name, 1
            while pm.has_plugin(name):
                n += 1
                name = f"{base}#{n}"
            _register(pm, plugin, name, tracing)
            given.append((name, plugin))
        dists: dict[str, tuple[str, str]] = {}
        if load_entrypoints is None:
            load_entrypoints = not _env_flag("RECMAS_DISABLE_PLUGINS")
        if load_entrypoints:
            dists = _load_entrypoints(pm, tracing)
        try:
            pm.check_pending()
        except pluggy.PluginValidationError as err:
            raise PluginError(
                str(err),
                culprit=f"plugin {pm.get_name(err.plugin) or _plugin_name(err.plugin)!r}",
                hint="hook implementations must use a hook name listed in docs/plugins.md (check the spelling)",
            ) from None
        registry = cls(plugin_manager=pm, plugin_dists=dists, given_plugins=tuple(given),
                       loaded_entrypoints=bool(load_entrypoints))
        registry._collect()
        return registry

    # ----------------------------------------------------------------- plugins and hooks

    @property
    def hooks(self) -> Any:
        """pluggy's hook relay: ``registry.hooks.recmas_after_pass(system=..., step=..., record=...)``."""
        return self.plugin_manager.hook

    @property
    def plugin_names(self) -> list[str]:
        """Names of the registered plugins, in registration order (the default plugins first)."""
        return [name for name, _ in self.plugin_manager.list_name_plugin()]

    def hooks_of(self, plugin_name: str) -> list[str]:
        """Names of the hooks the plugin ``plugin_name`` implements."""
        plugin = self.plugin_manager.get_plugin(plugin_name)
        if plugin is None:
            return []
        return sorted(h.name for h in self.plugin_manager.get_hookcallers(plugin) or [])

    def call_hook(self, name: str, **kwargs: Any) -> Any:
        """Call hook ``name`` through pluggy with keyword arguments and return pluggy's result.

        The result is the list of the implementations' non-``None`` results (one value for a
        ``firstresult`` hook). An unknown hook name is a :class:`PluginError`.
        """
        caller = getattr(self.plugin_manager.hook, name, None)
        if caller is None or not caller.has_spec():
            raise PluginError(f"no such hook {name!r}", culprit=name,
                              hint="use a hook listed in recmas_graph.plugins.hookspecs (docs/plugins.md)")
        return caller(**kwargs)

    def _collected(self, hook_name: str) -> list[tuple[str, Any]]:
        """``(plugin, item)`` pairs from a registration hook, in plugin registration order."""
        order = {name: i for i, name in enumerate(self.plugin_names)}
        lists = sorted(self.call_hook(hook_name), key=lambda value: order.get(value.plugin, len(order)))
        return [(value.plugin, item) for value in lists for item in value]

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
        for plugin, item in self._collected(hook):
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
        for plugin, item in self._collected("recmas_topologies"):
            source: TopologySpec | Path = item if isinstance(item, TopologySpec) else Path(item)
            name = source.name if isinstance(source, TopologySpec) else source.stem
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

    # ----------------------------------------------------------------- the catalog of topologies

    def resolve_topology(self, ref: str | Path | TopologySpec | Mapping[str, Any]) -> tuple[TopologySpec, Path | None]:
        """A registered topology name, a JSON file path, a dict or a spec -> ``(spec, base_dir)``.

        ``base_dir`` is the folder relative link-weight paths are resolved against (the file's).
        """
        if isinstance(ref, TopologySpec):
            return ref, None
        if isinstance(ref, Mapping):
            return parse_topology(dict(ref)), None
        path = Path(ref)
        if path.suffix == ".json" or path.exists() or os.sep in str(ref):
            return read_topology_file(path), path.parent
        entry = self.topologies.get(str(ref))
        if entry is None:
            known = ", ".join(sorted(self.topologies)) or "none"
            raise SpecError("no such built-in topology and no such file", culprit=str(ref),
                            hint=f"give a path to a .json file or one of: {known}")
        return entry.spec, entry.base_dir

    def compile(self, ref: str | Path | TopologySpec | Mapping[str, Any] | CompiledTopology) -> CompiledTopology:
        """Resolve ``ref`` (name, path, dict or spec) and compile it against this registry (a compiled
        topology is returned as it is)."""
        if isinstance(ref, CompiledTopology):
            return ref
        spec, base_dir = self.resolve_topology(ref)
        return compile_topology(spec, self, base_dir=base_dir)

    def validate_topology(self, spec: TopologySpec) -> None:
        """Run the plugins' checks of ``spec`` (hook ``recmas_validate_topology``)."""
        self.hooks.recmas_validate_topology(spec=spec, registry=self)

    def build_system(self, compiled: CompiledTopology, **options: Any) -> "RecursiveSystem":
        """Build ``compiled`` into a :class:`~recmas_graph.runtime.RecursiveSystem` (loads weights):
        :func:`recmas_graph.runtime.build.build_system`, the one build path, with this registry's
        hooks (``compiled`` must have been compiled against this registry)."""
        from ..runtime.build import build_system

        if compiled.catalog is not self:
            compiled = compile_topology(compiled.spec, self, base_dir=compiled.base_dir)
        return build_system(compiled, **options)


# --------------------------------------------------------------------------------------- internals


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


def _guard(function: Callable[..., Any], plugin: str, hook: str, trace: Any) -> Callable[..., Any]:
    """Wrap one hook implementation so that its failures name the plugin and the hook."""
    registration = hook in _REGISTRATION

    @functools.wraps(function)
    def call(*args: Any) -> Any:
        if trace is not None:
            trace(hook, f"[{plugin}]")
        try:
            value = function(*args)
        except RecmasError:
            raise
        except Exception as err:
            if plugin in DEFAULT_PLUGINS:  # a built-in's error (a failed calibration) is the error itself:
                raise  # "fix or uninstall the plugin" would be the wrong advice
            raise PluginError(
                f"hook {hook} raised {type(err).__name__}: {err}",
                culprit=f"plugin {plugin!r}",
                hint="fix the plugin, uninstall it, or set RECMAS_DISABLE_PLUGINS=1",
            ) from err
        if trace is not None:
            trace("finish", hook, f"[{plugin}]", "-->", _summary(value))
        if registration and value is not None:
            if not isinstance(value, (list, tuple)):
                raise PluginError(f"hook {hook} must return a list, got {type(value).__name__}",
                                  culprit=f"plugin {plugin!r}",
                                  hint="return a list (an empty one when there is nothing to register)")
            value = _Registered(value)
            value.plugin = plugin
        return value

    return call


def _register(pm: pluggy.PluginManager, plugin: Any, name: str, tracing: bool) -> None:
    """Register ``plugin`` as ``name`` and guard its hook implementations."""
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as err:
        raise PluginError(
            str(err), culprit=f"plugin {name!r}",
            hint="a hook implementation's arguments must be among the hook's (see docs/plugins.md)",
        ) from None
    except ValueError as err:  # already registered
        raise PluginError(str(err), culprit=f"plugin {name!r}", hint="register each plugin once") from None
    trace = pm.trace.root.get("hook") if tracing else None
    for caller in pm.get_hookcallers(plugin) or []:
        for impl in caller.get_hookimpls():
            if impl.plugin is plugin and not (impl.wrapper or impl.hookwrapper):
                impl.function = _guard(impl.function, name, caller.name, trace)  # type: ignore[misc]


def _load_entrypoints(pm: pluggy.PluginManager, tracing: bool) -> dict[str, tuple[str, str]]:
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
            _register(pm, plugin, ep.name, tracing)
            dists[ep.name] = (dist_name, dist.version)
    return dists


_DEFAULT: Registry | None = None


def default_registry() -> Registry:
    """The process-wide registry of the installed plugins (built on first use).

    Only the public API surface (:func:`recmas_graph.compile`, the CLI) falls back to it; library
    functions take the registry as an argument.
    """
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Registry.create()
    return _DEFAULT


def resolve_topology(ref: str | Path | TopologySpec | Mapping[str, Any], registry: Registry | None = None) -> TopologySpec:
    """The spec of a registered topology name, a JSON file path, a dict or a spec (``registry``:
    default, the installed plugins). See :meth:`Registry.resolve_topology` for its ``base_dir`` too."""
    return (registry or default_registry()).resolve_topology(ref)[0]


def set_default_registry(registry: Registry | None) -> None:
    """Replace the process-wide registry (``None``: rebuild on next use). Used by tests."""
    global _DEFAULT
    _DEFAULT = registry
