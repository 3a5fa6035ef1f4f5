"""The ``python`` tool: run a self-contained Python program in the sandbox and return its output."""

from __future__ import annotations

from .base import Tool, ToolResult
from .sandbox import run_python

__all__ = ["PythonTool"]


class PythonTool(Tool):
    """Runs code with :func:`~recmas_graph.tools.sandbox.run_python`; every call starts afresh.

    ``boundary`` picks the sandbox's wall (see :mod:`recmas_graph.tools.sandbox`); by default it
    follows the environment variable ``RECMAS_SANDBOX``.

    >>> PythonTool().run("print(6 * 7)").output
    '42\\n'
    """

    name = "python"
    description = ("Run a self-contained Python 3 program (standard library, sympy, numpy) in a sandbox and "
                   "return what it prints. Each call starts fresh: print every result you need.")
    argument_hint = "python code"

    def __init__(self, *, timeout_s: float = 10.0, memory_mb: int = 1024, max_output_chars: int = 4000,
                 boundary: str | None = None) -> None:
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.max_output_chars = max_output_chars
        #: ``"auto"``, ``"strict"`` or ``"audit"``; None: ``$RECMAS_SANDBOX``, else ``"auto"``.
        self.boundary = boundary

    def _run(self, arguments: str) -> ToolResult:
        result = run_python(arguments, timeout_s=self.timeout_s, memory_mb=self.memory_mb,
                            max_output_chars=self.max_output_chars, boundary=self.boundary)
        details = {"stdout": result.stdout, "stderr": result.stderr, "exit_code": result.exit_code,
                   "reason": result.reason, "timeout_s": self.timeout_s, "boundary": result.boundary}
        if result.ok:
            return ToolResult(True, result.stdout, None, result.elapsed_s, details)
        return ToolResult(False, result.stdout, result.error_text, result.elapsed_s, details)
