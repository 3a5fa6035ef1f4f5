"""recmas_graph: run and train RecursiveMAS systems as declarative graphs of latent-space LLM agents.

``spec``, ``graph``, ``render`` and the registry import without torch; the runtime (links, models,
agents, executor) is imported on first use of its names.
"""

from __future__ import annotations

from typing import Any

from .errors import LinkError, ModelSourceError, PluginError, RecmasError, RunError, SpecError, TopologyError
from .graph import CompiledTopology, Pass, Schedule, compile_topology, validate_topology
from .registry import Registry, get_registry, resolve_topology
from .roles import Role
from .spec import AgentSpec, EdgeSpec, LinkSpec, TopologyBuilder, TopologySpec, dump_topology, parse_topology, read_topology_file, topology_json_schema

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "RecmasError", "SpecError", "TopologyError", "ModelSourceError", "LinkError", "PluginError", "RunError",
    "AgentSpec", "EdgeSpec", "LinkSpec", "TopologySpec", "TopologyBuilder",
    "parse_topology", "read_topology_file", "dump_topology", "topology_json_schema",
    "CompiledTopology", "Pass", "Schedule", "compile_topology", "validate_topology",
    "Registry", "get_registry", "resolve_topology", "Role",
    # runtime (imported lazily: these pull in torch and transformers)
    "RecursiveSystem", "RunResult", "TraceRecord", "Agent", "GenerationOptions",
    "LoadedModel", "ModelCache", "load_model", "build_link", "save_link", "check_link_weights",
]

_LAZY = {
    "RecursiveSystem": "executor", "RunResult": "executor", "TraceRecord": "executor",
    "Agent": "agents", "GenerationOptions": "agents",
    "LoadedModel": "models", "ModelCache": "models", "load_model": "models",
    "build_link": "links", "save_link": "links", "check_link_weights": "links",
}


def __getattr__(name: str) -> Any:
    """Import runtime names on first use, so that spec/graph/render work without torch."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'recmas_graph' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{module}", __name__), name)
