"""``recmas calibrate``: fit a topology's links in closed form on a corpus and write a runnable topology."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ..errors import RunError
from . import app, console, err_console
from .runtime import _device_option, parse_assignments

__all__ = ["calibrate_command"]


@app.command("calibrate")
def calibrate_command(
    topology: Annotated[str, typer.Argument(metavar="TOPOLOGY", help="A registered topology name or a topology JSON file.",
                                            show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the links and topology.json.", show_default=False)],
    corpus: Annotated[Optional[Path], typer.Option("--corpus", help="Texts: a .txt file (one per line) or .jsonl "
                                                   "(text, or question/plan/refined_plan/answer).")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d", help="Or a dataset's samples (question and "
                                                   "solution), e.g. gsm8k.")] = None,
    split: Annotated[Optional[str], typer.Option("--split", help="Another split of --dataset.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=2, help="Use at most this many texts.")] = 64,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=2, help="Tokens per text.")] = 256,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Texts per forward pass.")] = 8,
    skip_trained: Annotated[bool, typer.Option("--skip-trained", help="Leave links that already have weights as "
                                               "they are.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the held-out split and random projections.")] = 0,
    models: Annotated[Optional[str], typer.Option("--models", help="'tiny': every agent gets the tiny random model "
                                                  "of its family.")] = None,
    model: Annotated[Optional[list[str]], typer.Option("--model", help="AGENT=REF (repeatable).")] = None,
    device: Annotated[Optional[list[str]], typer.Option("--device", help="'cpu', 'cuda', ... or AGENT=DEVICE.")] = None,
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="float32, float16 or bfloat16.")] = None,
) -> None:
    """Fit every link in closed form (ridge regression) on a corpus; write the links and a runnable topology."""
    from ..plugins.manager import default_registry
    from ..train.calibration import calibrate
    from ..train.corpus import corpus_from_dataset, corpus_from_file

    if (corpus is None) == (dataset is None):
        raise RunError("give the texts to calibrate on: --corpus FILE or --dataset NAME (one of them)",
                       culprit="recmas calibrate", hint="e.g. --dataset gsm8k")
    if models not in (None, "tiny"):
        raise RunError(f"unknown --models value {models!r}", culprit="--models", hint="use --models tiny, or --model AGENT=REF")
    registry = default_registry()
    texts = (corpus_from_file(corpus, limit=limit) if corpus is not None
             else corpus_from_dataset(str(dataset), registry, limit=limit, split=split))
    compiled = registry.compile(topology)
    with console.status("loading models...") as status:
        system = compiled.build(models=models, model=parse_assignments(model or [], "--model"),
                                device=_device_option(device or []), dtype=dtype, seed=seed,
                                on_model=lambda name, ref: status.update(f"loading {name} ({ref})..."))
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err_console, transient=True) as progress:
        bar = progress.add_task("", total=None)

        def report(stage: str, done: int, total: int) -> None:
            progress.update(bar, description=stage, completed=done, total=total)

        try:
            result = calibrate(system, texts, out=out, seed=seed, max_tokens=max_tokens, batch_size=batch_size,
                               skip_trained=skip_trained, progress=report)
        except KeyboardInterrupt:
            err_console.print(Text("interrupted: nothing was written", style="bold yellow"))
            raise typer.Exit(130) from None
    console.print(_table(result))
    console.print(Text(f"wrote {result.topology} (run it: recmas run {result.topology} -q ...)"), soft_wrap=True)


def _table(result: Any) -> Table:
    table = Table(title=f"links calibrated on {result.texts} texts (held-out link loss)", title_justify="left")
    for col, justify in (("link", "left"), ("pairs", "right"), ("before", "right"), ("calibrated", "right"),
                         ("ridge", "right")):
        table.add_column(col, justify=justify)
    for fit in result.links:
        name = f"{fit.kind} {fit.name}"
        table.add_row(name, str(fit.pairs), f"{fit.loss_before:.3f}", f"{fit.loss_after:.3f}", f"{fit.ridge:g}")
    return table
