"""Baselines built from a topology itself, no extra files (pure functions over a spec).

- :func:`single`: the output agent alone, with the same model and prompts (its slots left out);
- :func:`all_text`: every edge carries text instead of latent thoughts (the paper's
  Recursive-TextMAS).

>>> from recmas_graph.topology.spec import TopologyBuilder
>>> spec = (TopologyBuilder("pair", rounds=2).agent("a", role="planner", model="m1")
...         .agent("b", role="solver", model="m2").edge("a", "b", slot="plan").output("b").build())
>>> [a.name for a in single(spec).agents], [e.medium for e in all_text(spec).edges]
(['b'], ['text'])
"""

from __future__ import annotations

from ..topology.spec import TopologySpec, parse_topology

__all__ = ["BASELINES", "single", "all_text", "baseline", "baseline_label"]

#: The baselines by name (``T:single``, ``T:text`` in comparisons).
BASELINES: tuple[str, ...] = ("single", "text")


def single(spec: TopologySpec) -> TopologySpec:
    """The output agent alone (one round: with no slots every round would be the same)."""
    data = spec.model_dump(mode="json")
    data["name"] = f"{spec.name}-single"
    data["description"] = f"Baseline: the output agent of {spec.name} alone, same model and prompts."
    data["agents"] = [a for a in data["agents"] if a["name"] == spec.output]
    data["edges"] = []
    data["rounds"] = 1
    return parse_topology(data, source=data["name"])


def all_text(spec: TopologySpec) -> TopologySpec:
    """The same topology with every edge ``"medium": "text"`` (Recursive-TextMAS)."""
    data = spec.model_dump(mode="json")
    data["name"] = f"{spec.name}-text"
    data["description"] = f"Baseline: {spec.name} with text messages on every edge."
    for edge in data["edges"]:
        edge["medium"] = "text"
    return parse_topology(data, source=data["name"])


def baseline(spec: TopologySpec, name: str) -> TopologySpec:
    """The baseline called ``name`` (``single`` or ``text``) of ``spec``."""
    if name == "single":
        return single(spec)
    if name == "text":
        return all_text(spec)
    raise ValueError(f"unknown baseline {name!r}; use one of: {', '.join(BASELINES)}")


def baseline_label(topology: str, name: str) -> str:
    """How a baseline is named in a comparison: ``"T:single"``."""
    return f"{topology}:{name}"
