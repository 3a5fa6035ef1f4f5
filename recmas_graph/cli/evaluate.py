"""``recmas eval`` and ``recmas compare``: score systems on a dataset, compare them with their baselines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ..errors import RunError
from ..topology.spec import TASK_TYPES
from . import app, console, err_console
from .runtime import (BackendOpt, LowMemoryOpt, PlacementOpt, RayAddressOpt, WorkersOpt, _device_option, check_backend,
                      parse_assignments)

__all__ = ["eval_command", "compare_command", "compare_tables"]

DatasetOpt = Annotated[str, typer.Option("--dataset", "-d", help="A packaged dataset (recmas assets list), "
                                         "mmlu:SUBJECT, jsonl:PATH or a .jsonl path, or hf:NAME[:CONFIG].",
                                         show_default=False)]
OutOpt = Annotated[Path, typer.Option("--out", help="Folder for the records and summaries (rerun to resume).",
                                      show_default=False)]
BucketOpt = Annotated[bool, typer.Option("--bucket/--no-bucket",
                                         help="Batch questions of similar length together, longest first (less "
                                              "padding); the records are written back in dataset order.")]


def _options(limit: Optional[int], split: Optional[str], shuffle: bool, seed: int, field: Optional[list[str]],
             task: Optional[str], batch_size: int, overwrite: bool, retry: Optional[bool], metric: Optional[str],
             rounds: Optional[int], latent_steps: Optional[int], greedy: bool, temperature: Optional[float],
             top_p: Optional[float], top_k: Optional[int], max_new_tokens: Optional[int],
             text_message_tokens: int, models: Optional[str], model: Optional[list[str]], device: Optional[list[str]],
             dtype: Optional[str], backend: str = "local", ray_address: Optional[str] = None,
             workers: Optional[int] = None, low_memory: Optional[bool] = None,
             placement: Optional[str] = None, bucket: bool = True) -> dict[str, Any]:
    if task is not None and task not in TASK_TYPES:
        raise RunError(f"unknown task type {task!r}", culprit="--task", hint=f"use one of {', '.join(TASK_TYPES)}")
    if models not in (None, "tiny"):
        raise RunError(f"unknown --models value {models!r}", culprit="--models", hint="use --models tiny, or --model AGENT=REF")
    generation: dict[str, Any] = {k: v for k, v in {"max_new_tokens": max_new_tokens, "temperature": temperature,
                                                     "top_p": top_p, "top_k": top_k}.items() if v is not None}
    if greedy:
        generation["greedy"] = True
    build: dict[str, Any] = {"models": models, "model": parse_assignments(model or [], "--model"),
                             "device": _device_option(device or []), "dtype": dtype, "seed": seed,
                             **({"low_memory": low_memory} if low_memory is not None else {}),
                             **({"placement": placement} if placement else {})}
    check_backend(backend, ray_address, workers)
    return {"limit": limit, "split": split, "shuffle": shuffle, "seed": seed,
            "fields": parse_assignments(field or [], "--field") or None, "task": task, "batch_size": batch_size,
            "overwrite": overwrite, "retry": retry, "metric": metric, "rounds": rounds, "latent_steps": latent_steps,
            "generation": generation, "text_message_tokens": text_message_tokens, "build": build,
            "backend": backend, "workers": workers, "ray_address": ray_address, "bucket": bucket}


def _progress() -> Progress:
    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[note]}"), TimeElapsedColumn(), console=err_console, transient=True)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _interrupted(out: Path, last: dict[str, Any]) -> typer.Exit:
    done = f"{last['done']} of {last['total']} samples of {last['system']} done" if last else "no samples done"
    err_console.print(Text(f"interrupted: {done}; the finished samples are kept in {out}; run the same command "
                           "again to resume", style="bold yellow"), soft_wrap=True)
    return typer.Exit(130)


@app.command("eval")
def eval_command(
    topology: Annotated[str, typer.Argument(metavar="TOPOLOGY", help="A registered topology name or a topology JSON file.",
                                            show_default=False)],
    dataset: DatasetOpt,
    out: OutOpt,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Evaluate only this many samples.")] = None,
    split: Annotated[Optional[str], typer.Option("--split", help="Another split (arc_easy: validation; mmlu: validation, dev; hf: any).")] = None,
    shuffle: Annotated[bool, typer.Option("--shuffle", help="Shuffle the samples (seeded by --seed) before --limit.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the shuffle, the sampling and the link initialisation.")] = 0,
    field: Annotated[Optional[list[str]], typer.Option("--field", help="Map a JSONL/HF field: question=NAME, answer=NAME, task=NAME, id=NAME (repeatable).")] = None,
    task: Annotated[Optional[str], typer.Option("--task", help="Task type of a local or HF dataset (default math).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Questions per batch.")] = 8,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start again in --out, dropping its records.")] = False,
    retry: Annotated[Optional[bool], typer.Option("--retry/--no-retry", help="The reference's answer retry (default: on for the reference styles).", show_default=False)] = None,
    metric: Annotated[Optional[str], typer.Option("--metric", help="Score with this registered metric (default: the dataset's).")] = None,
    rounds: Annotated[Optional[int], typer.Option("--rounds", min=1, help="Recursion rounds (default: the topology's).")] = None,
    latent_steps: Annotated[Optional[int], typer.Option("--latent-steps", min=0, help="Latent steps (default: the topology's settings).")] = None,
    greedy: Annotated[bool, typer.Option("--greedy", help="Greedy decoding instead of sampling.")] = False,
    temperature: Annotated[Optional[float], typer.Option("--temperature", min=0, help="Sampling temperature.")] = None,
    top_p: Annotated[Optional[float], typer.Option("--top-p", help="Nucleus sampling threshold.")] = None,
    top_k: Annotated[Optional[int], typer.Option("--top-k", min=0, help="Top-k filtering.")] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option("--max-new-tokens", min=1, help="Answer length limit.")] = None,
    text_message_tokens: Annotated[int, typer.Option("--text-message-tokens", min=1, help="Length limit of text messages (text edges).")] = 256,
    models: Annotated[Optional[str], typer.Option("--models", help="'tiny': every agent gets the tiny random model of its family.")] = None,
    model: Annotated[Optional[list[str]], typer.Option("--model", help="AGENT=REF (repeatable).")] = None,
    device: Annotated[Optional[list[str]], typer.Option("--device", help="'cpu', 'cuda', ... or AGENT=DEVICE.")] = None,
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="float32, float16 or bfloat16.")] = None,
    backend: BackendOpt = "local",
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = None,
    low_memory: LowMemoryOpt = None,
    placement: PlacementOpt = None,
    bucket: BucketOpt = True,
) -> None:
    """Evaluate a topology on a dataset: per-sample records, accuracy with a 95% interval, resumable."""
    from ..eval.evaluate import evaluate
    from ..plugins.manager import default_registry

    options = _options(limit, split, shuffle, seed, field, task, batch_size, overwrite, retry, metric, rounds,
                       latent_steps, greedy, temperature, top_p, top_k, max_new_tokens, text_message_tokens,
                       models, model, device, dtype, backend, ray_address, workers, low_memory,
                       placement, bucket)
    last: dict[str, Any] = {}
    try:
        with _progress() as progress:
            bar = progress.add_task(topology, total=None, note="")

            def report(event: Any) -> None:
                if event.stage is not None:
                    progress.update(bar, note=event.stage)
                    return
                last.update(system=event.system, done=event.done, total=event.total)
                progress.update(bar, total=event.total, completed=event.done,
                                note=f"{event.correct}/{event.done} correct")

            result = evaluate(topology, dataset, out=out, registry=default_registry(), progress=report, **options)
    except KeyboardInterrupt:
        raise _interrupted(out, last) from None
    s = result.summary
    table = Table(title=f"{result.system} on {result.dataset}", title_justify="left")
    for col in ("acc %", "95% CI", "n", "wall s", "s/q", "tokens", "latent", "retried"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_row(_pct(s["accuracy"]), f"{_pct(s['ci_low'])}-{_pct(s['ci_high'])}", str(s["n"]), f"{s['wall_s']:.1f}",
                  f"{s['per_sample_s'] or 0:.2f}", str(s["generated_tokens"]), str(s["latent_steps"]), str(s["retried"]))
    console.print(table)
    console.print(Text(f"records: {result.out / 'results.jsonl'}; summary: {result.out / 'summary.json'}"),
                  soft_wrap=True)


@app.command("compare")
def compare_command(
    topologies: Annotated[list[str], typer.Argument(metavar="TOPOLOGY...", help="Topologies to compare (names or JSON files).",
                                                    show_default=False)],
    dataset: DatasetOpt,
    out: OutOpt,
    baselines: Annotated[bool, typer.Option("--baselines", help="Add each topology's single-agent and all-text (Recursive-TextMAS) baselines.")] = False,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Evaluate only this many samples.")] = None,
    split: Annotated[Optional[str], typer.Option("--split", help="Another split of the dataset.")] = None,
    shuffle: Annotated[bool, typer.Option("--shuffle", help="Shuffle the samples (seeded by --seed) before --limit.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the shuffle, the sampling and the link initialisation.")] = 0,
    field: Annotated[Optional[list[str]], typer.Option("--field", help="Map a JSONL/HF field: question=NAME, answer=NAME (repeatable).")] = None,
    task: Annotated[Optional[str], typer.Option("--task", help="Task type of a local or HF dataset (default math).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Questions per batch.")] = 8,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start again in --out, dropping its records.")] = False,
    retry: Annotated[Optional[bool], typer.Option("--retry/--no-retry", help="The reference's answer retry (default: on for the reference styles).", show_default=False)] = None,
    metric: Annotated[Optional[str], typer.Option("--metric", help="Score with this registered metric.")] = None,
    rounds: Annotated[Optional[int], typer.Option("--rounds", min=1, help="Recursion rounds.")] = None,
    latent_steps: Annotated[Optional[int], typer.Option("--latent-steps", min=0, help="Latent steps.")] = None,
    greedy: Annotated[bool, typer.Option("--greedy", help="Greedy decoding instead of sampling.")] = False,
    temperature: Annotated[Optional[float], typer.Option("--temperature", min=0, help="Sampling temperature.")] = None,
    top_p: Annotated[Optional[float], typer.Option("--top-p", help="Nucleus sampling threshold.")] = None,
    top_k: Annotated[Optional[int], typer.Option("--top-k", min=0, help="Top-k filtering.")] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option("--max-new-tokens", min=1, help="Answer length limit.")] = None,
    text_message_tokens: Annotated[int, typer.Option("--text-message-tokens", min=1, help="Length limit of text messages.")] = 256,
    models: Annotated[Optional[str], typer.Option("--models", help="'tiny': every agent gets the tiny random model of its family.")] = None,
    model: Annotated[Optional[list[str]], typer.Option("--model", help="AGENT=REF (repeatable).")] = None,
    device: Annotated[Optional[list[str]], typer.Option("--device", help="'cpu', 'cuda', ... or AGENT=DEVICE.")] = None,
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="float32, float16 or bfloat16.")] = None,
    backend: BackendOpt = "local",
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = None,
    low_memory: LowMemoryOpt = None,
    placement: PlacementOpt = None,
    bucket: BucketOpt = True,
) -> None:
    """Compare topologies (and their baselines) on one dataset: a table, CSV, JSON, a plot, paired tests."""
    from ..eval.compare import compare
    from ..plugins.manager import default_registry

    options = _options(limit, split, shuffle, seed, field, task, batch_size, overwrite, retry, metric, rounds,
                       latent_steps, greedy, temperature, top_p, top_k, max_new_tokens, text_message_tokens,
                       models, model, device, dtype, backend, ray_address, workers, low_memory,
                       placement, bucket)
    last: dict[str, Any] = {}
    try:
        with _progress() as progress:
            bar = progress.add_task("", total=None, note="")

            def on_system(name: str, i: int, n: int) -> None:
                progress.update(bar, description=f"{name} ({i + 1}/{n})", completed=0, total=None, note="")

            def report(event: Any) -> None:
                if event.stage is not None:
                    progress.update(bar, note=event.stage)
                    return
                last.update(system=event.system, done=event.done, total=event.total)
                progress.update(bar, total=event.total, completed=event.done,
                                note=f"{event.correct}/{event.done} correct")

            result = compare(topologies, dataset, out=out, baselines=baselines, registry=default_registry(),
                             progress=report, on_system=on_system, **options)
    except KeyboardInterrupt:
        raise _interrupted(out, last) from None
    for table in compare_tables(result.rows):
        console.print(table)
    written = [result.out / "compare.csv", result.out / "compare.json"] + ([result.plot] if result.plot else [])
    console.print(Text("wrote " + ", ".join(str(p) for p in written)), soft_wrap=True)
    if result.plot is None:
        console.print(Text("(no plot: install matplotlib, e.g. pip install 'recmas-graph[eval]')", style="dim"))


def compare_tables(rows: list[dict[str, Any]]) -> list[Table]:
    """Two tables, one row per system each (so long system names fit 80 columns): accuracy with its
    95% interval and McNemar's exact test against the first system; then time, tokens and memory."""
    from rich import box

    first = rows[0]["system"] if rows else ""
    n = rows[0]["n"] if rows else 0
    accuracy = Table(title=f"accuracy ({n} samples each)", title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
    cost = Table(title="cost (all samples)", title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
    for table, columns in ((accuracy, ("acc %", "95% CI", "p vs first")),
                           (cost, ("wall s", "s/q", "tokens", "latent", "peak MB"))):
        table.add_column("system", no_wrap=True)
        for col in columns:
            table.add_column(col, justify="right", no_wrap=True)
    for row in rows:
        paired = row["paired"].get(first)
        accuracy.add_row(row["system"], _pct(row["accuracy"]), f"{_pct(row['ci_low'])}-{_pct(row['ci_high'])}",
                         "-" if paired is None else f"{paired['p_value']:.3f}")
        cost.add_row(row["system"], f"{row['wall_s']:.1f}", f"{row['per_sample_s'] or 0:.2f}",
                     str(row["generated_tokens"]), str(row["latent_steps"]), f"{row['peak_mem_bytes'] / 2**20:.0f}")
    accuracy.caption = f"p: McNemar's exact test against {first} on the same samples"
    cost.caption = "peak MB: the most one pass added (CPU) or the device's peak (CUDA)"
    for table in (accuracy, cost):
        table.caption_justify = "left"
    return [accuracy, cost]
