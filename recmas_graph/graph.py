"""Graph compiler: validate a topology with networkx and unroll it into a schedule of waves.

The unrolled graph has one node per (agent, round). A forward edge ``s -> t`` links ``(s, r)`` to
``(t, r)``; a recursion edge links ``(s, r - 1)`` to ``(t, r)``. Only ancestors of
``(output, R)`` are kept, and their topological generations are the waves (DESIGN.md section 5).
This module imports without torch.

>>> from recmas_graph.spec import TopologyBuilder
>>> spec = (TopologyBuilder("loop", rounds=2).agent("p", role="planner", model="tiny:llama")
...         .agent("s", role="solver", model="tiny:llama").edge("p", "s", slot="plan")
...         .recursion("s", "p", slot="feedback").output("s").build())
>>> [str(p) for wave in compile_topology(spec).schedule().waves for p in wave]
['p1:latent', 's1:latent', 'p2:latent', 's2:decode']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import networkx as nx

from .errors import TopologyError
from .spec import EdgeSpec, TopologySpec

if TYPE_CHECKING:
    from .registry import Registry

__all__ = ["Pass", "Schedule", "CompiledTopology", "compile_topology", "validate_topology"]

Action = Literal["latent", "text", "latent+text", "decode"]


@dataclass(frozen=True)
class Pass:
    """One scheduled pass of an agent in a round.

    ``action`` is ``decode`` for the output agent in the last round (the answer); otherwise what its
    consumers need: ``latent`` thoughts, a ``text`` message, or both (``latent+text``).
    """

    agent: str
    round: int
    action: Action
    inputs: tuple[tuple[EdgeSpec, int], ...] = field(default=(), compare=False, repr=False)

    @property
    def latent(self) -> bool:
        """Whether this pass runs a latent rollout."""
        return "latent" in self.action

    @property
    def text(self) -> bool:
        """Whether this pass decodes a text message for a text-medium consumer."""
        return self.action in ("text", "latent+text")

    def __str__(self) -> str:
        return f"{self.agent}{self.round}:{self.action}"


@dataclass(frozen=True)
class Schedule:
    """The pruned, unrolled schedule: waves of independent passes, in execution order."""

    rounds: int
    waves: tuple[tuple[Pass, ...], ...]

    @property
    def passes(self) -> list[Pass]:
        """All passes, wave by wave."""
        return [p for wave in self.waves for p in wave]

    def as_records(self) -> list[dict[str, object]]:
        """The schedule as plain dicts (wave, agent, round, action), for JSON output."""
        return [
            {"wave": i + 1, "agent": p.agent, "round": p.round, "action": p.action}
            for i, wave in enumerate(self.waves)
            for p in wave
        ]


def _cycle_text(cycle: list[tuple[str, str]]) -> str:
    nodes = [u for u, _ in cycle] + [cycle[0][0]]
    return " -> ".join(nodes)


@dataclass
class CompiledTopology:
    """A validated topology with its networkx graph (a MultiDiGraph keyed by edge index)."""

    spec: TopologySpec
    graph: nx.MultiDiGraph

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
        spec = self.spec
        R = spec.rounds if rounds is None else rounds
        if R < 1:
            raise TopologyError(f"rounds must be at least 1, got {R}", culprit="rounds", hint="use --rounds 1 or more")
        unrolled = nx.DiGraph()
        edge_inputs: dict[tuple[str, int], list[tuple[EdgeSpec, int]]] = {}
        consumers: dict[tuple[str, int], list[tuple[tuple[str, int], EdgeSpec]]] = {}
        for r in range(1, R + 1):
            for name in spec.agent_names:
                unrolled.add_node((name, r))
        for r in range(1, R + 1):
            for edge in spec.edges:
                src_round = r - 1 if edge.recursion else r
                if src_round < 1:
                    continue  # nothing in round 1 on a recursion edge: the slot is left out
                unrolled.add_edge((edge.source, src_round), (edge.target, r))
                edge_inputs.setdefault((edge.target, r), []).append((edge, src_round))
                consumers.setdefault((edge.source, src_round), []).append(((edge.target, r), edge))
        final = (spec.output, R)
        needed = nx.ancestors(unrolled, final) | {final}
        pruned = unrolled.subgraph(needed)
        index = {n: i for i, n in enumerate(spec.agent_names)}
        waves: list[tuple[Pass, ...]] = []
        for generation in nx.topological_generations(pruned):
            wave = []
            for name, r in sorted(generation, key=lambda n: (n[1], index[n[0]])):
                if (name, r) == final:
                    action: Action = "decode"
                else:
                    media = {e.medium for target, e in consumers.get((name, r), []) if target in needed}
                    action = "latent+text" if media == {"latent", "text"} else ("text" if media == {"text"} else "latent")
                inputs = tuple((e, sr) for e, sr in edge_inputs.get((name, r), []) if (e.source, sr) in needed)
                wave.append(Pass(name, r, action, inputs))
            waves.append(tuple(wave))
        return Schedule(R, tuple(waves))


def validate_topology(spec: TopologySpec, registry: "Registry | None" = None) -> None:
    """Check the structural rules of DESIGN.md section 4; raise :class:`TopologyError` naming the culprit.

    ``registry`` supplies the known roles and link types (default: the process-wide registry).
    Link weight shapes against the agents' hidden sizes are checked by
    :func:`recmas_graph.links.check_link_weights`, which needs the models' configs.
    """
    compile_topology(spec, registry=registry)


def _check_names(spec: TopologySpec) -> None:
    seen: set[str] = set()
    for agent in spec.agents:
        if agent.name in seen:
            raise TopologyError(
                "duplicate agent name", culprit=f"agent {agent.name!r}", hint="give every agent a unique name"
            )
        seen.add(agent.name)
    known = ", ".join(spec.agent_names)
    for i, edge in enumerate(spec.edges):
        for end in ("source", "target"):
            name = getattr(edge, end)
            if name not in seen:
                raise TopologyError(
                    f"{end} {name!r} is not an agent",
                    culprit=f"edge {i} ({edge.label})",
                    hint=f"use one of the agents: {known}",
                )
    if spec.output not in seen:
        raise TopologyError(f"{spec.output!r} is not an agent", culprit="output", hint=f"use one of the agents: {known}")


def _check_registered(spec: TopologySpec, registry: "Registry") -> None:
    for agent in spec.agents:
        if agent.role not in registry.roles:
            raise TopologyError(
                f"unknown role {agent.role!r}",
                culprit=f"agent {agent.name!r}",
                hint=f"use a registered role ({', '.join(sorted(registry.roles))}) or install a plugin that adds it",
            )
        _check_link_type(agent.inner_link.type, "inner", f"agent {agent.name!r} inner_link", registry)
    for i, edge in enumerate(spec.edges):
        if edge.medium not in ("latent", "text"):
            raise TopologyError(f"unknown medium {edge.medium!r}", culprit=f"edge {i} ({edge.label})",
                                hint='use "latent" or "text"')
        _check_link_type(edge.link.type, "outer", f"edge {i} ({edge.label}) link", registry)


def _check_link_type(name: str, kind: str, culprit: str, registry: "Registry") -> None:
    link = registry.link_types.get(name)
    if link is None:
        known = ", ".join(sorted(n for n, t in registry.link_types.items() if t.kind in (kind, "any")))
        raise TopologyError(f"unknown link type {name!r}", culprit=culprit,
                            hint=f"use a registered {kind} link type ({known}) or install a plugin that adds it")
    if link.kind not in (kind, "any"):
        raise TopologyError(f"link type {name!r} is an {link.kind} link, not an {kind} link", culprit=culprit,
                            hint=f"use an {kind} link type here")


def _check_slots(spec: TopologySpec) -> None:
    seen: dict[tuple[str, str], EdgeSpec] = {}
    for edge in spec.edges:
        key = (edge.target, edge.slot_name)
        if key in seen:
            other = seen[key]
            raise TopologyError(
                f"two edges deliver into slot {edge.slot_name!r} of agent {edge.target!r}: {other.label} and {edge.label}",
                culprit=f"edge {edge.label}",
                hint="give one of them another \"slot\" (an unknown slot gets its own generic section)",
            )
        seen[key] = edge


def compile_topology(
    spec: TopologySpec,
    registry: "Registry | None" = None,
) -> CompiledTopology:
    """Validate ``spec`` and build its :class:`CompiledTopology`."""
    if registry is None:
        from .registry import get_registry

        registry = get_registry()
    _check_names(spec)
    _check_registered(spec, registry)
    _check_slots(spec)
    graph = nx.MultiDiGraph(name=spec.name)
    for agent in spec.agents:
        graph.add_node(agent.name, agent=agent)
    for i, edge in enumerate(spec.edges):
        graph.add_edge(edge.source, edge.target, key=i, edge=edge)
    compiled = CompiledTopology(spec, graph)
    forward = nx.DiGraph(compiled.forward_graph)
    try:
        cycle = nx.find_cycle(forward)
    except nx.NetworkXNoCycle:
        cycle = None
    if cycle:
        text = _cycle_text(list(cycle))
        last = cycle[-1]
        raise TopologyError(
            f"forward edges form a cycle: {text}",
            culprit=f"edge {last[0]}->{last[1]}",
            hint=f'mark one edge of the cycle "recursion": true (e.g. {last[0]}->{last[1]}) so it delivers into the next round',
        )
    reaches = nx.ancestors(nx.DiGraph(graph), spec.output) | {spec.output}
    dead = [a for a in spec.agent_names if a not in reaches]
    if dead:
        raise TopologyError(
            f"cannot influence the output agent {spec.output!r}",
            culprit=", ".join(f"agent {a!r}" for a in dead),
            hint=f"add an edge from it towards {spec.output!r} (directly or through other agents), or remove it",
        )
    # Plugins (the built-in one too: agents' tools) may reject it; other exceptions become PluginError.
    registry.call_hook("recmas_validate_topology", spec=spec, registry=registry)
    return compiled
