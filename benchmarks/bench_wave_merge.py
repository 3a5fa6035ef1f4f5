"""Benchmark: latent passes of one wave that share a model, run as one batched pass or one by one.

In mixture_mini the math and science experts share Gemma-3-270M (the code expert has SmolLM2);
in the debate plugin's topology both debaters share SmolLM2. ``system.runner.merge`` switches the
fast path; both settings run alternately on the same questions (greedy), best of ``--repeat``, in
one process, and the answers are compared. Prints seconds per run and the speed-up per batch size;
writes JSON. Usage:

    .venv/bin/python benchmarks/bench_wave_merge.py [--topology mixture_mini,debate] [--batch 1,4]
        [--rounds 2] [--latent-steps 8] [--answer-tokens 16] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from recmas_graph.eval.datasets import resolve_dataset
from recmas_graph.plugins.manager import default_registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--topology", default="mixture_mini,debate")
    parser.add_argument("--batch", default="1,4")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--latent-steps", type=int, default=8)
    parser.add_argument("--answer-tokens", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    batches = [int(b) for b in args.batch.split(",")]
    registry = default_registry()
    questions = [s.question for s in resolve_dataset("gsm8k", registry).load(max(batches))]
    rows = []
    for name in args.topology.split(","):
        system = registry.compile(name).build()
        for batch in batches:
            best = {False: float("inf"), True: float("inf")}
            answers = {}
            for _ in range(args.repeat):
                for merge in (False, True):
                    system.runner.merge = merge
                    t0 = time.perf_counter()
                    result = system.run(questions[:batch], greedy=True, max_new_tokens=args.answer_tokens,
                                        rounds=args.rounds, latent_steps=args.latent_steps)
                    best[merge] = min(best[merge], time.perf_counter() - t0)
                    answers[merge] = result.answers
            rows.append({"topology": name, "batch": batch, "separate_s": best[False], "merged_s": best[True],
                         "speedup": best[False] / best[True], "same_answers": answers[False] == answers[True]})
    print(f"R={args.rounds}, m={args.latent_steps}, {args.answer_tokens} answer tokens, best of {args.repeat}, "
          f"{platform.machine()} CPU, {torch.get_num_threads()} threads")
    print(f"{'topology':<14} {'batch':>5} {'separate s':>11} {'merged s':>9} {'speed-up':>9}  same answers")
    for r in rows:
        print(f"{r['topology']:<14} {r['batch']:>5} {r['separate_s']:>11.2f} {r['merged_s']:>9.2f} "
              f"{r['speedup']:>8.2f}x  {r['same_answers']}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"args": vars(args), "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
