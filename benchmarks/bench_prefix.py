"""Benchmark: prefix KV reuse across rounds and agents, on and off, side by side in one process.

A pass of a later round starts from the KV cache of its prompt's leading text (system prompt,
role text, question) that an earlier pass of the same model computed, and prefills only the rest.
``system.run(reuse_prefix=...)`` switches it; both settings run alternately on the same questions
(greedy), best of ``--repeat``, and the answers are compared. Prints seconds per run, the prompt
positions prefilled and the share reused, and the speed-up, per batch size and number of rounds;
writes JSON. Usage:

    .venv/bin/python benchmarks/bench_prefix.py [--topology sequential_light_mini] [--batch 1,8]
        [--rounds 1,3] [--latent-steps 8] [--answer-tokens 16] [--repeat 2] [--json out.json]
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
    parser.add_argument("--topology", default="sequential_light_mini")
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--rounds", default="1,3")
    parser.add_argument("--latent-steps", type=int, default=8)
    parser.add_argument("--answer-tokens", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    batches = [int(b) for b in args.batch.split(",")]
    rounds = [int(r) for r in args.rounds.split(",")]
    registry = default_registry()
    questions = [s.question for s in resolve_dataset("gsm8k", registry).load(max(batches))]
    rows = []
    for name in args.topology.split(","):
        system = registry.compile(name).build()
        system.run(questions[:1], greedy=True, max_new_tokens=2, rounds=1, latent_steps=2)  # warm-up
        for R in rounds:
            for batch in batches:
                best = {False: float("inf"), True: float("inf")}
                answers, prompt_tokens, reused = {}, 0, 0
                for _ in range(args.repeat):
                    for reuse in (False, True):
                        t0 = time.perf_counter()
                        result = system.run(questions[:batch], greedy=True, max_new_tokens=args.answer_tokens,
                                            rounds=R, latent_steps=args.latent_steps, reuse_prefix=reuse)
                        best[reuse] = min(best[reuse], time.perf_counter() - t0)
                        answers[reuse] = result.answers
                        if reuse:
                            reused = system.runner.reused_tokens
                            prompt_tokens = sum(r.prompt_tokens for r in result.trace)
                rows.append({"topology": name, "rounds": R, "batch": batch, "full_s": best[False],
                             "reuse_s": best[True], "speedup": best[False] / best[True],
                             "prompt_tokens": prompt_tokens, "reused_tokens": reused,
                             "same_answers": answers[False] == answers[True]})
    print(f"m={args.latent_steps}, {args.answer_tokens} answer tokens, greedy, best of {args.repeat}, "
          f"{platform.machine()} CPU, {torch.get_num_threads()} threads")
    print(f"{'topology':<22} {'R':>2} {'batch':>5} {'full s':>7} {'reuse s':>8} {'speed-up':>9} "
          f"{'prompt pos':>10} {'reused':>7}  same answers")
    for r in rows:
        share = r["reused_tokens"] / max(r["prompt_tokens"], 1)
        print(f"{r['topology']:<22} {r['rounds']:>2} {r['batch']:>5} {r['full_s']:>7.2f} {r['reuse_s']:>8.2f} "
              f"{r['speedup']:>8.2f}x {r['prompt_tokens']:>10} {share:>6.0%}  {r['same_answers']}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"args": vars(args), "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
