"""Tools agents may call while decoding: the interface, the built-in tools, the sandbox and the tool loop.

Built-in tools (registered through the ``recmas_tools`` hook by :mod:`recmas_graph.builtin`):

- ``python``: runs a program in the sandbox (:mod:`recmas_graph.tools.sandbox`);
- ``retrieve``: BM25 search over a local document collection (``RECMAS_RETRIEVE_COLLECTION``).

An agent lists the tools it may call in its ``tools`` field; :func:`run_tool_loop` runs the calls
the model writes and :func:`TOOL_PROMPT` tells the model how to write them. No torch here.
"""

from __future__ import annotations

from .base import Tool, ToolResult
from .loop import STOP_STRINGS, TOOL_PROMPT, ToolCall, ToolTranscript, find_call, run_tool_loop
from .python_tool import PythonTool
from .retrieve import BM25, COLLECTION_ENV, RetrieveTool, load_collection
from .sandbox import SandboxResult, run_python

__all__ = [
    "Tool",
    "ToolResult",
    "ToolCall",
    "ToolTranscript",
    "run_tool_loop",
    "find_call",
    "TOOL_PROMPT",
    "STOP_STRINGS",
    "PythonTool",
    "RetrieveTool",
    "BM25",
    "COLLECTION_ENV",
    "load_collection",
    "SandboxResult",
    "run_python",
    "builtin_tools",
]


def builtin_tools() -> list[Tool]:
    """Fresh instances of the built-in tools."""
    return [PythonTool(), RetrieveTool()]
