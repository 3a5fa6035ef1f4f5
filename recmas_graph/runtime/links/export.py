"""Writing a system's links to a folder, with a topology JSON that points at them (runnable as it is).

``DIR/links/inner_<agent>.safetensors`` and ``DIR/links/outer_<edge>.safetensors`` (each with its
JSON config), and ``DIR/topology.json``: the system's topology (the models it was built with)
whose links name those files by relative path, so the folder can be moved as a whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ...topology.spec import TopologySpec, dump_topology

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ..system import RecursiveSystem

__all__ = ["link_file_name", "link_files", "save_links", "save_system_links", "spec_with_weights"]


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


def link_files(links: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """A distinct relative path ``links/<file>.safetensors`` per ``("inner", agent)`` / ``("outer",
    edge id)`` link, in order (two edge ids may spell the same file name: a->b:c and a->b-c).

    >>> link_files([("outer", "a->b:c"), ("outer", "a->b-c")])[("outer", "a->b-c")]
    'links/outer_a-to-b-c_2.safetensors'
    """
    paths: dict[tuple[str, str], str] = {}
    for kind, name in links:
        base, n = link_file_name(kind, name).removesuffix(".safetensors"), 1
        rel = f"links/{base}.safetensors"
        while rel in paths.values():
            n += 1
            rel = f"links/{base}_{n}.safetensors"
        paths[(kind, name)] = rel
    return paths


def save_links(system: RecursiveSystem, out: str | Path, links: Iterable[tuple[str, str]], *,
               storage_dtype: str | None = None) -> dict[tuple[str, str], str]:
    """Save the named links of ``system`` under ``out/links/`` (our format, each with its JSON
    config; tensors in ``storage_dtype`` when given, see :func:`~.checkpoints.save_link`); returns
    each link's path relative to ``out`` (see :func:`link_files`)."""
    from .checkpoints import save_link

    folder = Path(out)
    (folder / "links").mkdir(parents=True, exist_ok=True)
    compiled = system.compiled
    by_agent = {a.name: a for a in compiled.spec.agents}
    paths = link_files(links)
    # widths from what the build recorded: asking a loaded model would reload it in low-memory mode
    width = {name: agent.hidden_size for name, agent in system.agents.items()}  # an agent knows it, loaded or not
    width.update({name: facts.hidden_size for name, facts in system.model_facts.items()})  # agents held elsewhere
    for (kind, name), rel in paths.items():
        if kind == "inner":
            spec, size = by_agent[name].inner_link, width[name]
            save_link(system.inner_links[name], folder / rel, spec.type, size, size, spec.options,
                      storage_dtype=storage_dtype)
        else:
            edge = compiled.edge(name)
            save_link(system.outer_links[name], folder / rel, edge.link.type, width[edge.source], width[edge.target],
                      edge.link.options, storage_dtype=storage_dtype)
    return paths


def save_system_links(system: RecursiveSystem, out: str | Path, *, agents: Iterable[str] | None = None,
                      edges: Iterable[str] | None = None, description: str | None = None,
                      storage_dtype: str | None = None) -> Path:
    """Save the links of ``system`` (default: every inner link and outer link; tensors in
    ``storage_dtype`` when given) under ``out`` and write ``out/topology.json`` pointing at them;
    returns the topology path."""
    folder = Path(out)
    chosen = [("inner", n) for n in (agents if agents is not None else system.inner_links)]
    chosen += [("outer", e) for e in (edges if edges is not None else system.outer_links)]
    paths = save_links(system, folder, chosen, storage_dtype=storage_dtype)
    inner = {name: rel for (kind, name), rel in paths.items() if kind == "inner"}
    outer = {name: rel for (kind, name), rel in paths.items() if kind == "outer"}
    new = spec_with_weights(system.compiled.spec, list(system.compiled.edge_ids), inner, outer)
    if description:
        new = new.model_copy(update={"description": description})
    path = folder / "topology.json"
    dump_topology(new, path)
    return path
