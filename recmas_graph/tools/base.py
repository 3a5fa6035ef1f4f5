"""The tool interface: a named callable that takes one argument string and returns a :class:`ToolResult`."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Tool", "ToolResult"]


@dataclass(frozen=True)
class ToolResult:
    """What a tool call returned: ``ok``, its ``output`` text, an ``error`` when it failed, its duration,
    and raw ``details`` a tool protocol may format (e.g. ``stdout``, ``stderr``, ``exit_code``)."""

    ok: bool
    output: str
    error: str | None = None
    elapsed_s: float = 0.0
    details: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def as_text(self) -> str:
        """The text shown to the model: the output, then the error (if any)."""
        parts = [self.output.rstrip("\n")] if self.output.strip() else []
        if self.error:
            parts.append(f"Error: {self.error}")
        return "\n".join(parts)


class Tool:
    """Base class of tools: subclasses set ``name`` and ``description`` and implement :meth:`_run`.

    :meth:`run` times the call and turns an unexpected exception into a failed :class:`ToolResult`
    naming the tool, so a misbehaving tool never ends a run.
    """

    name: str = ""
    description: str = ""
    #: How the model should write the arguments (shown in the tool prompt).
    argument_hint: str = "ARGS"

    def run(self, arguments: str) -> ToolResult:
        """Run the tool on ``arguments`` (free text) and return its result."""
        start = time.perf_counter()
        try:
            result = self._run(arguments)
        except Exception as err:  # a broken tool must not end the agent's decoding
            return ToolResult(False, "", f"tool {self.name!r} failed: {type(err).__name__}: {err}",
                              time.perf_counter() - start)
        if not result.elapsed_s:
            result = ToolResult(result.ok, result.output, result.error, time.perf_counter() - start, result.details)
        return result

    def _run(self, arguments: str) -> ToolResult:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
