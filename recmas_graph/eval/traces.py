"""Where the time goes: read a run's trace (``recmas run --trace FILE``), total it, draw its timeline.

A trace file has one JSON line per pass (``batch``, ``agent``, ``round``, ``action``, ``device``,
``start_s``, ``wall_s``, ``prompt_tokens``, ``latent_steps``, ``generated_tokens``,
``peak_mem_bytes``, and ``reused_tokens``: the prompt positions a cached prefix supplied). :func:`summarise` totals it per agent and action; :func:`plot_timeline` draws
the passes per device and agent on one time axis, batches one after another.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RunError

__all__ = ["TracePass", "TraceTotal", "read_trace", "summarise", "timeline", "plot_timeline"]

_REQUIRED = ("agent", "round", "action", "wall_s")


@dataclass(frozen=True)
class TracePass:
    """One pass of a trace, with its start on the whole file's time axis (``at_s``)."""

    batch: int
    agent: str
    round: int
    action: str
    device: str
    at_s: float
    wall_s: float
    prompt_tokens: int
    latent_steps: int
    generated_tokens: int
    peak_mem_bytes: int
    reused_tokens: int = 0  # prompt positions taken from a cached prefix


@dataclass(frozen=True)
class TraceTotal:
    """Totals of the passes of one agent and action."""

    agent: str
    action: str
    passes: int
    wall_s: float
    share: float  # of the summed wall time of all passes
    prompt_tokens: int
    latent_steps: int
    generated_tokens: int
    peak_mem_bytes: int  # the largest of the passes
    reused_tokens: int = 0  # of the prompt tokens, those taken from a cached prefix


def read_trace(path: str | Path) -> list[TracePass]:
    """The passes of a trace file; batches are laid one after another on one time axis.

    A line that is not JSON or lacks a field is named by its number.
    """
    path = Path(path)
    if not path.is_file():
        raise RunError(f"no trace file {path}", culprit=str(path),
                       hint="write one with recmas run TOPOLOGY -q ... --trace FILE")
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise RunError(f"line {number} of {path.name} is not JSON: {err.msg}", culprit=str(path)) from None
        missing = [k for k in _REQUIRED if not isinstance(row, dict) or k not in row]
        if missing:
            raise RunError(f"line {number} of {path.name} is not a trace row (no {', '.join(missing)})",
                           culprit=str(path), hint="give the file that recmas run --trace wrote")
        try:
            row["round"], row["wall_s"], row["batch"] = int(row["round"]), float(row["wall_s"]), int(row.get("batch", 0))
            row["start_s"] = float(row["start_s"]) if "start_s" in row else None
        except (TypeError, ValueError):
            raise RunError(f"line {number} of {path.name}: batch, round, wall_s and start_s must be numbers",
                           culprit=str(path)) from None
        rows.append(row)
    if not rows:
        raise RunError(f"{path} holds no passes", culprit=str(path))
    # each batch's end; a row without start_s (traces written before it existed) starts where the
    # batch's passes so far end, so its passes lie one after another in file order
    ends: dict[int, float] = {}
    for row in rows:
        b = row["batch"]
        if row["start_s"] is None:
            row["start_s"] = ends.get(b, 0.0)
        ends[b] = max(ends.get(b, 0.0), row["start_s"] + row["wall_s"])
    offset, offsets = 0.0, {}  # each batch starts where the previous one ended
    for b in sorted(ends):
        offsets[b] = offset
        offset += ends[b]
    return [TracePass(r["batch"], str(r["agent"]), r["round"], str(r["action"]),
                      str(r.get("device", "cpu")), offsets[r["batch"]] + r["start_s"], r["wall_s"], int(r.get("prompt_tokens", 0)), int(r.get("latent_steps", 0)),
                      int(r.get("generated_tokens", 0)), int(r.get("peak_mem_bytes", 0)),
                      int(r.get("reused_tokens", 0))) for r in rows]


def summarise(passes: Sequence[TracePass]) -> list[TraceTotal]:
    """Totals per (agent, action), the most expensive first."""
    groups: dict[tuple[str, str], list[TracePass]] = {}
    for p in passes:
        groups.setdefault((p.agent, p.action), []).append(p)
    total = sum(p.wall_s for p in passes) or 1.0
    out = [TraceTotal(agent, action, len(g), sum(p.wall_s for p in g), sum(p.wall_s for p in g) / total,
                      sum(p.prompt_tokens for p in g), sum(p.latent_steps for p in g),
                      sum(p.generated_tokens for p in g), max(p.peak_mem_bytes for p in g),
                      sum(p.reused_tokens for p in g))
           for (agent, action), g in groups.items()]
    return sorted(out, key=lambda t: -t.wall_s)


def timeline(passes: Sequence[TracePass]) -> list[tuple[str, list[TracePass]]]:
    """The plot's lanes: ``("device / agent", passes)`` in order of device, then first appearance."""
    lanes: dict[str, list[TracePass]] = {}
    for p in sorted(passes, key=lambda p: (p.device, p.at_s)):
        lanes.setdefault(f"{p.device} / {p.agent}", []).append(p)
    return list(lanes.items())


#: Colours of the actions (matplotlib's default cycle, fixed per action so plots compare).
ACTION_COLOURS = {"latent": "#1f77b4", "text": "#ff7f0e", "latent+text": "#9467bd", "decode": "#2ca02c"}


def plot_timeline(passes: Sequence[TracePass], out: str | Path, *, title: str | None = None) -> Path:
    """Draw the passes as bars on one time axis, a lane per device and agent, coloured by action,
    each labelled with its round and tokens; writes ``out`` (PNG, SVG or PDF by suffix)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        raise RunError("drawing a timeline needs matplotlib", culprit="recmas trace plot",
                       hint="pip install 'recmas-graph[eval]'") from None
    out = Path(out)
    if out.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise RunError(f"cannot draw {out.name}: unknown image type {out.suffix or '(none)'}", culprit=str(out),
                       hint="name the file .png, .svg or .pdf")
    lanes = timeline(passes)
    end = max(p.at_s + p.wall_s for p in passes) or 1.0
    fig, ax = plt.subplots(figsize=(11, 1.0 + 0.55 * len(lanes)))
    for y, (_, lane) in enumerate(lanes):
        for p in lane:
            ax.broken_barh([(p.at_s, p.wall_s)], (y - 0.38, 0.76), color=ACTION_COLOURS.get(p.action, "#7f7f7f"))
            if p.wall_s > 0.06 * end:
                tokens = p.latent_steps if p.action == "latent" else p.generated_tokens
                ax.text(p.at_s + p.wall_s / 2, y, f"r{p.round} {tokens}", ha="center", va="center", fontsize=7,
                        color="white")
    ax.set_yticks(range(len(lanes)), [name for name, _ in lanes])
    ax.invert_yaxis()
    ax.set_xlim(0, end * 1.01)
    ax.set_xlabel("seconds (batches one after another; labels: round and latent steps or generated tokens)")
    actions = {p.action for p in passes}
    used = [a for a in ACTION_COLOURS if a in actions] + sorted(actions - set(ACTION_COLOURS))
    ax.legend(handles=[Patch(color=ACTION_COLOURS.get(a, "#7f7f7f"), label=a) for a in used], loc="upper left",
              bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)
    starts = sorted({min(p.at_s for p in passes if p.batch == b) for b in {p.batch for p in passes}})
    for x in starts[1:]:  # where each later batch begins
        ax.axvline(x, color="#bbbbbb", linestyle=":", linewidth=1)
    ax.set_title(title or f"{len(passes)} passes, {end:.2f} s")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
