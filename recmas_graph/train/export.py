"""Writing a system's links to a folder, with a topology JSON that points at them (runnable as it is).

``DIR/links/inner_<agent>.safetensors`` and ``DIR/links/outer_<edge>.safetensors`` (each with its
JSON config), and ``DIR/topology.json``: the system's topology (the models it was built with)
whose links name those files by relative path, so the folder can be moved as a whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..topology.spec import TopologySpec, dump_topology

__all__ = ["link_file_name", "save_system_links", "spec_with_weights"]


def link_file_name(kind: str, name: str) -> str:
    """A file name for the ``kind`` (``inner``/``outer``) link of an agent or an edge id.

    >>> link_file_name("outer", "planner->critic:plan")
    'outer_planner-to-critic-plan.safetensors'
    """
    safe = re.sub(r"[^A-Za-z0-9_.]+", "-", name.replace("->", "-to-")).strip("-")
    return f"{kind}_{safe}.safetensors"


def spec_with_weights(spec: TopologySpec, edge_ids: list[str], inner: dict[str, str],
                      outer: dict[str, str]) -> TopologySpec:
    """``spec`` with the weights of the named agents' inner links and edges' outer links replaced."""
    data = spec.model_dump(mode="json")
    for agent in data["agents"]:
        if agent["name"] in inner:
            agent["inner_link"]["weights"] = inner[agent["name"]]
    for edge_id, edge in zip(edge_ids, data["edges"], strict=True):
        if edge_id in outer:
            edge["link"]["weights"] = outer[edge_id]
    return TopologySpec.model_validate(data)


def save_system_links(system: Any, out: str | Path, *, agents: Iterable[str] | None = None,
                      edges: Iterable[str] | None = None, description: str | None = None) -> Path:
    """Save the links of ``system`` (default: every inner link and outer link) under ``out`` and
    write ``out/topology.json`` pointing at them; returns the topology path."""
    from ..runtime.links.checkpoints import save_link

    folder = Path(out)
    (folder / "links").mkdir(parents=True, exist_ok=True)
    compiled = system.compiled
    spec = compiled.spec
    by_agent = {a.name: a for a in spec.agents}
    inner: dict[str, str] = {}
    outer: dict[str, str] = {}
    used: set[str] = set()

    def unique(kind: str, name: str) -> str:  # two ids may spell the same file name (a->b:c, a->b-c)
        base = link_file_name(kind, name).removesuffix(".safetensors")
        rel, n = f"links/{base}.safetensors", 1
        while rel in used:
            n += 1
            rel = f"links/{base}_{n}.safetensors"
        used.add(rel)
        return rel

    for name in (list(agents) if agents is not None else list(system.inner_links)):
        link, a = system.inner_links[name], by_agent[name]
        rel = unique("inner", name)
        size = system.agents[name].loaded.hidden_size
        save_link(link, folder / rel, a.inner_link.type, size, size, a.inner_link.options)
        inner[name] = rel
    for edge_id in (list(edges) if edges is not None else list(system.outer_links)):
        edge = compiled.edge(edge_id)
        rel = unique("outer", edge_id)
        src, dst = system.agents[edge.source].loaded.hidden_size, system.agents[edge.target].loaded.hidden_size
        save_link(system.outer_links[edge_id], folder / rel, edge.link.type, src, dst, edge.link.options)
        outer[edge_id] = rel
    new = spec_with_weights(spec, list(compiled.edge_ids), inner, outer)
    if description:
        new = new.model_copy(update={"description": description})
    path = folder / "topology.json"
    dump_topology(new, path)
    return path
