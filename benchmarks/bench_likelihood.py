"""Benchmark: multiple choice by likelihood against generated letters, on a packaged real model.

The system is ``--topology``'s single-agent baseline (default: ``sequential_light_mini:single``,
SmolLM2-135M-Instruct with the solver's prompts); the questions are the first ``--limit``
ARC-Easy test questions. Rows, each on the same questions:

- ``likelihood``: ``rg.evaluate(scoring="likelihood")``, the default for multiple-choice datasets:
  the question without its option lines, each option's text teacher-forced after the solver's
  prompt (``acc``, ``acc_norm``);
- ``generate``: ``rg.evaluate(scoring="generate")``: the question with its options listed, the
  answer decoded (greedy, ``--max-new-tokens``) and its letter read by ``choice_letter``;
- variants by ``system.score`` (``--variants``): ``reasoning`` (the same, with the ``reasoning``
  task's prompts), ``listed`` (the options listed in the question too), ``letters`` (options listed,
  the continuations are the letters `` A``, `` B``, ...: OLMES's "MC" format) and ``bare`` (no role and
  no chat template: lm-eval's ``arc_easy`` prompt ``Question: ...\\nAnswer:`` on the same model, i.e.
  what lm-eval's ``hf`` model gives).

Chance is the mean of 1 / (options) over the questions. Every stage is resumable (``--out``: the
evaluation folders, and one JSONL file per variant), so the script can be stopped and rerun.
Prints a table, writes ``--out``/summary.json and ``--out``/likelihood.png. Usage:

    .venv/bin/python benchmarks/bench_likelihood.py [--limit 200] [--out runs/bench_likelihood]
        [--variants reasoning,listed,letters,bare] [--variants-limit N] [--max-new-tokens 160] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

import recmas_graph as rg
from recmas_graph.eval import baseline, resolve_dataset, select_samples
from recmas_graph.eval.likelihood import best, choice_question
from recmas_graph.eval.stats import bootstrap_ci
from recmas_graph.plugins import Registry, default_registry, hookimpl
from recmas_graph.runtime.agent.prompts import RAW_PROMPT_TAG
from recmas_graph.topology.compile import compile_topology
from recmas_graph.topology.roles import Role
from recmas_graph.topology.spec import parse_topology

VARIANTS = ("reasoning", "listed", "letters", "bare")


class _Bare:
    """A role rendered bare: the prompt is the question itself."""

    @hookimpl
    def recmas_roles(self) -> list[Role]:
        return [Role("bare", "The question as it is.", templates={"default": "{{ question }}"}, tags=(RAW_PROMPT_TAG,),
                     answers=True)]


def _row(name: str, acc: list[bool], norm: list[bool] | None, seconds: float, note: str) -> dict[str, Any]:
    lo, hi = bootstrap_ci(acc)
    row = {"row": name, "n": len(acc), "acc": sum(acc) / len(acc), "acc_ci": [lo, hi], "acc_norm": None,
           "acc_norm_ci": None, "seconds": round(seconds, 1), "note": note}
    if norm is not None:
        lo, hi = bootstrap_ci(norm)
        row.update(acc_norm=sum(norm) / len(norm), acc_norm_ci=[lo, hi])
    return row


def _variant(system: Any, name: str, samples: list, path: Path, batch_size: int) -> tuple[list[dict], float]:
    """Score ``samples`` with ``system.score`` as variant ``name``; per-question results, resumable."""
    done = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    start = time.perf_counter()
    spent = sum(d["seconds"] for d in done)
    todo = samples[len(done):]
    for i in range(0, len(todo), batch_size):
        chunk = todo[i:i + batch_size]
        asked = [choice_question(s) for s in chunk]
        if name == "reasoning":
            questions, conts, task = [a.question for a in asked], [a.continuations for a in asked], "reasoning"
        elif name == "listed":
            questions, conts, task = [s.question for s in chunk], [a.continuations for a in asked], "choice"
        elif name == "letters":
            questions, conts, task = [s.question for s in chunk], [[f" {x}" for x in a.letters] for a in asked], "choice"
        else:  # bare: lm-eval's arc_easy prompt
            questions, conts, task = ([f"Question: {a.question}\nAnswer:" for a in asked], [a.continuations for a in asked],
                                      "choice")
        t0 = time.perf_counter()
        result = system.score(questions, conts, task=task)
        seconds = (time.perf_counter() - t0) / len(chunk)
        with path.open("a") as handle:
            for sample, a, lps in zip(chunk, asked, result.logprobs):
                texts = list(a.letters) if name == "letters" else list(a.options)
                pick, pick_norm = best(lps, texts)
                handle.write(json.dumps({"id": sample.id, "logprobs": lps, "acc": pick == a.gold,
                                         "acc_norm": pick_norm == a.gold, "seconds": seconds}) + "\n")
        print(f"  {name}: {len(done) + i + len(chunk)}/{len(samples)}", flush=True)
    done = [json.loads(line) for line in path.read_text().splitlines()]
    return done, spent + time.perf_counter() - start


def _plot(rows: list[dict], chance: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.2))
    width = 0.38
    for i, row in enumerate(rows):
        for j, (key, ci, colour, label) in enumerate((("acc", "acc_ci", "#4a6fa5", "acc"),
                                                       ("acc_norm", "acc_norm_ci", "#d08c3c", "acc_norm"))):
            if row[key] is None:
                continue
            x = i + (j - 0.5) * width
            lo, hi = row[ci]
            ax.bar(x, 100 * row[key], width, color=colour, label=label if i == 0 or (j and rows[0]["acc_norm"] is None)
                   else None)
            ax.errorbar(x, 100 * row[key], yerr=[[100 * (row[key] - lo)], [100 * (hi - row[key])]], color="black",
                        capsize=3)
    ax.axhline(100 * chance, linestyle="--", color="grey", label=f"chance ({100 * chance:.1f}%)")
    ax.set_xticks(range(len(rows)), [r["row"] for r in rows])
    top = max(100 * (r["acc_norm_ci"] or r["acc_ci"])[1] for r in rows)
    ax.set_ylim(0, max(top, 100 * max(r["acc_ci"][1] for r in rows)) + 18)  # room for the legend
    ax.set_ylabel("accuracy % (95% bootstrap interval)")
    ax.set_title(title, fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=8, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--topology", default="sequential_light_mini")
    parser.add_argument("--dataset", default="arc_easy")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"any of {', '.join(VARIANTS)} (or none)")
    parser.add_argument("--variants-limit", type=int, default=None, help="score the variants on the first N "
                        "questions only (default: --limit)")
    parser.add_argument("--skip-generate", action="store_true", help="leave out the generation row")
    parser.add_argument("--out", default="runs/bench_likelihood")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    registry = Registry.create([_Bare()], load_entrypoints=True)
    compiled = registry.compile(args.topology)
    spec = baseline(compiled.spec, "single")
    single = compile_topology(spec, registry, base_dir=compiled.base_dir)
    t0 = time.perf_counter()
    system = single.build()
    print(f"{spec.name}: {', '.join(f'{a.name}={a.model} ({a.role})' for a in spec.agents)}; build "
          f"{time.perf_counter() - t0:.1f} s; {platform.machine()} CPU, {torch.get_num_threads()} threads", flush=True)
    samples = select_samples(resolve_dataset(args.dataset, default_registry()), limit=args.limit)
    chance = sum(1 / len(s.meta["choices"]) for s in samples) / len(samples)
    rows = []

    t0 = time.perf_counter()
    report = rg.evaluate(system, args.dataset, out=out / "likelihood", limit=args.limit, batch_size=args.batch_size,
                         scoring="likelihood")
    rows.append(_row("likelihood", [r["acc"] for r in report.records], [r["acc_norm"] for r in report.records],
                     sum(r["wall_s"] for r in report.records), "stem, choice prompts (the default)"))
    print(f"  likelihood done in {time.perf_counter() - t0:.0f} s", flush=True)
    if not args.skip_generate:
        t0 = time.perf_counter()
        report = rg.evaluate(system, args.dataset, out=out / "generate", limit=args.limit, batch_size=args.batch_size,
                             scoring="generate", generation={"greedy": True, "max_new_tokens": args.max_new_tokens})
        rows.append(_row("generate", [r["correct"] for r in report.records], None,
                         sum(r["wall_s"] for r in report.records),
                         f"options listed, greedy, {args.max_new_tokens} tokens, letter read"))
        print(f"  generate done in {time.perf_counter() - t0:.0f} s", flush=True)
    bare = None
    for name in [v for v in args.variants.split(",") if v]:
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name!r}; use {', '.join(VARIANTS)}")
        target = system
        if name == "bare":
            data = spec.model_dump(mode="json")
            data["name"], data["agents"][0]["role"] = f"{spec.name}-bare", "bare"
            bare = bare or compile_topology(parse_topology(data), registry, base_dir=compiled.base_dir).build()
            target = bare
        done, seconds = _variant(target, name, samples[:args.variants_limit or len(samples)],
                                 out / f"variant-{name}.jsonl", args.batch_size)
        notes = {"reasoning": "stem, reasoning prompts", "listed": "options listed, choice prompts",
                 "letters": "options listed, letters scored", "bare": "lm-eval's arc_easy prompt, no role/template"}
        rows.append(_row(name, [d["acc"] for d in done], [d["acc_norm"] for d in done], seconds, notes[name]))
    title = f"{spec.name} on {len(samples)} {args.dataset} questions" + (
        f" (variants: the first {args.variants_limit})" if args.variants_limit else "")
    print(f"\n{title} (chance {100 * chance:.1f}%)")
    print(f"{'row':>10} {'acc %':>6} {'95% CI':>11} {'norm %':>7} {'95% CI':>11} {'s':>7}  what")
    for r in rows:
        norm = "-" if r["acc_norm"] is None else f"{100 * r['acc_norm']:.1f}"
        norm_ci = "-" if r["acc_norm_ci"] is None else f"{100 * r['acc_norm_ci'][0]:.1f}-{100 * r['acc_norm_ci'][1]:.1f}"
        print(f"{r['row']:>10} {100 * r['acc']:>6.1f} {100 * r['acc_ci'][0]:>5.1f}-{100 * r['acc_ci'][1]:<5.1f} "
              f"{norm:>7} {norm_ci:>11} {r['seconds']:>7.0f}  {r['note']}")
    summary = {"system": spec.name, "dataset": args.dataset, "n": len(samples), "chance": chance, "rows": rows,
               "threads": torch.get_num_threads(), "machine": platform.machine()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    try:
        _plot(rows, chance, out / "likelihood.png", title)
        print(f"wrote {out / 'summary.json'}, {out / 'likelihood.png'}")
    except ImportError:
        print(f"wrote {out / 'summary.json'} (no plot: matplotlib is not installed)")


if __name__ == "__main__":
    main()
