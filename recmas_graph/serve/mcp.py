"""A system as a Model Context Protocol tool (the official ``mcp`` SDK): :func:`mcp_server`.

The server exposes one tool, ``ask(question, rounds?)``, answered by ``system.run`` with the
server's run options (``recmas mcp``'s run flags) and the call's ``rounds`` on top. Coding agents
and desktop assistants start it over stdio (``recmas mcp TOPOLOGY``; docs/serving.md shows the
client configuration). The run happens in a worker thread, one call at a time.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

from ..errors import RecmasError
from ..runtime.options import RunOptions

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ..runtime.system import RecursiveSystem

__all__ = ["mcp_server", "TOOL_NAME"]

#: The tool's name.
TOOL_NAME = "ask"


def _server_class() -> tuple[Any, type[Exception]]:
    """The SDK's high-level server class and the error a tool raises for bad input (mcp 2.x or 1.x)."""
    try:  # mcp 2.x
        from mcp.server import MCPServer
        from mcp.server.mcpserver.exceptions import ToolError

        return MCPServer, ToolError
    except ImportError:  # pragma: no cover - mcp 1.x
        from mcp.server.fastmcp import FastMCP  # type: ignore[attr-defined,unused-ignore]
        from mcp.server.fastmcp.exceptions import ToolError as ToolError1  # type: ignore[import-not-found,unused-ignore]

        return FastMCP, ToolError1


def mcp_server(system: RecursiveSystem, *, name: str | None = None, options: RunOptions | None = None) -> Any:
    """An MCP server (``MCPServer``, or ``FastMCP`` on mcp 1.x) whose tool ``ask`` answers with ``system``.

    Run it with ``.run("stdio")``. ``options`` are the run options of every call (``rounds`` may be
    changed per call); a call's bad input comes back as a tool error naming the field.
    """
    base = options or RunOptions()
    title = name or system.spec.name
    agents = ", ".join(system.spec.agent_names)
    server_class, tool_error = _server_class()
    server = server_class(name=f"recmas-{title}", instructions=(
        f"'{TOOL_NAME}' answers a question with the RecursiveMAS system {title!r} (agents {agents}; they think "
        f"in latent space for some rounds, then {system.spec.output!r} writes the answer)."))
    lock = threading.Lock()  # one run at a time: the system is not re-entrant

    def answer(question: str, rounds: int | None) -> str:
        with lock:
            result = system.run([question], base.replace(rounds=rounds) if rounds is not None else base)
        return result.answers[0]

    @server.tool(name=TOOL_NAME, description=(
        f"Ask the multi-agent system {title!r} a question; it answers in text. 'rounds' (optional, >= 1) "
        "sets how many recursion rounds its agents think before answering (default: the topology's)."))
    async def ask(question: str, rounds: int | None = None) -> str:
        """Answer ``question`` (with ``rounds`` recursion rounds)."""
        if not question.strip():
            raise tool_error("question: give a non-empty question")
        if rounds is not None and rounds < 1:
            raise tool_error(f"rounds: must be an integer >= 1, got {rounds}")
        try:
            return await asyncio.get_running_loop().run_in_executor(None, answer, question, rounds)
        except RecmasError as err:
            raise tool_error(str(err)) from None

    return server
