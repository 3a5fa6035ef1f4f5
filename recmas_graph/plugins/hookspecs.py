"""Hook specifications: the contract between recmas_graph and its plugins (pluggy).

Project name and entry-point group: ``recmas_graph``. Every hook is prefixed ``recmas_``.
Built-in roles, link types, topologies, model sources, datasets, metrics and tools are registered
through these same hooks (see :mod:`recmas_graph.plugins.builtin` and :mod:`recmas_graph.eval.plugin`). A plugin is a module (or any object)
with functions of these names decorated with :data:`hookimpl`; it may implement any subset, and an
implementation may accept fewer arguments than the specification lists.

The hooks are grouped by phase:

- **registration** (:class:`RegistrationHooks`): called once when a
  :class:`~recmas_graph.plugins.Registry` is built; no arguments; each returns a list. The registry
  collects every plugin's list and refuses a name registered twice, naming both plugins.
- **build** (:class:`BuildHooks`): topology validation and agent construction.
- **run** (:class:`RunHooks`): observers the executor calls around a run and around every pass.

Hooks are called by pluggy itself (``registry.hooks.recmas_<name>(...)``): implementations run in
pluggy's order (``tryfirst`` ones first, then the most recently registered plugin first, ``trylast``
ones last) and may be wrappers (``@hookimpl(wrapper=True)``). Each plain implementation is wrapped
once, when its plugin is registered, so that an exception inside it becomes a
:class:`~recmas_graph.errors.PluginError` naming the plugin and the hook; a
:class:`~recmas_graph.errors.RecmasError` a plugin raises on purpose (e.g. a ``TopologyError`` from
:func:`recmas_validate_topology`) passes through unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover - typing only (annotations may name any layer's objects)
    from collections.abc import Callable, Mapping
    from pathlib import Path

    import typer

    from ..eval.datasets import Dataset
    from ..eval.scoring import Metric
    from ..runtime.agent.agent import Agent
    from ..runtime.execution.results import RunResult
    from ..runtime.system import RecursiveSystem
    from ..tools.base import Tool
    from ..topology.catalog import LinkType, ModelSource
    from ..topology.compile import CompiledTopology
    from ..topology.roles import Role
    from ..topology.schedule import Pass
    from ..topology.spec import TopologySpec
    from .manager import Registry

__all__ = [
    "hookspec",
    "hookimpl",
    "PROJECT",
    "RegistrationHooks",
    "BuildHooks",
    "RunHooks",
    "RecmasHookSpecs",
    "HOOK_PHASES",
]

PROJECT = "recmas_graph"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class RegistrationHooks:
    """Registration hooks (phase: start-up). No arguments; each returns a list (``[]`` for none)."""

    @hookspec
    def recmas_roles(self) -> "list[Role]":
        """Return :class:`recmas_graph.topology.Role` objects to register, each under its ``name``."""

    @hookspec
    def recmas_link_types(self) -> "list[LinkType]":
        """Return :class:`recmas_graph.topology.LinkType` entries (name, kind, lazy factory, options).

        The factory is called as ``factory(in_dim, out_dim, **options)`` and returns an
        ``nn.Module``. A module with a ``calibrate(loaded_model)`` method is calibrated when a
        system is built and the topology gives it no weights (training-free links).
        """

    @hookspec
    def recmas_topologies(self) -> "list[str | Path | TopologySpec]":
        """Return topologies to register: paths to JSON files or :class:`TopologySpec` objects.

        A file is registered under its stem, a spec under its ``name``; files are parsed on first use.
        """

    @hookspec
    def recmas_model_sources(self) -> "list[ModelSource]":
        """Return :class:`recmas_graph.topology.ModelSource` entries (a reference prefix, a loader, checks)."""

    @hookspec
    def recmas_datasets(self) -> "list[Dataset]":
        """Return :class:`recmas_graph.eval.Dataset` descriptors, each registered under its ``name``."""

    @hookspec
    def recmas_metrics(self) -> "list[Metric]":
        """Return :class:`recmas_graph.eval.Metric` objects, each registered under its ``name``."""

    @hookspec
    def recmas_tools(self) -> "list[Tool]":
        """Return :class:`recmas_graph.tools.Tool` instances, each registered under its ``name``.

        Agents list the tools they may call in their ``tools`` field.
        """

    @hookspec
    def recmas_cli_commands(self, app: "typer.Typer") -> None:
        """Add commands to the ``recmas`` command line, e.g. ``@app.command("my-cmd")``.

        Called once per process by :func:`recmas_graph.cli.main`, after the built-in commands.
        """


class BuildHooks:
    """Build hooks (phase: compiling a topology, building agents)."""

    @hookspec
    def recmas_validate_topology(self, spec: "TopologySpec", registry: "Registry") -> None:
        """Check ``spec`` further; raise :class:`recmas_graph.errors.TopologyError` to reject it.

        Called at the end of :func:`recmas_graph.topology.compile_topology`, after the built-in checks
        passed (names, roles, link types and options, models, tools, slots, forward cycles, dead agents).
        The error should name the offending agent or edge and say how to fix it.
        """

    @hookspec
    def recmas_check_build(self, compiled: "CompiledTopology", registry: "Registry") -> None:
        """Check what a build of ``compiled`` will need before any model loads; raise a
        :class:`recmas_graph.errors.RecmasError` naming the culprit (e.g. an unknown calibration dataset)."""

    @hookspec
    def recmas_system_built(self, system: "RecursiveSystem", registry: "Registry",
                            on_stage: "Callable[[str], None] | None") -> None:
        """Finish a built system in place, after its models loaded and its links were built (the
        built-in one fits or loads the links marked ``"calibrated:<dataset>"``). ``on_stage(message)``
        reports a long step. ``system`` is a :class:`recmas_graph.runtime.RecursiveSystem`."""

    @hookspec
    def recmas_agent_built(self, agent: "Agent") -> None:
        """Observe an agent right after its system built it (model loaded, inner link built).

        ``agent`` is a :class:`recmas_graph.runtime.Agent` (``name``, ``spec``, ``loaded``, ``role``,
        ``tools``). Observers must not replace it; they may inspect it.
        """


class RunHooks:
    """Run hooks (phase: executing a system). Observers: return values are ignored."""

    @hookspec
    def recmas_run_start(self, system: "RecursiveSystem", questions: "list[str | Mapping[str, str]]") -> None:
        """Called once before the first pass of a run over a batch of ``questions``."""

    @hookspec
    def recmas_before_pass(self, system: "RecursiveSystem", step: "Pass") -> None:
        """Called before each scheduled pass; ``step`` is a :class:`recmas_graph.topology.Pass`."""

    @hookspec
    def recmas_after_pass(self, system: "RecursiveSystem", step: "Pass", record: dict[str, Any]) -> None:
        """Called after each pass with its trace row.

        ``record`` holds ``agent``, ``round``, ``action``, ``device``, ``wall_s``,
        ``prompt_tokens``, ``latent_steps``, ``generated_tokens``, ``peak_mem_bytes``,
        ``tool_calls``, ``start_s`` and ``reused_tokens`` (prompt positions a cached prefix supplied).
        """

    @hookspec
    def recmas_run_end(self, system: "RecursiveSystem", result: "RunResult") -> None:
        """Called once after the run with its :class:`recmas_graph.runtime.RunResult` (answers, trace, timings)."""


class RecmasHookSpecs(RegistrationHooks, BuildHooks, RunHooks):
    """All hook specifications (what :class:`~recmas_graph.plugins.Registry` adds to pluggy)."""


#: Hook names per phase, in documentation order.
HOOK_PHASES: dict[str, tuple[str, ...]] = {
    phase: tuple(name for name in vars(cls) if name.startswith("recmas_"))
    for phase, cls in (("registration", RegistrationHooks), ("build", BuildHooks), ("run", RunHooks))
}
