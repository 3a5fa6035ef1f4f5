"""recmas_graph: run and train RecursiveMAS systems as declarative graphs of latent-space LLM agents.

The public API follows LangGraph's shape, one object at each stage::

    import recmas_graph as rg
    compiled = rg.compile("sequential_light")        # validated and scheduled; no weights, no torch
    system = compiled.build(models="tiny", seed=0)   # weights loaded: an nn.Module of the links
    result = system.run(["What is 2 + 3?"], greedy=True, max_new_tokens=32)

The layers, each importing only those above it (import-linter checks it in CI): ``topology``
(spec, compile, schedule, render; no torch) -> ``tools`` -> ``runtime`` (options, sources, links,
prompts, rollout, decoding, system, backends, saved systems) -> ``plugins`` (hook specs, the
registry, the built-ins) -> ``release`` -> ``distributed`` -> ``eval`` -> ``train`` -> ``serve`` |
``search`` | ``experiment`` -> ``api`` -> ``cli``.
Runtime names are imported on first use.
"""

from __future__ import annotations

from ._lazy import lazy_exports
from .api import compile, experiment, from_pretrained, search
from .errors import LinkError, ModelSourceError, PluginError, RecmasError, RunError, SpecError, TopologyError
from .plugins import Registry, default_registry, hookimpl
from .topology import (AgentSpec, CompiledTopology, EdgeSpec, Input, LinkSpec, LinkType, ModelSource, Pass, Problem,
                       Role, Schedule, SlotSection, TopologyBuilder, TopologySpec, compile_topology, dump_topology,
                       parse_topology, read_topology_file, topology_json_schema)

from ._version import __version__

__all__ = [
    "__version__",
    "compile", "from_pretrained", "search", "experiment",
    "RecmasError", "SpecError", "TopologyError", "ModelSourceError", "LinkError", "PluginError", "RunError",
    "AgentSpec", "EdgeSpec", "LinkSpec", "TopologySpec", "TopologyBuilder",
    "parse_topology", "read_topology_file", "dump_topology", "topology_json_schema",
    "CompiledTopology", "Problem", "Pass", "Input", "Schedule", "compile_topology",
    "Role", "SlotSection", "LinkType", "ModelSource", "Registry", "default_registry", "hookimpl",
    # runtime (imported on first use: these pull in torch and transformers)
    "RecursiveSystem", "RunResult", "TraceRecord", "Agent", "RunOptions", "GenerationOptions", "LoadedModel", "ModelCache",
    "load_model", "ScoreResult",
    # evaluation (imported on first use)
    "evaluate", "compare", "EvalReport", "CompareReport",
]

_LAZY = {
    "RecursiveSystem": "runtime.system", "RunResult": "runtime.execution.results", "TraceRecord": "runtime.execution.results",
    "Agent": "runtime.agent.agent", "RunOptions": "runtime.options", "GenerationOptions": "runtime.agent.decoding", "LoadedModel": "runtime.sources.loaded",
    "ModelCache": "runtime.sources.loaded", "load_model": "runtime.sources.loaded", "ScoreResult": "runtime.agent.scoring",
    "evaluate": "eval.evaluate", "compare": "eval.compare", "EvalReport": "eval.evaluate",
    "CompareReport": "eval.compare",
}


__getattr__ = lazy_exports(__name__, _LAZY)
