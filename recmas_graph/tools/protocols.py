"""Tool protocols: how a decoding model writes a tool call, and how the result is written back.

- :data:`RECMAS` (ours): a fenced ```` ```python ... ``` ```` block calls ``python`` (its result
  follows in an ```` ```output ```` block) and ``<tool name="NAME">ARGS</tool>`` calls any tool
  (``<tool_result name="NAME">...</tool_result>``); at most 4 calls, results clipped at 2,000
  characters; past the limit a note asks for the final answer and decoding continues once.
- :data:`REFERENCE` (the official deliberation style): ``<python>CODE</python>`` and
  ``<search>QUERY</search>``, each answered with `` <result> RESULT </result>``; at most 5 calls,
  results clipped at 6,000 characters; the python code runs after the official prelude (math,
  itertools, functools, fractions, statistics, sympy as ``sp``) and its result is written as the
  official runner writes it (stdout, ``[stderr]``, ``[exit_code] N``, ``[no output]``,
  ``[timeout] ...``); a 6th call is answered with the official limit note and decoding stops.
  ``search`` runs the ``retrieve`` tool (offline BM25 over a local collection).

>>> call = REFERENCE.find_call("Let me check. <python>print(2 ** 10)</python> and", 0, {"python"})
>>> call.name, call.arguments
('python', 'print(2 ** 10)')
>>> REFERENCE.format_result(call, ToolResult(True, "1024\\n", details={"stdout": "1024\\n", "stderr": "", "exit_code": 0}))
' <result> 1024 </result>'
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from .base import ToolResult

__all__ = ["FoundCall", "ToolProtocol", "RecmasProtocol", "ReferenceProtocol", "RECMAS", "REFERENCE", "PROTOCOLS",
           "get_protocol"]


@dataclass(frozen=True)
class FoundCall:
    """A complete tool call in the text: the tool it runs, its arguments, where it ends, its syntax."""

    name: str
    arguments: str
    end: int
    syntax: str


class ToolProtocol:
    """The syntax and limits of tool calls (subclasses implement the methods)."""

    name: str = ""
    #: Decoding pauses right after one of these.
    stop: tuple[str, ...] = ()
    max_calls: int = 4
    max_result_chars: int = 2000
    #: Whether decoding stops at once past the call limit (else one more continuation is decoded).
    stop_at_limit: bool = False

    def find_call(self, text: str, start: int, tools: Collection[str]) -> FoundCall | None:
        """The first complete call in ``text[start:]``, or ``None``."""
        raise NotImplementedError

    def prepare(self, call: FoundCall) -> str:
        """The argument text the tool receives (default: as written)."""
        return call.arguments

    def format_result(self, call: FoundCall, result: ToolResult) -> str:
        """The text appended after the call."""
        raise NotImplementedError

    def limit_note(self, call: FoundCall, why: str) -> str:
        """The text appended instead of running a call past the limits."""
        raise NotImplementedError

    def opening(self, tool: str) -> str:
        """The text that opens a call of ``tool`` (to require one at the start of an answer)."""
        raise NotImplementedError


_PY_CALL = re.compile(r"```(?:python|py|python3)[ \t]*\n(.*?)```", re.S)
_TAG_CALL = re.compile(r"<tool\s+name\s*=\s*[\"']?([\w\-.]+)[\"']?\s*>(.*?)</tool>", re.S)


def _clip(body: str, limit: int) -> str:
    return body if len(body) <= limit else body[:limit] + f"\n... [truncated at {limit} characters]"


@dataclass(frozen=True)
class RecmasProtocol(ToolProtocol):
    """Our protocol: fenced python blocks and ``<tool name="...">`` tags (see the module docs)."""

    name: str = "recmas"
    stop: tuple[str, ...] = ("```\n", "</tool>")
    max_calls: int = 4
    max_result_chars: int = 2000
    stop_at_limit: bool = False

    def find_call(self, text: str, start: int, tools: Collection[str]) -> FoundCall | None:
        found: list[FoundCall] = []
        if "python" in tools:
            m = _PY_CALL.search(text, start)
            if m:
                found.append(FoundCall("python", m.group(1), m.end(), "fenced"))
        m = _TAG_CALL.search(text, start)
        if m:
            found.append(FoundCall(m.group(1), m.group(2).strip("\n"), m.end(), "tag"))
        return min(found, key=lambda f: f.end) if found else None

    def _wrap(self, call: FoundCall, body: str) -> str:
        if call.syntax == "fenced":
            return f"\n```output\n{body}\n```\n"
        return f'\n<tool_result name="{call.name}">\n{body}\n</tool_result>\n'

    def format_result(self, call: FoundCall, result: ToolResult) -> str:
        return self._wrap(call, _clip(result.as_text() or "(no output)", self.max_result_chars))

    def limit_note(self, call: FoundCall, why: str) -> str:
        return self._wrap(call, f"Not run: {why} is reached. Give your final answer now without tools.")

    def opening(self, tool: str) -> str:
        return "```python\n" if tool == "python" else f'<tool name="{tool}">'


_REF_CALL = re.compile(r"<(python|search)>\s*(.*?)\s*</\1>", re.DOTALL | re.IGNORECASE)
_REF_PRELUDE = ("import math\nimport itertools\nimport functools\nimport fractions\nimport statistics\n"
                "try:\n    import sympy as sp\nexcept Exception:\n    sp = None\n\n")


def _compact(text: str, limit: int = 320) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit].rstrip() + " ..."


@dataclass(frozen=True)
class ReferenceProtocol(ToolProtocol):
    """The official deliberation protocol: ``<python>`` / ``<search>`` tags and ``<result>`` replies."""

    name: str = "reference"
    stop: tuple[str, ...] = ("</python>", "</Python>", "</PYTHON>", "</search>", "</Search>", "</SEARCH>")
    max_calls: int = 5
    max_result_chars: int = 6000
    stop_at_limit: bool = True
    #: Tag -> the registered tool it runs.
    tools: Mapping[str, str] = field(default_factory=lambda: {"python": "python", "search": "retrieve"})

    def find_call(self, text: str, start: int, tools: Collection[str]) -> FoundCall | None:
        m = _REF_CALL.search(text, start)
        if m is None:
            return None
        tag = m.group(1).lower()
        return FoundCall(self.tools.get(tag, tag), m.group(2), m.end(), tag)

    def prepare(self, call: FoundCall) -> str:
        return f"{_REF_PRELUDE}{call.arguments}\n" if call.syntax == "python" else call.arguments

    def _body(self, call: FoundCall, result: ToolResult) -> str:
        d = dict(result.details or {})
        if call.syntax == "python":
            if d.get("reason") == "timeout":
                return f"[timeout] Python tool exceeded {float(d.get('timeout_s', 10.0))} seconds."
            stdout, stderr = str(d.get("stdout", result.output)), str(d.get("stderr", "") or "")
            if not d and result.error:
                stderr = result.error
            parts = [stdout.rstrip()] if stdout.strip() else []
            if stderr.strip():
                parts.append("[stderr]\n" + stderr.rstrip())
            code = d.get("exit_code")
            if code not in (None, 0):
                parts.append(f"[exit_code] {code}")
            return "\n".join(parts).strip() or "[no output]"
        if not result.ok:
            return f"[search error] {result.error or 'the search failed'}"
        hits = d.get("hits")
        if hits is None:
            return result.output.strip() or "[no search results]"
        lines = [f"Query: {d.get('query', call.arguments)}", "Results:"]
        for i, hit in enumerate(hits, 1):
            lines += [f"[{i}] {hit.get('title', '')}", f"URL: {hit.get('id', '')}", _compact(str(hit.get("text", "")))]
        return "\n".join(lines) if hits else "[no search results]"

    def format_result(self, call: FoundCall, result: ToolResult) -> str:
        body = self._body(call, result).replace("</result>", "< /result>")
        if len(body) > self.max_result_chars:
            body = f"{body[: self.max_result_chars]}\n... [truncated {len(body) - self.max_result_chars} chars]"
        return f" <result> {body} </result>"

    def limit_note(self, call: FoundCall, why: str) -> str:
        return f" <result> [tool limit reached after {self.max_calls} calls] </result>"

    def opening(self, tool: str) -> str:
        tag = next((t for t, name in self.tools.items() if name == tool), tool)
        return f"<{tag}>"


#: Our protocol.
RECMAS = RecmasProtocol()
#: The official deliberation protocol.
REFERENCE = ReferenceProtocol()
#: The protocols by name (a role's ``tool_protocol``).
PROTOCOLS: dict[str, ToolProtocol] = {"recmas": RECMAS, "reference": REFERENCE}


def get_protocol(name: str | None) -> ToolProtocol:
    """The protocol called ``name`` (``None``: ours); a ``ValueError`` lists the known ones."""
    key = name or "recmas"
    if key not in PROTOCOLS:
        raise ValueError(f"unknown tool protocol {name!r}; use one of: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[key]
