"""The runtime layer: model sources, links, prompts and splicing, latent rollout, decoding, agents,
the system (an ``nn.Module``), placement, the message store, pass runners (backends) and the
executor. Names are imported on first use, so ``import recmas_graph.runtime`` costs nothing.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "RecursiveSystem", "RunResult", "TraceRecord", "Agent", "GenerationOptions", "PromptBatch",
    "LoadedModel", "ModelCache", "load_model", "MessageStore", "PassRequest", "PassResult", "PassRunner",
    "InProcessRunner", "execute", "resolve_placement",
]

_LAZY = {
    "RecursiveSystem": "system", "RunResult": "results", "TraceRecord": "results", "Agent": "agent",
    "GenerationOptions": "decoding", "PromptBatch": "prompts", "LoadedModel": "sources.loaded",
    "ModelCache": "sources.loaded", "load_model": "sources.loaded", "MessageStore": "messages",
    "PassRequest": "backends", "PassResult": "backends", "PassRunner": "backends", "InProcessRunner": "backends",
    "execute": "executor", "resolve_placement": "placement",
}


def __getattr__(name: str) -> Any:
    """Import runtime names on first use (they pull in torch and transformers)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{module}", __name__), name)
