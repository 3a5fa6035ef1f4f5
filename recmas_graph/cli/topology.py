"""Topology commands: ``topologies``, ``validate``, ``plan``, ``render`` and ``schema``.

Each command resolves its TOPOLOGY (a built-in or plugin name, or a path to a JSON file) and
validates it before doing anything else; library errors exit with status 2 through
:func:`recmas_graph.cli.main`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from ..errors import RecmasError
from ..plugins.manager import default_registry
from ..topology.compile import CompiledTopology
from ..topology.render import FORMATS
from ..topology.render import render as render_file
from ..topology.schedule import Pass, Schedule
from ..topology.spec import TASK_TYPES, topology_json_schema
from . import app, console

__all__ = ["list_topologies", "validate", "plan", "render", "schema"]

TopologyArg = Annotated[
    str,
    typer.Argument(
        metavar="TOPOLOGY",
        help="A built-in or plugin topology name (see 'recmas topologies') or a path to a topology JSON file.",
        show_default=False,
    ),
]


def _load(ref: str) -> CompiledTopology:
    """Resolve ``ref`` (a name or a file) and compile it against the installed plugins."""
    return default_registry().compile(ref)


def _print_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout, unstyled (safe to pipe)."""
    console.out(json.dumps(data, indent=2), highlight=False)


def _first_line(text: str) -> str:
    """The first line of ``text`` (empty when there is none)."""
    return text.strip().splitlines()[0] if text.strip() else ""


@app.command("topologies")
def list_topologies(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list instead of a table.")] = False,
) -> None:
    """List the registered topologies (built-in and from plugins) with a one-line description."""
    registry = default_registry()
    rows: list[dict[str, Any]] = []
    for name in sorted(registry.topologies):
        entry = registry.topologies[name]
        try:
            spec = entry.spec
            row = {"name": name, "agents": len(spec.agents), "rounds": spec.rounds, "output": spec.output,
                   "description": _first_line(spec.description), "plugin": entry.plugin}
        except RecmasError as err:
            row = {"name": name, "agents": None, "rounds": None, "output": None,
                   "description": f"invalid: {err.message}", "plugin": entry.plugin}
        rows.append(row)
    if as_json:
        _print_json(rows)
        return
    table = Table(title="Registered topologies", title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("agents", justify="right")
    table.add_column("description", overflow="fold")
    for row in rows:
        style = "red" if row["agents"] is None else None
        cells = [row["name"], str(row["agents"] or "-"), row["description"]]
        table.add_row(*(Text(cell) for cell in cells), style=style)
    console.print(table)


def _summary(compiled: CompiledTopology) -> str:
    """One-line summary of a validated topology."""
    spec = compiled.spec
    recursion = sum(e.recursion for e in spec.edges)
    media = sorted({e.medium for e in spec.edges})
    passes = compiled.schedule().passes
    return (
        f"{len(spec.agents)} agents ({', '.join(spec.agent_names)}), "
        f"{len(spec.edges)} edges ({len(spec.edges) - recursion} forward, {recursion} recursion"
        f"{'; ' + '/'.join(media) if media else ''}), {spec.rounds} rounds, {spec.latent_steps} latent steps, "
        f"output {spec.output}; {len(passes)} passes"
    )


_VALIDATE_HELP = (
    "Check a topology without loading any model: fields, agent names, edges, slots, roles, link types and "
    "their options, model references, tools, forward cycles and agents that cannot influence the output; "
    "every problem is reported at once. When links name weight files, their shapes are checked against the "
    "models' hidden sizes (read from the configs, no weights loaded).\n\n"
    "Prints OK and a short summary, or the problems, each naming its culprit and how to fix it (exit status 2)."
)


@app.command(help=_VALIDATE_HELP, short_help="Check a topology without loading models; print a summary.")
def validate(topology: TopologyArg) -> None:
    """Check a topology and print a one-line summary."""
    compiled = _load(topology)
    _check_weights(compiled)
    console.print(Text.assemble(("OK ", "bold green"), (compiled.spec.name, "bold"), f": {_summary(compiled)}"))


def _check_weights(compiled: CompiledTopology) -> None:
    """Check link weight shapes when links name weight files (this needs torch, so only then)."""
    spec = compiled.spec
    if not any(a.inner_link.weights_file for a in spec.agents) and not any(e.link.weights_file for e in spec.edges):
        return
    from ..runtime.links.build import check_link_weights
    from ..topology.catalog import resolve_model_source

    sources = compiled.catalog.model_sources
    hidden = {a.name: resolve_model_source(a.model, sources).hidden_size_of(a.model) for a in spec.agents}
    if any(size is None for size in hidden.values()):
        return  # a model source that cannot tell without loading: checked when the system is built
    check_link_weights(spec, hidden, compiled.base_dir, link_types=compiled.catalog.link_types)


def _inputs_text(p: Pass) -> str:
    """Which messages a pass receives, e.g. ``plan<-planner1, feedback<-solver1`` (text ones marked)."""
    return ", ".join(f"{i.slot}<-{i.source}{i.round}" + (" (text)" if i.medium == "text" else "")
                     for i in p.inputs) or "-"


def _schedule_table(schedule: Schedule, name: str) -> Table:
    """A rich table of ``schedule``: one row per pass, with its wave."""
    passes = schedule.passes
    counts = {a: sum(p.action == a for p in passes) for a in ("latent", "text", "latent+text", "decode")}
    caption = ", ".join(f"{n} {a}" for a, n in counts.items() if n)
    table = Table(title=f"{name}: {schedule.rounds} rounds, {len(schedule.waves)} waves, {len(passes)} passes",
                  title_justify="left", caption=caption, caption_justify="left")
    for column in ("wave", "agent", "round", "action", "inputs"):
        table.add_column(column, justify="right" if column in ("wave", "round") else "left",
                         no_wrap=column != "inputs", overflow="fold")
    styles = {"decode": "bold yellow", "text": "cyan", "latent+text": "cyan"}
    for i, wave in enumerate(schedule.waves, start=1):
        for j, p in enumerate(wave):
            table.add_row(str(i) if j == 0 else "", p.agent, str(p.round), p.action, _inputs_text(p),
                          style=styles.get(p.action), end_section=j == len(wave) - 1)
    return table


_PLAN_HELP = (
    "Show the unrolled schedule: which agent runs in which round and wave, and what it does.\n\n"
    "Actions: 'latent' (latent thoughts for a consumer), 'text' or 'latent+text' (a text message for a "
    "text-medium edge), 'decode' (the output agent's answer in the last round). Passes whose message "
    "nobody needs are pruned; the passes of one wave are independent and may run concurrently."
)


@app.command(help=_PLAN_HELP)
def plan(
    topology: TopologyArg,
    rounds: Annotated[
        int | None,
        typer.Option("--rounds", "-r", min=1, help="Recursion rounds R to unroll (default: the topology's)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the schedule as JSON records: wave, agent, round, action, the "
                           "inputs (edge, slot, source, round, medium) and the output edges.")
    ] = False,
    task: Annotated[
        str, typer.Option("--task", help="Show the run settings the topology has for this task type "
                          f"({', '.join(TASK_TYPES)}) or dataset name.")
    ] = "math",
) -> None:
    """Print the unrolled schedule as a table of waves (or JSON records)."""
    compiled = _load(topology)
    schedule = compiled.schedule(rounds)
    if as_json:
        _print_json(schedule.as_records())
        return
    console.print(_schedule_table(schedule, compiled.spec.name))
    console.print(Text(_settings_text(compiled, task), style="dim"), soft_wrap=False)


def _settings_text(compiled: CompiledTopology, task: str) -> str:
    """One line: the settings a run of ``task`` gets (latent steps, then the decoding the topology sets)."""
    spec = compiled.spec
    found = spec.settings_for(task) if task in TASK_TYPES else spec.settings.get(task)
    if found is None:
        return f"no settings for {task!r} in the topology: latent steps {spec.latent_steps} (its default)"
    values = found.model_dump(exclude_none=True)
    m = values.pop("latent_steps", spec.latent_steps)
    words = [f"{k.replace('_', ' ')} {v}" for k, v in values.items()]
    return f"settings for {task}: latent steps {m}" + (f", {', '.join(words)}" if words else "") + \
        " (options given to run win)"


_RENDER_HELP = (
    "Draw a topology: agents labelled with name, role and model (the output agent with a double border), "
    "solid forward edges, dashed next-round (recursion) edges, each labelled with slot, link type and medium.\n\n"
    "The extension of --output picks the format: .dot (Graphviz source) and .mmd (Mermaid) need nothing else; "
    ".svg and .png need the Graphviz 'dot' program."
)


@app.command(help=_RENDER_HELP, short_help="Draw a topology as .dot, .svg, .png or .mmd (Mermaid).")
def render(
    topology: TopologyArg,
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help=f"File to write; the extension picks the format: {', '.join(FORMATS)}.",
                     show_default=False),
    ],
) -> None:
    """Write a diagram of a topology to a file."""
    compiled = _load(topology)
    path = render_file(compiled.spec, output)
    console.print(Text(f"wrote {path}"))


@app.command()
def schema(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the schema to this file instead of stdout.", show_default=False),
    ] = None,
) -> None:
    """Print the JSON Schema of the topology format (for editors and validators)."""
    data = topology_json_schema()
    if output is None:
        _print_json(data)
        return
    try:
        output.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    except OSError as err:
        raise RecmasError(f"cannot write the schema: {err.strerror or err}", culprit=str(output),
                          hint="choose a writable path") from None
    console.print(Text(f"wrote {output}"))
