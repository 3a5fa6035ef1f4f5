"""``recmas trace summary`` and ``recmas trace plot``: where a run's time went, from its ``--trace`` file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from . import app, console

__all__ = ["trace_summary", "trace_plot"]

trace_app = typer.Typer(name="trace", no_args_is_help=True,
                        help="Read a trace written by recmas run --trace: totals per agent and action, a timeline plot.")
app.add_typer(trace_app, name="trace")

TraceArg = Annotated[Path, typer.Argument(metavar="TRACE.jsonl", help="A file written by recmas run --trace.",
                                          show_default=False)]


@trace_app.command("summary")
def trace_summary(trace: TraceArg) -> None:
    """Totals per agent and action: passes, time and its share, tokens, the largest per-pass peak memory."""
    from ..eval.traces import read_trace, summarise

    passes = read_trace(trace)
    totals = summarise(passes)
    table = Table(title=f"{trace.name}: {len(passes)} passes in {len({p.batch for p in passes})} batch(es)",
                  title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1), caption_justify="left")
    for col in ("agent", "action", "passes", "wall s", "share", "prompt (reused)", "latent", "gen", "peak MB"):
        # names, headers and figures whole in 80 columns: two-word headers take two lines
        table.add_column(col.replace(" ", "\n"), justify="left" if col in ("agent", "action") else "right",
                         no_wrap=True)
    for t in totals:
        table.add_row(t.agent, t.action, str(t.passes), f"{t.wall_s:.2f}", f"{100 * t.share:.1f}%",
                      f"{t.prompt_tokens} ({t.reused_tokens})", str(t.latent_steps), str(t.generated_tokens),
                      f"{t.peak_mem_bytes / 2**20:.0f}")
    wall = sum(t.wall_s for t in totals)
    end = max(p.at_s + p.wall_s for p in passes)
    table.caption = (f"passes total {wall:.2f} s over {end:.2f} s of runs (passes on different GPUs overlap); "
                     "(reused): of the prompt positions, those taken from an earlier pass's cached prefix; "
                     "peak MB: the device's peak per pass on GPU, the increase during the pass on CPU")
    console.print(table)


@trace_app.command("plot")
def trace_plot(
    trace: TraceArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Image to write (.png, .svg or .pdf).",
                                      show_default=False)],
) -> None:
    """Draw the passes on a time axis, one lane per device and agent, coloured by action."""
    from ..eval.traces import plot_timeline, read_trace

    path = plot_timeline(read_trace(trace), out, title=trace.name)
    console.print(Text.assemble(("wrote ", "bold green"), str(path)))
