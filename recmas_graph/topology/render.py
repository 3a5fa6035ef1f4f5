"""Diagrams of a topology: Graphviz DOT (and SVG / PNG through ``dot``) and Mermaid flowcharts.

Agents are boxes labelled with their name, role and model; the output agent has a double, bold,
filled border. Forward edges are solid, recursion edges dashed and labelled ``(next round)``; every
edge is labelled with its slot, link type and medium. Output is deterministic (declaration order,
no timestamps). This module imports without torch.

>>> from recmas_graph.topology.spec import TopologyBuilder
>>> spec = (TopologyBuilder("pair", rounds=2).agent("a", role="planner", model="tiny:llama")
...         .agent("b", role="solver", model="tiny:qwen2").edge("a", "b", slot="plan")
...         .recursion("b", "a", slot="feedback").output("b").build())
>>> "style=dashed" in to_dot(spec) and "-.->" in to_mermaid(spec)
True
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import graphviz

from ..errors import RecmasError
from .spec import AgentSpec, EdgeSpec, TopologySpec

__all__ = ["RenderError", "FORMATS", "to_dot", "to_mermaid", "render"]

#: Supported file extensions and what each one produces.
FORMATS: dict[str, str] = {
    ".dot": "Graphviz DOT source",
    ".svg": "SVG image (needs the Graphviz 'dot' program)",
    ".png": "PNG image (needs the Graphviz 'dot' program)",
    ".mmd": "Mermaid flowchart",
}

_INSTALL_HINT = (
    "install Graphviz: 'sudo apt-get install graphviz' (Debian/Ubuntu), 'brew install graphviz' (macOS), "
    "or see https://graphviz.org/download/ ; .dot and .mmd files need no Graphviz"
)
_DEFAULT_INNER = "inner_ln_res"

# Colours shared by DOT and Mermaid.
_AGENT_FILL, _AGENT_STROKE = "#eef3fb", "#4a6fa5"
_OUTPUT_FILL, _OUTPUT_STROKE = "#fff2b3", "#b8860b"
_RECURSION_COLOR = "#c0504d"
_FORWARD_COLOR = "#333333"


class RenderError(RecmasError):
    """A diagram cannot be written: unknown extension, Graphviz missing, or an unwritable path."""


def _agent_lines(agent: AgentSpec, output: str) -> list[str]:
    """Label lines of an agent: name, role, model, then non-default extras."""
    title = f"{agent.name} (output)" if agent.name == output else agent.name
    lines = [title, f"role: {agent.role}", f"model: {agent.model}"]
    if agent.inner_link.type != _DEFAULT_INNER:
        lines.append(f"inner link: {agent.inner_link.type}")
    if agent.device:
        lines.append(f"device: {agent.device}")
    if agent.dtype:
        lines.append(f"dtype: {agent.dtype}")
    if agent.tools:
        lines.append(f"tools: {', '.join(agent.tools)}")
    return lines


def _edge_lines(edge: EdgeSpec) -> list[str]:
    """Label lines of an edge: slot (marked next-round for recursion), then link type and medium."""
    slot = f"{edge.slot_name} (next round)" if edge.recursion else edge.slot_name
    return [slot, f"{edge.link.type}, {edge.medium}"]


def _graph_title(spec: TopologySpec) -> str:
    """One-line caption: name, rounds and latent steps."""
    return f"{spec.name} (rounds={spec.rounds}, latent steps={spec.latent_steps})"


def _dot_text(lines: list[str]) -> str:
    """Join label lines for DOT, escaping backslashes in user text."""
    return "\\n".join(str(graphviz.escape(line)) for line in lines)


def to_dot(spec: TopologySpec) -> str:
    """Graphviz DOT source of ``spec`` (deterministic: agents and edges in declaration order)."""
    g = graphviz.Digraph(name=spec.name)
    g.attr("graph", rankdir="LR", labelloc="t", fontname="Helvetica", nodesep="0.5", ranksep="0.9",
           label=_dot_text([_graph_title(spec), "solid: same round; dashed: next round; double border: output"]))
    g.attr("node", shape="box", style="rounded,filled", fontname="Helvetica", fontsize="11",
           fillcolor=_AGENT_FILL, color=_AGENT_STROKE)
    g.attr("edge", fontname="Helvetica", fontsize="10", color=_FORWARD_COLOR)
    for agent in spec.agents:
        attrs: dict[str, str] = {}
        if agent.name == spec.output:
            attrs = {"style": "rounded,filled,bold", "peripheries": "2", "penwidth": "2",
                     "fillcolor": _OUTPUT_FILL, "color": _OUTPUT_STROKE}
        g.node(agent.name, label=_dot_text(_agent_lines(agent, spec.output)), **attrs)
    for edge in spec.edges:
        attrs = {}
        if edge.recursion:
            attrs = {"style": "dashed", "color": _RECURSION_COLOR, "fontcolor": _RECURSION_COLOR,
                     "constraint": "false"}
        g.edge(edge.source, edge.target, label=_dot_text(_edge_lines(edge)), **attrs)
    return g.source


def _mermaid_text(lines: list[str]) -> str:
    """Join label lines for a quoted Mermaid label, escaping characters Mermaid would parse."""
    escaped = [
        line.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")
        for line in lines
    ]
    return "<br/>".join(escaped)


# Words Mermaid parses as statements, unusable as node ids.
_MERMAID_KEYWORDS = frozenset({"end", "graph", "flowchart", "subgraph", "class", "classdef", "style",
                               "linkstyle", "click", "call", "href", "direction"})


def _mermaid_ids(names: list[str]) -> dict[str, str]:
    """Safe, unique Mermaid node ids for agent names (``-`` and keywords such as ``end`` are unsafe)."""
    ids: dict[str, str] = {}
    used: set[str] = set()
    for i, name in enumerate(names):
        ident = re.sub(r"[^A-Za-z0-9_]", "_", name)
        base, n = ident, i
        while ident.lower() in _MERMAID_KEYWORDS or ident in used:
            ident, n = f"{base}_{n}", n + 1
        ids[name] = ident
        used.add(ident)
    return ids


def to_mermaid(spec: TopologySpec) -> str:
    """Mermaid flowchart of ``spec`` (deterministic: agents and edges in declaration order)."""
    ids = _mermaid_ids(spec.agent_names)
    lines = ["---", f'title: "{_graph_title(spec)}"', "---", "flowchart LR"]
    for agent in spec.agents:
        lines.append(f'    {ids[agent.name]}["{_mermaid_text(_agent_lines(agent, spec.output))}"]')
    for edge in spec.edges:
        arrow = "-.->" if edge.recursion else "-->"
        lines.append(f'    {ids[edge.source]} {arrow}|"{_mermaid_text(_edge_lines(edge))}"| {ids[edge.target]}')
    lines.append(f"    classDef agent fill:{_AGENT_FILL},stroke:{_AGENT_STROKE}")
    lines.append(f"    classDef output fill:{_OUTPUT_FILL},stroke:{_OUTPUT_STROKE},stroke-width:4px")
    others = [ids[n] for n in spec.agent_names if n != spec.output]
    if others:
        lines.append(f"    class {','.join(others)} agent")
    lines.append(f"    class {ids[spec.output]} output")
    recursion = [str(i) for i, e in enumerate(spec.edges) if e.recursion]
    if recursion:
        lines.append(f"    linkStyle {','.join(recursion)} stroke:{_RECURSION_COLOR},stroke-dasharray:6 4")
    return "\n".join(lines) + "\n"


def _format_of(path: Path) -> str:
    """The lower-case extension of ``path``; :class:`RenderError` when it is not supported."""
    ext = path.suffix.lower()
    if ext not in FORMATS:
        got = f"extension {ext!r}" if ext else "no extension"
        raise RenderError(
            f"cannot render a file with {got}",
            culprit=str(path),
            hint=f"use one of: {', '.join(FORMATS)}",
        )
    return ext


def _image_bytes(dot_source: str, fmt: str) -> bytes:
    """Run Graphviz ``dot`` on ``dot_source``; :class:`RenderError` when it is missing or fails."""
    if shutil.which("dot") is None:
        raise RenderError(f"the Graphviz 'dot' program is needed for .{fmt} output and was not found on PATH",
                          culprit=f".{fmt}", hint=_INSTALL_HINT)
    try:
        return graphviz.Source(dot_source).pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise RenderError(f"the Graphviz 'dot' program could not be run for .{fmt} output",
                          culprit=f".{fmt}", hint=_INSTALL_HINT) from None
    except graphviz.CalledProcessError as err:
        stderr = (err.stderr or b"").decode(errors="replace").strip()
        raise RenderError(f"Graphviz 'dot' failed: {stderr or err}", culprit=f".{fmt}",
                          hint="render to .dot and run 'dot' yourself to see the problem") from None


def render(spec: TopologySpec, path: str | Path) -> Path:
    """Write a diagram of ``spec`` to ``path``; the format follows the extension (see :data:`FORMATS`)."""
    path = Path(path)
    ext = _format_of(path)
    if ext == ".dot":
        data: bytes = to_dot(spec).encode("utf-8")
    elif ext == ".mmd":
        data = to_mermaid(spec).encode("utf-8")
    else:
        data = _image_bytes(to_dot(spec), ext[1:])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as err:
        raise RenderError(f"cannot write the diagram: {err.strerror or err}", culprit=str(path),
                          hint="choose a writable path") from None
    return path
