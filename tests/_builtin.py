"""The built-in topologies a test may build on tiny random models: all but those that ship trained
links (their weights fit the packaged models' hidden sizes only; tests/test_shipped_links.py checks them)."""

from __future__ import annotations

from recmas_graph.plugins.builtin import topologies_dir
from recmas_graph.topology.spec import read_topology_file

__all__ = ["TINY_BUILDABLE", "has_trained_links"]


def has_trained_links(name: str) -> bool:
    """Whether built-in topology ``name`` names link weight files."""
    spec = read_topology_file(topologies_dir() / f"{name}.json")
    return any(a.inner_link.weights_file for a in spec.agents) or any(e.link.weights_file for e in spec.edges)


#: Built-in topology names buildable with ``models="tiny"``.
TINY_BUILDABLE = sorted(p.stem for p in topologies_dir().glob("*.json") if not has_trained_links(p.stem))
