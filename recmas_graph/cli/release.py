"""``recmas import-release``: write a runnable topology from local copies of the published checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from ..release import RELEASE_TASKS, STYLES
from . import app, console

__all__ = ["import_release_command", "export_release_command"]

_HELP = f"""Write a topology JSON that runs a published RecursiveMAS system from local copies of its repos.

STYLE is one of: {', '.join(STYLES)}.

--root holds the downloaded repos: the agent folders and the outer-links folder, named as on the Hub (e.g. Sequential-Light-Planner-Qwen3-1.7B and
Sequential-Light-Outerlinks); a Hugging Face cache folder works too.

The written file points at the local models and link weights by absolute path: run it with
`recmas run FILE -q ...`, render it, or edit rounds / latent_steps / edges. See
docs/published-checkpoints.md.
"""


@app.command("import-release", help=_HELP, short_help="Turn downloaded RecursiveMAS checkpoints into a topology.")
def import_release_command(
    style: Annotated[str, typer.Argument(metavar="STYLE", help=f"One of: {', '.join(STYLES)}.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Topology JSON file to write.", show_default=False)],
    root: Annotated[Optional[Path], typer.Option(
        "--root", help="Folder holding the downloaded agent folders and the *-Outerlinks folder.")] = None,
    task: Annotated[str, typer.Option(
        "--task", help=f"Which trained links to use: {' or '.join(RELEASE_TASKS)} (mixture and deliberation have "
                       "one set for all tasks; use math links for choice / reasoning prompts).")] = "math",
    agent: Annotated[Optional[list[str]], typer.Option(
        "--agent", help="AGENT=FOLDER: an agent's folder, overriding the one found under --root (repeatable).")] = None,
    outerlinks: Annotated[Optional[Path], typer.Option(
        "--outerlinks", help="The *-Outerlinks folder, overriding the one found under --root.")] = None,
    views_dir: Annotated[Optional[Path], typer.Option(
        "--views-dir", help="Where to keep the PEFT-proof model views (default: <recmas cache>/release-views).",
    )] = None,
    rounds: Annotated[Optional[int], typer.Option(
        "--rounds", min=1, help="Recursion rounds to write (default 3).")] = None,
    latent_steps: Annotated[Optional[int], typer.Option(
        "--latent-steps", min=0, help="Latent steps to write (default: the style's; 16 for --task code).")] = None,
    share_models: Annotated[bool, typer.Option(
        "--share-models/--no-share-models",
        help="Load agents whose folders hold the same model once (the deliberation agents).")] = True,
) -> None:
    """Import a released style into a topology JSON file."""
    from ..release import ensure_output_path, release_topology, resolve_release
    from ..topology.spec import dump_topology
    from .runtime import parse_assignments

    overrides = parse_assignments(agent or [], "--agent")
    with console.status("checking the release..."):
        resolved = resolve_release(style, root, task, agents=overrides, outerlinks=outerlinks)
        spec = release_topology(resolved, views_dir=views_dir, share_models=share_models, rounds=rounds,
                                latent_steps=latent_steps)
    output = ensure_output_path(output)
    dump_topology(spec, output)

    agents = Table(title=f"{resolved.style.title} release, task {resolved.task}", show_lines=False)
    for col in ("agent", "folder", "hidden", "inner link"):
        agents.add_column(col, justify="right" if col == "hidden" else "left", overflow="fold")
    for name, ra in resolved.agents.items():
        agents.add_row(name, ra.folder.name, str(ra.hidden_size), ra.inner_weights.name)
    parents = {ra.folder.parent for ra in resolved.agents.values()} | {resolved.outer_folder.parent}
    if len(parents) == 1:
        agents.caption = f"folders under {parents.pop()}"
    edges = Table(show_lines=False, caption=f"outer links in {resolved.outer_folder.name}")
    widest = max((len(e.weights.name) for e in resolved.edges), default=10)
    for col in ("edge", "key", "outer link", "sizes"):
        edges.add_column(col, overflow="fold", min_width=widest if col == "outer link" else None)
    for edge in resolved.edges:
        edges.add_row(edge.label, edge.legacy_key, edge.weights.name, f"{edge.in_dim} -> {edge.out_dim}")
    console.print(agents)
    console.print(edges)
    shared = {a.model for a in spec.agents}
    if len(shared) < len(spec.agents):
        note = f"{len(spec.agents)} agents share {len(shared)} model(s); each is loaded once."
        console.print(Text(note, style="dim"))
    console.print(Text.assemble(("wrote ", "bold green"), str(output), f" ({spec.rounds} rounds, "
                                f"{spec.latent_steps} latent steps)"))
    console.print(Text(f"run it: recmas run {output} -q \"What is 7 * 8?\"", style="dim"), soft_wrap=True)


@app.command("export-release", short_help="Write a system's links in the published layout (import-release reads it).")
def export_release_command(
    topology: Annotated[str, typer.Argument(metavar="TOPOLOGY", help="A topology name or JSON file, e.g. the "
                                            "topology.json of a training or calibration folder.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the agent folders and the *-Outerlinks "
                                      "folder.", show_default=False)],
    style: Annotated[Optional[str], typer.Option("--style", help=f"The released style it follows ({', '.join(STYLES)});"
                                                 " default: the one with the same agents and edges.")] = None,
    task: Annotated[str, typer.Option("--task", help="The task the links are filed under (sequential and "
                                      "distillation styles).")] = "math",
    models: Annotated[Optional[str], typer.Option("--models", help="'tiny': every agent gets the tiny random model "
                                                  "of its family.")] = None,
    model: Annotated[Optional[list[str]], typer.Option("--model", help="AGENT=REF (repeatable).")] = None,
) -> None:
    """Write the models and links of a topology in the published RecursiveMAS layout.

    Each agent gets a folder named as the style's Hub repo (model, tokenizer, adapter(TASK).pt or
    adapter.pt, its configs) and the outer links a *-Outerlinks folder with outerlink_config.json,
    so `recmas import-release STYLE --root OUT` and the official code load them.
    """
    from ..plugins.manager import default_registry
    from ..release import export_release, matching_style
    from ..runtime.system import check_models
    from .runtime import build_status, parse_assignments

    check_models(models)
    compiled = default_registry().compile(topology)
    with console.status("loading models...") as status:
        system = compiled.build(models=models, model=parse_assignments(model or [], "--model"),
                                on_model=build_status(status))
    with console.status("writing..."):
        folder = export_release(system, out, style=style, task=task)
    names = sorted(p.name for p in folder.iterdir() if p.is_dir())
    console.print(Text.assemble(("wrote ", "bold green"), str(folder), f": {', '.join(names)}"), soft_wrap=True)
    guess = style or matching_style(system.spec).name
    console.print(Text(f"import it: recmas import-release {guess} --root {folder} --task {task} -o topology.json",
                       style="dim"), soft_wrap=True)
