"""Where models live and what they cost: placement (agent -> device), memory estimates without
weights, low-memory residency, peak-memory measurement and out-of-memory errors.

Names are imported on first use.
"""

from __future__ import annotations

from ..._lazy import lazy_exports

__all__ = [
    "AgentMemory", "GiB", "MemoryEstimate", "OOM_HINT", "OutOfMemory", "PLACE_HINT", "PROMPT_TOKENS",
    "PeakMemory", "PlacementPlan", "Residency", "SPLIT", "STRATEGIES", "available_bytes", "dtype_bytes",
    "estimate_memory", "estimate_tokens", "format_bytes", "free_cached_memory", "is_out_of_memory",
    "kv_cache_bytes", "loading_out_of_memory", "memory_shortfall", "model_size", "model_sizes", "out_of_memory",
    "plan_placement", "raise_out_of_memory", "resident_bytes", "resolve_placement", "weight_bytes",
]

_LAZY = {
    "STRATEGIES": "placement", "SPLIT": "placement", "PlacementPlan": "placement", "plan_placement":
    "placement", "resolve_placement": "placement", "available_bytes": "sizing", "memory_shortfall": "sizing",
    "GiB": "sizing", "PROMPT_TOKENS": "sizing", "AgentMemory": "sizing", "MemoryEstimate": "sizing",
    "dtype_bytes": "sizing", "model_size": "sizing", "model_sizes": "sizing", "weight_bytes": "sizing",
    "kv_cache_bytes": "sizing", "estimate_tokens": "sizing", "estimate_memory": "sizing", "format_bytes":
    "sizing", "Residency": "residency", "PeakMemory": "peak", "resident_bytes": "peak", "OOM_HINT": "oom",
    "PLACE_HINT": "oom", "OutOfMemory": "oom", "is_out_of_memory": "oom", "out_of_memory": "oom",
    "loading_out_of_memory": "oom", "free_cached_memory": "oom", "raise_out_of_memory": "oom",
}

__getattr__ = lazy_exports(__name__, _LAZY)
