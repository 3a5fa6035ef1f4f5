"""The runtime layer: model sources, links, prompts and splicing, latent rollout, decoding, agents,
the system (an ``nn.Module``), placement and memory estimates, low-memory mode, the message store, pass runners (backends) and the
executor. Names are imported on first use, so ``import recmas_graph.runtime`` costs nothing.
"""

from __future__ import annotations

from .._lazy import lazy_exports

__all__ = [
    "RecursiveSystem", "RunResult", "TraceRecord", "Agent", "RunOptions", "GenerationOptions", "PromptBatch",
    "LoadedModel", "ModelCache", "load_model", "MessageStore", "PassRequest", "PassResult", "PassRunner",
    "InProcessRunner", "execute", "resolve_placement", "plan_placement", "PlacementPlan", "STRATEGIES",
    "estimate_memory", "MemoryEstimate", "Residency", "OutOfMemory", "ScoreResult", "ContinuationScore",
]

_LAZY = {
    "RecursiveSystem": "system", "RunResult": "results", "TraceRecord": "results", "Agent": "agent",
    "RunOptions": "options", "GenerationOptions": "decoding", "PromptBatch": "prompts", "LoadedModel": "sources.loaded",
    "ModelCache": "sources.loaded", "load_model": "sources.loaded", "MessageStore": "messages",
    "PassRequest": "backends", "PassResult": "backends", "PassRunner": "backends", "InProcessRunner": "backends",
    "execute": "executor", "resolve_placement": "placement", "plan_placement": "placement",
    "PlacementPlan": "placement", "STRATEGIES": "placement", "estimate_memory": "sizing", "MemoryEstimate": "sizing",
    "Residency": "residency", "OutOfMemory": "oom", "ScoreResult": "scoring", "ContinuationScore": "scoring",
}


__getattr__ = lazy_exports(__name__, _LAZY)
