"""Serving built systems: an OpenAI-compatible HTTP API (FastAPI) and an MCP tool (extra ``serve``).

No model logic of its own: requests become :class:`~recmas_graph.runtime.options.RunOptions` and
questions, compatible requests are batched (:mod:`.batcher`) and the runtime's ``system.run`` is the
unit of work. :func:`create_app` builds the app; :class:`BackgroundServer` runs it with uvicorn in a
thread (tests, benchmarks, notebooks); :func:`mcp_server` exposes a system as an MCP tool.
See docs/serving.md.
"""

from __future__ import annotations

from .._lazy import lazy_exports

__all__ = ["create_app", "ServeSettings", "BackgroundServer", "mcp_server", "Batcher"]

__getattr__ = lazy_exports(__name__, {
    "create_app": "app",
    "ServeSettings": "models",
    "BackgroundServer": "server",
    "mcp_server": "mcp",
    "Batcher": "batcher",
})
