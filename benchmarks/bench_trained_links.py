"""Benchmark: what the shipped trained links are worth, against random and calibrated links and the single agent.

Rows, each on the same first ``--limit`` ARC-Easy test questions (never trained or calibrated on:
the recipe, scripts/train_mini_links.sh, uses the validation splits), scored by option likelihood
(``rg.compare``, lm-eval's ``acc`` and ``acc_norm``):

- ``trained``: ``sequential_light_mini_trained``, the shipped links;
- ``random``: ``sequential_light_mini`` as packaged (random links);
- ``calibrated``: the recipe's calibrated links (``--calibrated``, its ``cal/topology.json``; the row
  is left out when the file is missing: calibrated links are not shipped);
- ``single``: the output agent alone (SmolLM2-135M with the solver's prompts, no messages);
- ``text``: the all-text baseline (Recursive-TextMAS: the same agents exchanging 16-token texts).

The rows, labels and options are the README demo's (``recmas compare``), so ``--out runs/demo``
after the demo only adds the calibrated row.

Besides accuracy, the **answer NLL**: the gold option's negative log-likelihood per token (the
continuation the training lowers, on questions it never saw). Paired tests against ``random`` and
against ``single`` on the same questions: McNemar's exact test for accuracy, an exact sign test for
the per-question NLL. Resumable (the comparison folders under ``--out``). Prints a table and writes
``--out``/links_summary.json. Usage:

    .venv/bin/python benchmarks/bench_trained_links.py [--limit 100] [--out runs/demo]
        [--calibrated runs/mini/cal/topology.json] [--batch-size 25]
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import time
from pathlib import Path
from typing import Any

import torch

import recmas_graph as rg
from recmas_graph.eval import resolve_dataset
from recmas_graph.eval.likelihood import choice_question
from recmas_graph.eval.stats import bootstrap_ci, bootstrap_mean_ci, mcnemar_exact, paired_counts, paired_sign_counts


TRAINED, RANDOM = "sequential_light_mini_trained", "sequential_light_mini"
SINGLE, TEXT = f"{TRAINED}:single", f"{TRAINED}:text"


def _records(folder: Path) -> dict[str, dict[str, Any]]:
    lines = (folder / "results.jsonl").read_text(encoding="utf-8").splitlines()
    return {r["id"]: r for r in map(json.loads, lines) if r.get("scoring") == "likelihood"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument("--calibrated", type=Path, default=Path("runs/mini/cal/topology.json"))
    parser.add_argument("--batch-size", type=int, default=25)
    args = parser.parse_args()

    # the README demo's rows and options, so a demo folder (--out runs/demo) is resumed, not redone
    systems: list[Any] = [TRAINED, RANDOM]
    if args.calibrated.is_file():
        systems.append(("calibrated", str(args.calibrated)))
    systems += [SINGLE, TEXT]
    start = time.perf_counter()
    rg.compare(systems, "arc_easy", out=args.out, baselines=False, limit=args.limit, batch_size=args.batch_size,
               scoring="likelihood", greedy=True, max_new_tokens=32, text_message_tokens=16,
               build={"models": None, "model": {}, "device": None, "dtype": None, "seed": 0})  # as recmas compare's
    seconds = time.perf_counter() - start
    names = {TRAINED: "trained", RANDOM: "random", "calibrated": "calibrated", SINGLE: "single", TEXT: "text"}
    gold = {s.id: choice_question(s).gold for s in resolve_dataset("arc_easy", rg.default_registry()).load(args.limit)}
    records = {names[label]: _records(args.out / re.sub(r"[^A-Za-z0-9_.\-]+", "-", label))
               for label in (s[0] if isinstance(s, tuple) else s for s in systems)}
    acc = {name: {k: bool(r["acc"]) for k, r in recs.items()} for name, recs in records.items()}
    nll = {name: {k: -r["loglikelihoods"][gold[k]] / max(r["option_tokens"][gold[k]], 1) for k, r in recs.items()}
           for name, recs in records.items()}
    rows = []
    for name in records:
        a, n = list(acc[name].values()), [bool(r["acc_norm"]) for r in records[name].values()]
        row: dict[str, Any] = {"system": name, "n": len(a), "acc": sum(a) / len(a), "acc_ci": bootstrap_ci(a),
                               "acc_norm": sum(n) / len(n), "answer_nll": sum(nll[name].values()) / len(nll[name]),
                               "answer_nll_ci": bootstrap_mean_ci(list(nll[name].values()))}
        for ref in ("random", "single"):
            if ref != name:
                _, b, c = paired_counts(acc[name], acc[ref])
                _, lower, higher = paired_sign_counts(nll[ref], nll[name])  # ref higher = this lower
                row[f"p_acc_vs_{ref}"] = mcnemar_exact(b, c)
                row[f"nll_lower_vs_{ref}"] = [lower, higher]
                row[f"p_nll_vs_{ref}"] = mcnemar_exact(lower, higher)
        rows.append(row)
    print(f"ARC-Easy test, first {args.limit} questions, by option likelihood ({seconds:.0f} s, "
          f"{platform.node()}, torch {torch.__version__}, {torch.get_num_threads()} threads)")
    print("| system | acc % (95% CI) | p vs random | p vs single | acc_norm % | answer NLL/token (95% CI) "
          "| NLL lower/higher than random (p) | than single (p) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        lo, hi = r["acc_ci"]
        nlo, nhi = r["answer_nll_ci"]

        def p(key: str) -> str:
            return f"{r[key]:.3f}" if key in r else "-"

        def sign(ref: str) -> str:
            return f"{r[f'nll_lower_vs_{ref}'][0]}/{r[f'nll_lower_vs_{ref}'][1]} ({r[f'p_nll_vs_{ref}']:.3g})" \
                if f"nll_lower_vs_{ref}" in r else "-"

        print(f"| {r['system']} | {100 * r['acc']:.1f} ({100 * lo:.1f}-{100 * hi:.1f}) | {p('p_acc_vs_random')} | "
              f"{p('p_acc_vs_single')} | {100 * r['acc_norm']:.1f} | {r['answer_nll']:.4f} ({nlo:.4f}-{nhi:.4f}) | "
              f"{sign('random')} | {sign('single')} |")
    (args.out / "links_summary.json").write_text(json.dumps({"limit": args.limit, "seconds": seconds, "rows": rows},
                                                            indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
