"""``recmas experiment run`` and ``recmas experiment schema``: fair comparisons of styles from one file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from . import app, console, err_console
from ._output import write_schema
from .options import BUILD_FLAGS, device_option, with_flags

__all__ = ["experiment_app", "run_command", "schema_command", "plan_lines", "result_table"]

experiment_app = typer.Typer(name="experiment", no_args_is_help=True,
                             help="Compare styles fairly: an experiment file's systems trained by one recipe, "
                                  "evaluated over seeds, as resumable content-addressed stages.")
app.add_typer(experiment_app, name="experiment")


def _build(values: dict[str, Any]) -> dict[str, Any]:
    from ..runtime.system import check_models

    check_models(values["models"])
    return {"models": values["models"], "device": device_option(values["device"] or []), "dtype": values["dtype"]}


#: The build flags an experiment takes (declared once, in cli/options.py); they are part of every stage's key.
with_experiment_build = with_flags({k: BUILD_FLAGS[k] for k in ("models", "device", "dtype")}, _build, "build")


def _line(text: str, style: str | None = None) -> None:
    console.print(Text(text, style=style or ""), soft_wrap=True, highlight=False)
    sys.stdout.flush()  # a line per stage, also when stdout is a file or a pipe


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


@experiment_app.command("run")
@with_experiment_build
def run_command(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The experiment JSON file (docs/experiments.md).",
                                         show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder of the stages and the report (rerun to resume).",
                                      show_default=False)],
    build: dict[str, Any],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan (each stage cached or to run) and a "
                                          "rough cost estimate; run nothing.")] = False,
    backend: Annotated[str, typer.Option("--backend", metavar="local|ray", help="'local': the stages one after "
                                         "another here; 'ray': independent stages as Ray tasks in parallel "
                                         "(pip install 'recmas-graph\\[ray]').")] = "local",
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="With --backend ray: join this Ray "
                                                       "cluster ('auto', HOST:6379); default: a local instance.")]
    = None,
) -> None:
    """Run an experiment: calibrate, train (inner, outer) and evaluate every system per seed, then report."""
    from ..experiment.plan import estimate_seconds
    from ..experiment.run import run_experiment
    from ..plugins.manager import default_registry

    def report(event: Any) -> None:
        if event.event == "plan":
            _line(f"{event.total + event.cached} stages: {event.cached} finished (reused), {event.total} to run")
        elif event.event == "start":
            _line(f"[{event.done + 1}/{event.total}] start  {event.stage.describe()} ({event.stage.name})")
        elif event.event == "within":
            _line(f"[{event.done + 1}/{event.total}]        {event.stage.describe()}: {event.text} "
                  f"({event.wall_s:.0f} s)", style="dim")
        elif event.event == "finish":
            _line(f"[{event.done}/{event.total}] done   {event.stage.describe()} ({event.stage.name}) in "
                  f"{event.wall_s:.1f} s", style="green")

    try:
        result = run_experiment(file, out=out, registry=default_registry(), dry_run=dry_run, backend=backend,
                                ray_address=ray_address, progress=report, **build)
    except KeyboardInterrupt:
        err_console.print(Text(f"interrupted: finished stages stay in {out / 'stages'}; run the same command again "
                               "to resume", style="bold yellow"), soft_wrap=True)
        raise typer.Exit(130) from None
    if dry_run:
        for line in plan_lines(result.plan, result.statuses, estimate_seconds):
            _line(line)
        console.print(Text(f"estimated {_minutes(result.estimate_s)} for the stages to run (a rough model: "
                           "packaged ~135-270M models on 2 CPU cores; tiny models and GPUs are far faster)"),
                      soft_wrap=True)
        return
    console.print(result_table(result.report))
    console.print(Text("wrote " + ", ".join(str(p) for p in result.files)), soft_wrap=True)


def plan_lines(plan: Any, statuses: dict[str, str], estimate: Any) -> list[str]:
    """The plan, a line per stage: cached, resumes (a killed run's work) or to run; its folder; its rough cost."""
    words = {"done": "cached ", "partial": "resumes", "todo": "to run "}
    width = max((len(s.describe()) for s in plan.stages), default=0)
    return [f"  {words[statuses[s.key]]}  {s.describe():<{width}}  {s.name:<26} "
            + ("" if statuses[s.key] == "done" else f"~{_minutes(estimate(s))}") for s in plan.stages]


def _pct(mean: Any, std: Any) -> str:
    if mean is None:
        return "-"
    return f"{100 * mean:.1f}" + (f"±{100 * std:.1f}" if std is not None else "")


def result_table(report: dict[str, Any]) -> Table:
    """The report's main table: accuracy (mean ± sd over seeds), acc_norm, p against the reference, cost."""
    table = Table(title=f"{report['name']}: {len(report['seeds'])} seed(s), reference {report['reference']}",
                  title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
    tokens = any(r["tokens_per_question"] for r in report["rows"])  # none when every row scored by likelihood
    for col in ("system", "acc %", "p", "norm %", "NLL", *(("tok/q",) if tokens else ()), "s/q"):
        table.add_column(col, justify="left" if col == "system" else "right", no_wrap=col != "system")
    for r in report["rows"]:
        paired = r.get("paired") or {}
        nll = r.get("answer_nll_mean")
        table.add_row(r["label"], _pct(r["accuracy_mean"], r["accuracy_std"]),
                      "-" if not paired else f"{paired['p_value']:.3g}", _pct(r["acc_norm_mean"], r["acc_norm_std"]),
                      "-" if nll is None else f"{nll:.2f}",
                      *((f"{r['tokens_per_question']:.0f}",) if tokens else ()),
                      f"{(r['seconds_per_question'] or 0):.2f}")
    table.caption = ("±: sd over seeds; p: McNemar's exact test against the reference, pooled over seeds; NLL: "
                     "answer NLL per token; more in report.md")
    table.caption_justify = "left"
    return table


@experiment_app.command("schema")
def schema_command(
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the schema to this file instead "
                                                   "of stdout.", show_default=False)] = None,
) -> None:
    """Print the JSON Schema of the experiment file (for editors and validators)."""
    from ..experiment.spec import experiment_json_schema

    write_schema(console, experiment_json_schema(), output)
