"""The runtime layer: the system (an ``nn.Module``), its one build path, run options and saved
systems here, and a folder per part: ``execution/`` (the executor, pass runners, the message store,
results, batches), ``agent/`` (one model's compute: prompts, rollout, decoding, scoring, loss),
``memory/`` (placement, estimates, low-memory residency, out-of-memory errors), ``links/`` and
``sources/``. Names are imported on first use, so ``import recmas_graph.runtime`` costs nothing.
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
    "RecursiveSystem": "system", "RunResult": "execution.results", "TraceRecord": "execution.results", "Agent": "agent.agent",
    "RunOptions": "options", "GenerationOptions": "agent.decoding", "PromptBatch": "agent.prompts", "LoadedModel": "sources.loaded",
    "ModelCache": "sources.loaded", "load_model": "sources.loaded", "MessageStore": "execution.messages",
    "PassRequest": "execution.backends", "PassResult": "execution.backends", "PassRunner": "execution.backends", "InProcessRunner": "execution.backends",
    "execute": "execution.executor", "resolve_placement": "memory.placement", "plan_placement": "memory.placement",
    "PlacementPlan": "memory.placement", "STRATEGIES": "memory.placement", "estimate_memory": "memory.sizing", "MemoryEstimate": "memory.sizing",
    "Residency": "memory.residency", "OutOfMemory": "memory.oom", "ScoreResult": "agent.scoring", "ContinuationScore": "agent.scoring",
}


__getattr__ = lazy_exports(__name__, _LAZY)
