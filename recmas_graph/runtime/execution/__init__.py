"""Running a schedule: the executor (the graph walk, wave by wave), the pass runner protocol and
the in-process runner (backends), the message store, what a run returns, and running many
questions batch by batch.

Names are imported on first use.
"""

from __future__ import annotations

from ..._lazy import lazy_exports

__all__ = [
    "Batch", "BatchError", "InProcessRunner", "Message", "MessageStore", "NO_HOOKS", "PassRequest",
    "PassResult", "PassRunner", "RowLinks", "RunResult", "RunSettings", "Streams", "TraceRecord", "execute",
    "run_batches", "stack_prompts",
]

_LAZY = {
    "execute": "executor", "NO_HOOKS": "executor", "RunSettings": "backends", "PassRequest": "backends",
    "PassResult": "backends", "PassRunner": "backends", "Streams": "backends", "InProcessRunner": "backends",
    "RowLinks": "backends", "stack_prompts": "backends", "Message": "messages", "MessageStore": "messages",
    "TraceRecord": "results", "RunResult": "results", "Batch": "batches", "BatchError": "batches",
    "run_batches": "batches",
}

__getattr__ = lazy_exports(__name__, _LAZY)
