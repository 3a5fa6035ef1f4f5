"""The topology layer: the spec (pydantic, JSON, JSON Schema), roles (prompt templates), the catalog
of registered names, compiling (validation, frozen compiled topology), the unrolled schedule and
diagrams. Imports without torch.
"""

from __future__ import annotations

from .catalog import Catalog, LinkType, ModelSize, ModelSource, import_object, resolve_model_source, split_model_ref
from .compile import CompiledTopology, Problem, compile_topology, edge_ids, validate_topology
from .roles import DEFAULT_SYSTEM_PROMPT, TASK_INSTRUCTIONS, Role, SlotSection, slot_marker, split_at_markers
from .schedule import Input, Pass, Schedule, unroll
from .spec import (DTYPES, TASK_TYPES, AgentSpec, EdgeSpec, LinkSpec, TopologyBuilder, TopologySpec, dump_topology,
                   parse_topology, read_topology_file, topology_json_schema)

__all__ = [
    "AgentSpec", "EdgeSpec", "LinkSpec", "TopologySpec", "TopologyBuilder", "TASK_TYPES", "DTYPES",
    "parse_topology", "read_topology_file", "dump_topology", "topology_json_schema",
    "Role", "SlotSection", "DEFAULT_SYSTEM_PROMPT", "TASK_INSTRUCTIONS", "slot_marker", "split_at_markers",
    "Catalog", "LinkType", "ModelSize", "ModelSource", "import_object", "split_model_ref", "resolve_model_source",
    "CompiledTopology", "Problem", "compile_topology", "validate_topology", "edge_ids",
    "Input", "Pass", "Schedule", "unroll",
]
