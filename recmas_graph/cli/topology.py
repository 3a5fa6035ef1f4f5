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
    "nobody needs are pruned; the passes of one wave are independent and may run concurrently.\n\n"
    "With --placement (or any of --gpus, --gpu-memory, --models, --model, --device, --batch-size, --dtype) "
    "it also shows where each agent would go and the estimated memory per device, from the model configs "
    "and checkpoint headers: no weights are loaded. --gpus and --gpu-memory plan for another machine."
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
                           "inputs (edge, slot, source, round, medium) and the output edges; with placement "
                           "options, an object {\"schedule\": [...], \"placement\": {...}}.")
    ] = False,
    task: Annotated[
        str, typer.Option("--task", help="Show the run settings the topology has for this task type "
                          f"({', '.join(TASK_TYPES)}) or dataset name.")
    ] = "math",
    placement: Annotated[
        str | None, typer.Option("--placement", help="Show the placement of this strategy: single, round-robin "
                                 "(the default), by-size or auto.", show_default=False)
    ] = None,
    gpus: Annotated[
        int | None, typer.Option("--gpus", min=0, help="Plan for this many GPUs (default: the visible ones).",
                                 show_default=False)
    ] = None,
    gpu_memory: Annotated[
        float | None, typer.Option("--gpu-memory", min=0, help="Memory of each GPU in GiB (default: the free "
                                   "memory CUDA reports, for --placement auto).", show_default=False)
    ] = None,
    models: Annotated[
        str | None, typer.Option("--models", help="'tiny': every agent gets the tiny random model of its own "
                                 "family.", show_default=False)
    ] = None,
    model: Annotated[
        list[str] | None, typer.Option("--model", help="Override one agent's model: AGENT=REF (repeatable).",
                                       show_default=False)
    ] = None,
    device: Annotated[
        list[str] | None, typer.Option("--device", help="'cpu', 'cuda:1', ... for all, or AGENT=DEVICE "
                                       "(repeatable); explicit choices win over the strategy.", show_default=False)
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Questions per batch, for the KV cache allowance.")
    ] = 1,
    dtype: Annotated[
        str | None, typer.Option("--dtype", help="float32, float16 or bfloat16 for agents whose spec sets none "
                                 "(default: automatic, float32 on CPU, bfloat16 on a GPU).", show_default=False)
    ] = None,
) -> None:
    """Print the unrolled schedule as a table of waves (or JSON records), and the placement when asked."""
    compiled = _load(topology)
    schedule = compiled.schedule(rounds)
    wanted = placement is not None or any(v is not None for v in (gpus, gpu_memory, models, dtype)) or bool(
        model or device) or batch_size != 1
    found = _placement(compiled, task=task, placement=placement, gpus=gpus, gpu_memory=gpu_memory, models=models,
                       model=model or [], device=device or [], batch_size=batch_size, dtype=dtype) if wanted else None
    if as_json:
        records = schedule.as_records()
        _print_json(records if found is None else {"schedule": records, "placement": found.as_dict()})
        return
    console.print(_schedule_table(schedule, compiled.spec.name))
    console.print(Text(_settings_text(compiled, task), style="dim"), soft_wrap=False)
    if found is not None:
        console.print(_placement_table(found))
        console.print(_devices_table(found))
        for warning in found.warnings:
            console.print(Text(f"warning: {warning}", style="yellow"))


def _placement(compiled: CompiledTopology, *, task: str, placement: str | None, gpus: int | None,
               gpu_memory: float | None, models: str | None, model: list[str], device: list[str], batch_size: int,
               dtype: str | None) -> Any:
    """The :class:`~recmas_graph.runtime.memory.placement.PlacementPlan` of the plan options (no weights loaded)."""
    from ..runtime.memory.placement import plan_placement
    from ..runtime.memory.sizing import GiB, estimate_tokens
    from ..runtime.system import with_models
    from .runtime import parse_assignments

    compiled = with_models(compiled, models, parse_assignments(model, "--model"))
    where: str | dict[str, str] | None = None
    if len(device) == 1 and "=" not in device[0]:
        where = device[0]
    elif device:
        where = parse_assignments(device, "--device")
    memory = None if gpu_memory is None else int(gpu_memory * GiB)
    return plan_placement(compiled.spec, where, placement=placement, gpus=gpus, gpu_memory=memory,
                          sources=compiled.catalog.model_sources, dtype=dtype, batch_size=batch_size,
                          tokens=estimate_tokens(compiled.spec, task if task in TASK_TYPES else "math"))


def _placement_table(found: Any) -> Table:
    """One row per agent: model, device (how it was chosen), dtype, weights and KV allowance."""
    from ..runtime.memory.sizing import format_bytes

    memory = found.memory
    table = Table(title=f"placement ({found.strategy}): batch {memory.batch_size}, {memory.tokens} tokens per pass",
                  title_justify="left", caption="weights shared by agents on one device are counted once; "
                  "KV: 2 x layers x kv heads x head dim x tokens x batch x dtype bytes", caption_justify="left")
    for column in ("agent", "model", "device", "dtype", "weights", "KV cache"):
        table.add_column(column, justify="right" if column in ("weights", "KV cache") else "left", no_wrap=True)
    for row in memory.agents.values():
        how = " (explicit)" if row.agent in found.explicit else ""
        weights = "shared" if row.shared else format_bytes(row.weight_bytes)
        table.add_row(Text(row.agent), Text(row.model), Text(row.device + how), row.dtype,
                      weights, format_bytes(row.kv_bytes))
    return table


def _devices_table(found: Any) -> Table:
    """One row per device: the estimated total and the memory it has (when known)."""
    from ..runtime.memory.sizing import format_bytes

    table = Table(title="estimated memory per device", title_justify="left")
    for column in ("device", "estimated", "memory"):
        table.add_column(column, justify="left" if column == "device" else "right", no_wrap=True)
    for dev, total in found.device_bytes.items():
        cap = found.capacity.get(dev)
        style = "bold red" if cap is not None and total > cap else None
        table.add_row(Text(dev), format_bytes(total), "-" if cap is None else format_bytes(cap), style=style)
    return table


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
