"""``recmas run``: build a system from a topology and answer questions."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ..errors import RunError, SpecError
from ..topology.spec import TASK_TYPES
from . import app, console, err_console
from ._output import JsonLines, terminal_text

__all__ = ["run_command", "read_questions", "parse_assignments", "timing_table"]


def build_status(status: Any) -> Any:
    """An ``on_model`` callback that shows what a build is doing in a rich status line."""
    def show(name: str, ref: str) -> None:
        status.update(f"{ref}..." if name == "links" else f"loading {name} ({ref})...")
    return show


def parse_assignments(values: list[str], option: str) -> dict[str, str]:
    """Parse ``AGENT=VALUE`` options into a dict, naming the option on a malformed item."""
    out: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise RunError(f"expected AGENT=VALUE, got {value!r}", culprit=option,
                           hint=f"e.g. {option} planner=tiny:llama")
        out[name.strip()] = rest.strip()
    return out


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


BackendOpt = Annotated[str, typer.Option("--backend", help="'local': every agent in this process; 'ray': each model "
                                         "in a Ray actor (pip install 'recmas-graph[ray]').")]
RayAddressOpt = Annotated[Optional[str], typer.Option("--ray-address", help="Join this Ray cluster ('auto', HOST:6379); "
                                                      "default: $RAY_ADDRESS, else a local Ray instance.")]
LowMemoryOpt = Annotated[Optional[bool], typer.Option("--low-memory/--no-low-memory", show_default=False,
                                                      help="Keep one model in memory at a time, loaded for the passes "
                                                      "that need it (same answers, more loading). Default: only when "
                                                      "the estimated memory does not fit.")]
WorkersOpt = Annotated[Optional[int], typer.Option("--workers", min=1, help="Answer the batches on this many Ray "
                                                  "workers, each running a whole system (uses Ray).")]


def check_backend(backend: str, ray_address: Optional[str], workers: Optional[int] = None) -> None:
    """Refuse an unknown backend, and a Ray address that nothing would use, before any work."""
    from ..distributed.choose import BACKENDS

    if backend not in BACKENDS:
        raise RunError(f"unknown backend {backend!r}", culprit="--backend", hint=f"use one of: {', '.join(BACKENDS)}")
    if ray_address is not None and backend != "ray" and workers is None:
        raise RunError("--ray-address joins a Ray cluster, which --backend local does not use", culprit="--ray-address",
                       hint="add --backend ray (or, for eval and compare, --workers N)")


PlacementOpt = Annotated[Optional[str], typer.Option("--placement", help="Where agents without a device go: single, "
                                                     "round-robin (default), by-size or auto (see recmas plan).")]


def _device_option(values: list[str]) -> str | dict[str, str] | None:
    if not values:
        return None
    if len(values) == 1 and "=" not in values[0]:
        return values[0]
    return parse_assignments(values, "--device")


@app.command("run")
def run_command(
    topology: Annotated[str, typer.Argument(help="Built-in topology name or path to a topology JSON file.")],
    question: Annotated[Optional[list[str]], typer.Option("--question", "-q", help="A question (repeatable).")] = None,
    questions: Annotated[Optional[Path], typer.Option("--questions", help="JSONL file, one {\"question\": ...} per line.")] = None,
    models: Annotated[Optional[str], typer.Option("--models", help="'tiny': every agent gets the tiny random model of its own family.")] = None,
    model: Annotated[Optional[list[str]], typer.Option("--model", help="Override one agent's model: AGENT=REF (repeatable).")] = None,
    rounds: Annotated[Optional[int], typer.Option("--rounds", min=1, help="Recursion rounds (default: the topology's).")] = None,
    latent_steps: Annotated[Optional[int], typer.Option("--latent-steps", min=0, help="Latent steps per pass (default: the topology's settings for --task, else its latent_steps).")] = None,
    device: Annotated[Optional[list[str]], typer.Option("--device", help="'cpu', 'cuda', 'cuda:1', 'auto', or AGENT=DEVICE (repeatable).")] = None,
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="float32, float16 or bfloat16 (default: each agent's spec dtype, else automatic: float32 on CPU, bfloat16 on a GPU that has it).")] = None,
    task: Annotated[str, typer.Option("--task", help=f"Task type: picks the prompts and the topology's settings ({', '.join(TASK_TYPES)}).")] = "math",
    seed: Annotated[int, typer.Option("--seed", help="Seed for link initialisation and sampling.")] = 0,
    greedy: Annotated[bool, typer.Option("--greedy", help="Greedy decoding instead of sampling.")] = False,
    temperature: Annotated[Optional[float], typer.Option("--temperature", min=0, help="Sampling temperature (default: the topology's settings, else 0.6).")] = None,
    top_p: Annotated[Optional[float], typer.Option("--top-p", help="Nucleus sampling threshold (default: the topology's settings, else 0.95).")] = None,
    top_k: Annotated[Optional[int], typer.Option("--top-k", min=0, help="Top-k filtering (default: the model's generation config; 0: off).")] = None,
    min_p: Annotated[Optional[float], typer.Option("--min-p", help="Min-p filtering (default: the model's generation config).")] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option("--max-new-tokens", min=1, help="Answer length limit in tokens (default: the topology's settings, else 256).")] = None,
    tool_choice: Annotated[str, typer.Option("--tool-choice", help="'auto': the model decides; 'required': the output agent's answer opens with a call of its first tool.")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Questions per batch.")] = 8,
    trace: Annotated[Optional[Path], typer.Option("--trace", help="Write one JSON line per (batch, agent, round) pass.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write answers as JSONL, batch by batch.")] = None,
    backend: BackendOpt = "local",
    ray_address: RayAddressOpt = None,
    low_memory: LowMemoryOpt = None,
    placement: PlacementOpt = None,
) -> None:
    """Run a topology on one or more questions and print the answers and a timing table."""
    from ..distributed.choose import build_system
    from ..plugins.manager import default_registry
    from ..runtime.batches import BatchError, run_batches
    from ..runtime.decoding import GenerationOptions

    if task not in TASK_TYPES:
        raise RunError(f"unknown task type {task!r}", culprit="--task", hint=f"use one of {', '.join(TASK_TYPES)}")
    check_backend(backend, ray_address)
    if models not in (None, "tiny"):
        raise RunError(f"unknown --models value {models!r}", culprit="--models", hint="use --models tiny, or --model AGENT=REF")
    items: list[dict[str, str]] = [{"id": str(i + 1), "question": q} for i, q in enumerate(question or [])]
    if questions is not None:
        items += read_questions(questions)
    for index, item in enumerate(items, start=1):
        item["id"] = item["id"] or str(index)
    if not items:
        raise RunError("no question given", culprit="recmas run", hint="pass --question TEXT or --questions FILE.jsonl")
    given = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p, "top_k": top_k,
             "min_p": min_p}
    decoding = {k: v for k, v in given.items() if v is not None}
    if greedy:
        decoding["greedy"] = True
    if "temperature" in decoding or "top_p" in decoding:
        GenerationOptions(**{k: v for k, v in decoding.items() if k in ("temperature", "top_p")})  # checked now
    trace_file = JsonLines(trace, "--trace")  # checked now, created on the first line
    out_file = JsonLines(output, "--output")
    answered = 0
    start = time.perf_counter()
    records: list[dict] = []
    try:
        compiled = default_registry().compile(topology)
        with console.status("loading models...") as status:
            system = build_system(
                compiled, backend=backend, ray_address=ray_address,
                **({"low_memory": low_memory} if low_memory is not None else {}),
                models=models, model=parse_assignments(model or [], "--model"), device=_device_option(device or []),
                dtype=dtype, seed=seed, on_model=build_status(status), placement=placement,
            )
        start = time.perf_counter()
        with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err_console, transient=True,
                      disable=len(items) <= batch_size) as progress:
            bar = progress.add_task("questions", total=len(items))
            batches = run_batches(system, [it["question"] for it in items], batch_size=batch_size,
                                  ids=[it["id"] for it in items], seed=seed, task=task, rounds=rounds,
                                  latent_steps=latent_steps, tool_choice=tool_choice, **decoding)
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
