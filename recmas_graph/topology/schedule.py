"""The unrolled schedule: one pass per needed (agent, round), grouped into waves of independent passes.

A forward edge ``s -> t`` links ``(s, r)`` to ``(t, r)``; a recursion edge links ``(s, r - 1)`` to
``(t, r)`` (nothing arrives in round 1: the slot is left out). Only ancestors of ``(output, R)``
are kept, and their topological generations are the waves (docs/semantics.md, "The unrolled graph and waves"). Every pass says
which messages it receives (:class:`Input`, keyed by edge id and source round) and which edges
need a message from it (``outputs``), so a backend can run it from a message store alone.
This module imports without torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import networkx as nx

from .spec import EdgeSpec, TopologySpec

__all__ = ["Action", "Input", "Pass", "Schedule", "unroll"]

Action = Literal["latent", "text", "latent+text", "decode"]


@dataclass(frozen=True)
class Input:
    """One message a pass receives: edge ``edge`` (its id), produced by ``source`` in ``round``."""

    edge: str
    source: str
    round: int
    slot: str
    medium: str

    @property
    def key(self) -> tuple[str, int]:
        """The message-store key ``(edge id, source round)``."""
        return self.edge, self.round

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready)."""
        return {"edge": self.edge, "slot": self.slot, "source": self.source, "round": self.round,
                "medium": self.medium}


@dataclass(frozen=True)
class Pass:
    """One scheduled pass of an agent in a round.

    ``action`` is ``decode`` for the output agent in the last round (the answer); otherwise what its
    consumers need: ``latent`` thoughts, a ``text`` message, or both (``latent+text``). ``inputs``
    are the messages it receives, in edge order (the order of the slots in its prompt); ``outputs``
    the ids of the edges whose message a later pass needs.
    """

    agent: str
    round: int
    action: Action
    inputs: tuple[Input, ...] = ()
    outputs: tuple[str, ...] = ()

    @property
    def latent(self) -> bool:
        """Whether this pass runs a latent rollout."""
        return "latent" in self.action

    @property
    def text(self) -> bool:
        """Whether this pass decodes a text message for a text-medium consumer."""
        return self.action in ("text", "latent+text")

    @property
    def decode(self) -> bool:
        """Whether this pass decodes the answer."""
        return self.action == "decode"

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

    @property
    def final(self) -> Pass:
        """The decode pass of the output agent in the last round."""
        return self.waves[-1][-1]

    def consumer_counts(self) -> dict[tuple[str, int], int]:
        """How many passes read each message ``(edge id, source round)``."""
        counts: dict[tuple[str, int], int] = {}
        for p in self.passes:
            for item in p.inputs:
                counts[item.key] = counts.get(item.key, 0) + 1
        return counts

    def as_records(self) -> list[dict[str, Any]]:
        """The schedule as plain dicts (wave, agent, round, action, inputs, outputs), for JSON output."""
        return [
            {"wave": i + 1, "agent": p.agent, "round": p.round, "action": p.action,
             "inputs": [item.as_dict() for item in p.inputs], "outputs": list(p.outputs)}
            for i, wave in enumerate(self.waves)
            for p in wave
        ]


def _action(is_final: bool, media: set[str]) -> Action:
    if is_final:
        return "decode"
    if media == {"latent", "text"}:
        return "latent+text"
    return "text" if media == {"text"} else "latent"


def unroll(spec: TopologySpec, edge_ids: Sequence[str], rounds: int) -> Schedule:
    """Unroll ``spec`` for ``rounds`` rounds, prune passes nobody needs and group them into waves.

    ``edge_ids[i]`` is the id of ``spec.edges[i]``. ``rounds`` must be at least 1 (checked by the
    caller).
    """
    unrolled = nx.DiGraph()
    inputs: dict[tuple[str, int], list[Input]] = {}
    consumers: dict[tuple[str, int], list[tuple[tuple[str, int], EdgeSpec, str]]] = {}
    for r in range(1, rounds + 1):
        unrolled.add_nodes_from((name, r) for name in spec.agent_names)
    for r in range(1, rounds + 1):
        for edge, edge_id in zip(spec.edges, edge_ids, strict=True):
            src_round = r - 1 if edge.recursion else r
            if src_round < 1:
                continue  # nothing in round 1 on a recursion edge: the slot is left out
            unrolled.add_edge((edge.source, src_round), (edge.target, r))
            inputs.setdefault((edge.target, r), []).append(
                Input(edge_id, edge.source, src_round, edge.slot_name, edge.medium))
            consumers.setdefault((edge.source, src_round), []).append(((edge.target, r), edge, edge_id))
    final = (spec.output, rounds)
    needed = nx.ancestors(unrolled, final) | {final}
    index = {n: i for i, n in enumerate(spec.agent_names)}
    waves: list[tuple[Pass, ...]] = []
    for generation in nx.topological_generations(unrolled.subgraph(needed)):
        wave = []
        for name, r in sorted(generation, key=lambda n: (n[1], index[n[0]])):
            used = [(e, eid) for target, e, eid in consumers.get((name, r), []) if target in needed]
            action = _action((name, r) == final, {e.medium for e, _ in used})
            outputs = tuple(dict.fromkeys(eid for _, eid in used)) if action != "decode" else ()
            received = tuple(i for i in inputs.get((name, r), []) if (i.source, i.round) in needed)
            wave.append(Pass(name, r, action, received, outputs))
        waves.append(tuple(wave))
    return Schedule(rounds, tuple(waves))
