"""``recmas run``: build a system from a topology and answer questions."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..errors import RunError, SpecError
from ..runtime.options import RunOptions
from . import app, console, err_console
from ._output import JsonLines, terminal_text
from ._progress import progress as progress_for
from .options import BuildArgs, parse_assignments, with_build_options, with_run_options

__all__ = ["run_command", "read_questions", "parse_assignments", "timing_table"]


def build_status(status: Any) -> Any:
    """An ``on_model`` callback that shows what a build is doing in a rich status line (on a
    terminal), or as one line on stderr per model when the output is redirected."""
    def show(name: str, ref: str) -> None:
        text = f"{ref}..." if name == "links" else f"loading {name} ({ref})..."
        status.update(text)
        if not console.is_terminal:
            err_console.print(Text(text), highlight=False, soft_wrap=True)
    return show


def read_questions(path: Path) -> list[dict[str, str]]:
    """Read questions from JSONL: one object per line with ``question`` (and optional ``id``; ``""`` if absent)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise SpecError("file not found", culprit=str(path), hint="check the --questions path") from None
    items: list[dict[str, str]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise SpecError(f"line {number} is not valid JSON: {err.msg}", culprit=str(path),
                            hint="each line must be one JSON object like {\"question\": \"...\"}") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("question"), str):
            raise SpecError(f"line {number} has no string field \"question\"", culprit=str(path),
                            hint="each line must be one JSON object like {\"question\": \"...\"}")
        items.append({"id": str(obj["id"]) if "id" in obj else "", "question": obj["question"]})
    if not items:
        raise SpecError("no questions in file", culprit=str(path), hint="add one JSON object per line")
    return items


WorkersOpt = Annotated[Optional[int], typer.Option("--workers", min=1, help="Answer the batches on this many Ray "
                                                  "workers, each running a whole system (uses Ray).")]


def check_backend(build: BuildArgs, workers: Optional[int] = None) -> None:
    """Refuse a Ray address that nothing would use, before any work."""
    if build.ray_address is not None and build.backend != "ray" and workers is None:
        raise RunError("--ray-address joins a Ray cluster, which --backend local does not use", culprit="--ray-address",
                       hint="add --backend ray (or, for eval and compare, --workers N)")


@app.command("run")
@with_build_options
@with_run_options
def run_command(
    topology: Annotated[str, typer.Argument(help="Built-in topology name or path to a topology JSON file.")],
    options: RunOptions,
    build: BuildArgs,
    question: Annotated[Optional[list[str]], typer.Option("--question", "-q", help="A question (repeatable).")] = None,
    questions: Annotated[Optional[Path], typer.Option("--questions", help="JSONL file, one {\"question\": ...} per line.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Questions per batch.")] = 8,
    trace: Annotated[Optional[Path], typer.Option("--trace", help="Write one JSON line per (batch, agent, round) pass.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write answers as JSONL, batch by batch.")] = None,
) -> None:
    """Run a topology on one or more questions and print the answers and a timing table."""
    from ..distributed.choose import build_system
    from ..plugins.manager import default_registry
    from ..runtime.execution.batches import BatchError, run_batches

    check_backend(build)
    items: list[dict[str, str]] = [{"id": str(i + 1), "question": q} for i, q in enumerate(question or [])]
    if questions is not None:
        items += read_questions(questions)
    for index, item in enumerate(items, start=1):
        item["id"] = item["id"] or str(index)
    if not items:
        raise RunError("no question given", culprit="recmas run", hint="pass --question TEXT or --questions FILE.jsonl")
    trace_file = JsonLines(trace, "--trace")  # checked now, created on the first line
    out_file = JsonLines(output, "--output")
    answered = 0
    start = time.perf_counter()
    records: list[dict] = []
    try:
        compiled = default_registry().compile(topology)
        with console.status("loading models...") as status:
            system = build_system(compiled, backend=build.backend, ray_address=build.ray_address,
                                  on_model=build_status(status), **build.build_kwargs(options.seed or 0))
        start = time.perf_counter()
        with progress_for(err_console, disable=len(items) <= batch_size) as progress:
            bar = progress.add_task("questions", total=len(items))
            batches = run_batches(system, [it["question"] for it in items], options, batch_size=batch_size,
                                  ids=[it["id"] for it in items])
            try:
                for done in batches:
                    result, batch = done.result, [items[i] for i in done.positions]
                    batch_records = [{"batch": done.index, **rec.as_dict()} for rec in result.trace]
                    records.extend(batch_records)
                    for row in batch_records:
                        trace_file.write(row)
                    for i, (it, ans, n) in enumerate(zip(batch, result.answers, result.generated_tokens)):
                        _print_answer({**it, "_index": i}, ans, batch_records)
                        out_file.write({"id": it["id"], "question": it["question"], "answer": ans,
                                        "generated_tokens": n})
                    answered += len(batch)
                    progress.advance(bar, len(batch))
            except BatchError as err:
                done_text = "the answers of earlier batches are printed above" + (f" and in {output}" if output else "")
                raise RunError(err.message, culprit=err.culprit,
                               hint=f"{done_text}; rerun with --traceback for details") from err.__cause__
    except KeyboardInterrupt:
        kept = f"kept {answered} of {len(items)} answer(s)"
        where = [str(f.path) for f in (out_file, trace_file) if f.path is not None and f.lines]
        err_console.print(Text(f"interrupted: {kept}" + (f" (written to {', '.join(where)})" if where else ""),
                               style="bold yellow"))
        raise typer.Exit(130) from None
    finally:
        trace_file.close()
        out_file.close()
    console.print(timing_table(records, time.perf_counter() - start))


def _print_answer(item: dict[str, str], answer: str, records: list[dict]) -> None:
    """Print one question, its answer and the tool calls made for it (control characters escaped)."""
    console.rule(f"question {escape(item['id'])}")
    console.print(terminal_text(item["question"]), highlight=False, markup=False)
    for row in records:
        for call in row.get("tool_calls") or []:
            if call.get("sample") != item["_index"]:
                continue
            status = "ok" if call["ok"] else f"error: {call['error']}"
            console.print(Text(terminal_text(f"tool call: {row['agent']} round {row['round']} -> {call['name']} ({status})"),
                               style="bold"))
            console.print(terminal_text((call["arguments"] or "").rstrip()), highlight=False, markup=False)
            console.print(Text("output: ", style="dim") + Text(terminal_text((call["output"] or "").rstrip())),
                          highlight=False)
    console.print(Text("answer:", style="bold green"))
    console.print(terminal_text(answer.strip()) or "(empty)", highlight=False, markup=False)


def timing_table(records: list[dict], total: float) -> Table:
    """The per-stage timing table: one row per (agent, round, action), summed over batches."""
    table = Table(title="per-stage timing", title_justify="left", show_lines=False, padding=(0, 1))
    for col, header in (("agent", "agent"), ("round", "rnd"), ("action", "action"), ("wall", "wall s"),
                        ("prompt", "prompt"), ("latent", "latent"), ("gen", "gen"), ("mem", "peak MB")):
        left = col in ("agent", "action")
        table.add_column(header, justify="left" if left else "right", no_wrap=True, overflow="fold")
    merged: dict[tuple[str, int, str], dict] = {}
    for rec in records:
        key = (rec["agent"], rec["round"], rec["action"])
        row = merged.setdefault(key, {**rec, "wall_s": 0.0, "prompt_tokens": 0, "generated_tokens": 0, "peak_mem_bytes": 0})
        row["wall_s"] += rec["wall_s"]
        row["prompt_tokens"] += rec["prompt_tokens"]
        row["generated_tokens"] += rec["generated_tokens"]
        row["peak_mem_bytes"] = max(row["peak_mem_bytes"], rec["peak_mem_bytes"])
    for (agent, rnd, action), row in merged.items():
        table.add_row(agent, str(rnd), action, f"{row['wall_s']:.2f}", str(row["prompt_tokens"]),
                      str(row["latent_steps"]), str(row["generated_tokens"]), f"{row['peak_mem_bytes'] / 2**20:.0f}")
    devices = sorted({rec["device"] for rec in records})
    table.caption = (f"total {total:.2f} s on {', '.join(devices) or '-'}; peak MB: the device's peak per pass on "
                     "CUDA, what the pass added to the resident set on CPU")
    table.caption_justify = "left"
    return table
