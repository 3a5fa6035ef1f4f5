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
]
