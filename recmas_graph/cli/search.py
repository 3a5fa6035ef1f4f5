"""``recmas search`` and ``recmas search-schema``: the accuracy-cost front of a topology's variants."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from ..runtime.options import RunOptions
from . import app, console, err_console
from ._output import write_schema
from ._progress import progress as progress_for
from .evaluate import DatasetOpt, _options, with_eval_options
from .options import BuildArgs, with_build_options, with_run_options

__all__ = ["search_command", "search_schema", "front_table", "heldout_table"]


def _space(space: str, registry: Any, rounds: Optional[str], latent_steps: Optional[str], media: bool) -> Any:
    """SPACE as a search-space file, or a topology with the ``--vary-*`` shortcuts."""
    from ..search.space import SearchError, read_search_space, shortcut_space

    path = Path(space)
    shortcuts = rounds is not None or latent_steps is not None or media
    if path.suffix == ".json" and path.is_file():
        try:
            is_space = "base" in json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError):
            is_space = False
        if is_space:
            if shortcuts:
                raise SearchError("SPACE is a search-space file; the --vary-* shortcuts take a topology",
                                  culprit="--vary-*", hint="write the ranges into the file instead")
            return read_search_space(path)
    if not shortcuts:
        raise SearchError("SPACE is a topology, not a search-space file: say what to search", culprit=space,
                          hint="add --vary-rounds 1-3, --vary-latent-steps 4,8,16,32 and/or --vary-media, or give a "
                               "search-space JSON file (docs/search.md)")
    return shortcut_space(space, registry, rounds=rounds, latent_steps=latent_steps, media=media)


@app.command("search")
@with_eval_options
@with_build_options
@with_run_options
def search_command(
    space: Annotated[str, typer.Argument(metavar="SPACE", help="A search-space JSON file, or a topology (name or "
                                         "file) with --vary-* shortcuts.", show_default=False)],
    dataset: DatasetOpt,
    out: Annotated[Path, typer.Option("--out", help="Folder of the study (study.db), the evaluations and the front "
                                      "(rerun to resume).", show_default=False)],
    options: RunOptions,
    build: BuildArgs,
    task: Optional[str],
    seed: int,
    evaluation: dict[str, Any],
    trials: Annotated[int, typer.Option("--trials", min=1, help="Trials in the study (resumed ones count).")] = 20,
    timeout: Annotated[Optional[float], typer.Option("--timeout", help="Start no trial after this many seconds.")]
    = None,
    heldout: Annotated[Optional[int], typer.Option("--heldout", min=0, help="Questions after --limit for the final "
                                                   "check of the front against the base (default: --limit; 0: "
                                                   "none).")] = None,
    min_questions: Annotated[Optional[int], typer.Option("--min-questions", min=1, help="Questions of the first "
                                                         "rung (default: --limit / eta^2, at least 4).")] = None,
    eta: Annotated[int, typer.Option("--eta", min=2, help="Successive halving: each rung has eta times the "
                                     "questions, and a trial goes on when in the best 1/eta.")] = 3,
    cost: Annotated[str, typer.Option("--cost", metavar="tokens|seconds", help="Cost objective: generated tokens + "
                                      "latent steps per question, or seconds per question.")] = "tokens",
    sampler: Annotated[str, typer.Option("--sampler", metavar="tpe|nsga2|random", help="Optuna's multi-objective "
                                         "sampler.")] = "tpe",
    vary_rounds: Annotated[Optional[str], typer.Option("--vary-rounds", help="Shortcut: rounds to search, A-B or "
                                                       "A,B,C (SPACE is then a topology).")] = None,
    vary_latent_steps: Annotated[Optional[str], typer.Option("--vary-latent-steps", help="Shortcut: latent steps "
                                                             "to search, A-B or A,B,C.")] = None,
    vary_media: Annotated[bool, typer.Option("--vary-media", help="Shortcut: every edge latent or text.")] = False,
) -> None:
    """Search a topology's variants for the accuracy-cost Pareto front (Optuna; resumable)."""
    from ..plugins.manager import default_registry
    from ..search.run import search

    registry = default_registry()
    asked = _options(options, build, evaluation, task=task, seed=seed)
    resolved = _space(space, registry, vary_rounds, vary_latent_steps, vary_media)
    limit = asked.pop("limit") or 30
    for key in ("field",):
        asked.pop(key, None)
    state: dict[str, Any] = {"done": 0}
    try:
        with progress_for(err_console, note=True) as progress:
            bar: Any = progress.add_task("search", total=trials, note="")

            def report(event: Any) -> None:
                state["done"] = event.done
                if event.stage == "eval" and event.eval is not None:
                    e = event.eval
                    note = e.stage if e.stage else f"{e.done}/{e.total} questions"
                    progress.update(bar, note=note)
                    return
                if event.stage in ("trial", "heldout"):
                    progress.update(bar, description=event.text, completed=event.done, note="")
                elif event.stage in ("complete", "stopped"):
                    progress.update(bar, completed=event.done)
                elif event.stage in ("resumed", "exhausted", "timeout"):
                    err_console.print(Text(event.text, style="yellow"), soft_wrap=True)

            result = search(resolved, dataset, out=out, registry=registry, trials=trials, timeout=timeout,
                            limit=limit, heldout=heldout, min_questions=min_questions, eta=eta, cost=cost,
                            sampler=sampler, progress=report, **asked)
    except KeyboardInterrupt:
        err_console.print(Text(f"interrupted: {state['done']} trials are stored in {out / 'study.db'}; run the same "
                               "command again to resume", style="bold yellow"), soft_wrap=True)
        raise typer.Exit(130) from None
    finished = sum(1 for r in result.trials if r["state"] in ("COMPLETE", "PRUNED"))
    console.print(Text(f"{finished} trials ({result.ran} now), {sum(1 for r in result.trials if r['state'] == 'PRUNED')}"
                       f" stopped early; {len(result.front)} on the front"), soft_wrap=True)
    console.print(front_table(result.front, cost))
    if result.heldout:
        console.print(heldout_table(result.heldout, cost, {r["name"]: f"trial {r['trial']}" for r in result.front}))
    written = [out / "front.csv", out / "front.json", out / "front", out / "trials.csv", out / "search.json"]
    written += [result.plot] if result.plot else []
    written += [out / "heldout.csv"] if result.heldout else []
    console.print(Text("wrote " + ", ".join(str(p) for p in written) + f"; the study: sqlite:///{out / 'study.db'}"),
                  soft_wrap=True)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def front_table(front: list[dict[str, Any]], cost: str) -> Table:
    """The front, cheapest first: trial, variant, accuracy and cost on the search questions, and the
    held-out accuracy with McNemar's p against the base when re-evaluated."""
    table = Table(title="Pareto front (search questions)", title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
    checked = any("heldout_accuracy" in r for r in front)
    for col in ("trial", "variant", "acc %", cost, "n") + (("held-out %", "p vs base") if checked else ()):
        table.add_column(col, justify="left" if col == "variant" else "right", no_wrap=col != "variant")
    for r in front:
        cells = [str(r["trial"]), str(r["label"]), _pct(r["accuracy"]), f"{r['cost']:.2f}", str(r["n"])]
        if checked:
            p = r.get("heldout_p")
            cells += [_pct(r.get("heldout_accuracy")), "-" if p is None else f"{p:.3f}"]
        table.add_row(*cells)
    table.caption = "each member: front/<variant>.json (a runnable topology)"
    table.caption_justify = "left"
    return table


def heldout_table(rows: list[dict[str, Any]], cost: str, names: dict[str, str] | None = None) -> Table:
    """The held-out re-evaluation: the base first, then each front member (``names``: system -> a short
    name, e.g. ``trial 4``) with its paired test against the base."""
    n = rows[0]["n"] if rows else 0
    table = Table(title=f"held-out check ({n} questions the search never saw)", title_justify="left",
                  box=box.SIMPLE_HEAD, padding=(0, 1))
    for col in ("system", "acc %", "95% CI", cost, "+/-", "p"):
        table.add_column(col, justify="left" if col == "system" else "right", no_wrap=True)
    for r in rows:
        name = "base" if r["label"] == "base" else (names or {}).get(r["system"], r["system"])
        table.add_row(name, _pct(r["accuracy"]), f"{_pct(r['ci_low'])}-{_pct(r['ci_high'])}", f"{r['cost']:.2f}",
                      "-" if r["only_this"] is None else f"{r['only_this']}/{r['only_base']}",
                      "-" if r["p_value"] is None else f"{r['p_value']:.3f}")
    table.caption = ("+/-: questions only it / only the base answered right; p: McNemar's exact test against the "
                     "base; folders in heldout/")
    table.caption_justify = "left"
    return table


@app.command("search-schema")
def search_schema(
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the schema to this file instead "
                                                   "of stdout.", show_default=False)] = None,
) -> None:
    """Print the JSON Schema of the search-space format (for editors and validators)."""
    from ..search.space import search_space_json_schema

    write_schema(console, search_space_json_schema(), output)
