"""The tool loop: let a decoding agent call tools in the middle of its answer.

The model writes a call, decoding stops right after it (the protocol's stop strings), the loop runs
the tool, appends the result to the answer text and lets the model continue. The call syntax, the
result format and the limits come from a :class:`~recmas_graph.tools.protocols.ToolProtocol`
(default: ours, :data:`~recmas_graph.tools.protocols.RECMAS`; the official deliberation style
uses :data:`~recmas_graph.tools.protocols.REFERENCE`).

The loop is bounded by ``max_calls`` and ``max_seconds`` (time spent inside tools, not decoding;
the first call always runs): past either bound the next call is not run and a note says so; then,
depending on the protocol, the model writes its final answer in one last continuation or decoding
ends.

>>> replies = iter(["Let me compute.\\n```python\\nprint(6 * 7)\\n```\\n", "So the answer is \\\\boxed{42}."])
>>> from recmas_graph.tools import PythonTool
>>> t = run_tool_loop(lambda text, stop: next(replies), [PythonTool()])
>>> t.calls[0].result.output, t.text.endswith("\\\\boxed{42}.")
('42\\n', True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from .base import Tool, ToolResult
from .protocols import RECMAS, FoundCall, ToolProtocol

__all__ = ["ToolCall", "ToolTranscript", "run_tool_loop", "TOOL_PROMPT", "STOP_STRINGS", "find_call"]

#: Decoding stops right after one of these (our protocol: a closing code fence, a closing tool tag).
STOP_STRINGS: tuple[str, ...] = RECMAS.stop


@dataclass(frozen=True)
class ToolCall:
    """One tool call of a transcript: the tool's name, the arguments the model wrote, the result."""

    name: str
    arguments: str
    result: ToolResult
    elapsed_s: float


@dataclass
class ToolTranscript:
    """The full answer text (tool results included) and the calls made.

    ``stopped`` says why the loop ended: ``"done"`` (the model finished), ``"max_calls"``,
    ``"max_seconds"`` or ``"max_generations"``.
    """

    text: str
    calls: list[ToolCall] = field(default_factory=list)
    stopped: str = "done"


def find_call(text: str, start: int = 0, *, python: bool = True) -> FoundCall | None:
    """The first complete call of our protocol in ``text[start:]`` (``python``: whether fenced blocks count)."""
    return RECMAS.find_call(text, start, {"python"} if python else set())


def _paused_on_stop(new: str, stop: Iterable[str]) -> bool:
    tail = new[-24:]
    return any(s in tail for s in stop)


def run_tool_loop(
    generate: Callable[[str, list[str]], str],
    tools: Iterable[Tool] | Mapping[str, Tool],
    *,
    protocol: ToolProtocol = RECMAS,
    max_calls: int | None = None,
    max_seconds: float = 60.0,
    max_result_chars: int | None = None,
    prefix: str = "",
) -> ToolTranscript:
    """Decode with tool calls: ``generate(continuation, stop)`` returns the next piece of text.

    ``continuation`` is the answer so far (tool results included), ``stop`` the strings after
    which decoding should pause (the protocol's; empty for the final continuation). ``generate``
    returns only the new text and an empty string when it has nothing more to say. An unknown tool
    name gives an error result in the transcript, never an exception. ``prefix`` starts the answer
    (e.g. an opened call, to require one). ``max_calls`` and ``max_result_chars`` default to the
    protocol's.
    """
    if max_result_chars is not None and max_result_chars != protocol.max_result_chars:
        protocol = _with_clip(protocol, max_result_chars)
    limit = protocol.max_calls if max_calls is None else max_calls
    table = dict(tools) if isinstance(tools, Mapping) else {t.name: t for t in tools}
    stop = list(protocol.stop)
    text, scanned = prefix, 0
    calls: list[ToolCall] = []
    for _ in range(2 * limit + 4):
        new = generate(text, stop)
        if not new:
            return ToolTranscript(text, calls, "done")
        text += new
        call = protocol.find_call(text, scanned, table)
        if call is None:
            if _paused_on_stop(new, stop):
                continue  # paused on a fence that is not a call (e.g. the end of a plain block)
            return ToolTranscript(text, calls, "done")
        text = text[: call.end]  # whatever was decoded after the call did not see its result
        tool_time = sum(c.elapsed_s for c in calls)  # decoding time does not count against the tools
        over = ("max_calls" if len(calls) >= limit else "max_seconds" if calls and tool_time > max_seconds else None)
        if over:
            why = f"the limit of {limit} tool calls" if over == "max_calls" else f"the {max_seconds:g} s tool time limit"
            text += protocol.limit_note(call, why)
            if protocol.stop_at_limit:
                return ToolTranscript(text, calls, over)
            return ToolTranscript(text + generate(text, []), calls, over)
        tool = table.get(call.name)
        if tool is None:
            known = ", ".join(sorted(table)) or "none"
            result = ToolResult(False, "", f"unknown tool {call.name!r}; available tools: {known}")
        else:
            result = tool.run(protocol.prepare(call))
        calls.append(ToolCall(call.name, call.arguments, result, result.elapsed_s))
        text += protocol.format_result(call, result)
        scanned = len(text)
    text += "\n"
    return ToolTranscript(text + generate(text, []), calls, "max_generations")


def _with_clip(protocol: ToolProtocol, chars: int) -> ToolProtocol:
    from dataclasses import replace

    return replace(protocol, max_result_chars=chars)  # type: ignore[type-var]


def TOOL_PROMPT(tools: Iterable[Tool] | Mapping[str, Tool], max_calls: int = 4) -> str:  # noqa: N802 - a prompt constant in spirit
    """The instructions that tell a model how to call ``tools`` in our protocol (added to the user text)."""
    table = dict(tools) if isinstance(tools, Mapping) else {t.name: t for t in tools}
    lines = ["You can call tools while you answer."]
    if "python" in table:
        lines += [
            "To run Python, write a fenced block:",
            "```python",
            "print(2 ** 10)",
            "```",
            "Its output then appears in a ```output block right after it. Each block runs on its own "
            "(no state is kept between blocks), so print every value you need.",
        ]
    others = [t for n, t in table.items() if n != "python"]
    if others or "python" not in table:
        lines.append('To call a tool, write <tool name="NAME">ARGUMENTS</tool>; its result then appears in '
                     '<tool_result name="NAME">...</tool_result>.')
    lines.append("Available tools:")
    for name, tool in table.items():
        lines.append(f"- {name} ({tool.argument_hint}): {tool.description}")
    lines.append(f"Use at most {max_calls} tool calls, then write your final answer.")
    return "\n".join(lines)
