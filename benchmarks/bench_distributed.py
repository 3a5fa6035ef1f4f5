"""Benchmark: one system in process against its agents as Ray actors, and an evaluation on Ray workers.

In one process, side by side on the same questions (greedy): (1) ``--topology`` built in process
and with ``build_on_ray`` (agents in Ray actors, ``--cpus-per-actor`` threads each), timing the
build and one run of ``--batch`` GSM8K questions, and checking the answers agree; (2) an evaluation
of ``--limit`` ARC-Easy questions in process and sharded over 1 and 2 Ray workers (each a whole
system, one thread per worker CPU), timing the whole evaluation (worker start included) and
checking the records agree. A local Ray instance with ``--cpus`` CPUs is started. Usage:

    .venv/bin/python benchmarks/bench_distributed.py [--topology sequential_light_mini] [--batch 4]
        [--limit 16] [--eval-batch 4] [--cpus 2] [--cpus-per-actor 1] [--json out.json]
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
from recmas_graph.distributed import build_on_ray, connect
from recmas_graph.eval.datasets import resolve_dataset
from recmas_graph.plugins.manager import default_registry

RUN = {"greedy": True, "max_new_tokens": 32, "rounds": 2, "latent_steps": 8}


def _strip(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("wall_s", "peak_mem_bytes")} for r in records]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--topology", default="sequential_light_mini")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--limit", type=int, default=16)
    parser.add_argument("--eval-batch", type=int, default=4)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--cpus-per-actor", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    connect(num_cpus=args.cpus)
    compiled = rg.compile(args.topology)
    questions = [s.question for s in resolve_dataset("gsm8k", default_registry()).load(args.batch)]
    rows: dict[str, dict] = {}

    t0 = time.perf_counter()
    local = compiled.build()
    t1 = time.perf_counter()
    local_result = local.run(questions, **RUN)
    t2 = time.perf_counter()
    rows["run: in process"] = {"build_s": t1 - t0, "run_s": t2 - t1}
    del local
    t0 = time.perf_counter()
    remote = build_on_ray(compiled, cpus_per_actor=args.cpus_per_actor)
    t1 = time.perf_counter()
    remote_result = remote.run(questions, **RUN)
    t2 = time.perf_counter()
    remote.runner.shutdown()
    rows["run: Ray actors"] = {"build_s": t1 - t0, "run_s": t2 - t1,
                               "same": remote_result.answers == local_result.answers}

    options = {"limit": args.limit, "batch_size": args.eval_batch, "generation": {"greedy": True},
               "scoring": "generate"}  # the figures in docs/performance.md time generation
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        single = rg.evaluate(args.topology, "arc_easy", out=Path(tmp) / "single", **options)
        rows["eval: in process"] = {"eval_s": time.perf_counter() - t0, "accuracy": single.accuracy}
        for workers in (1, 2):
            t0 = time.perf_counter()
            sharded = rg.evaluate(args.topology, "arc_easy", out=Path(tmp) / f"w{workers}", workers=workers,
                                  **options)
            rows[f"eval: {workers} Ray worker(s)"] = {"eval_s": time.perf_counter() - t0,
                                                      "accuracy": sharded.accuracy,
                                                      "same": _strip(sharded.records) == _strip(single.records)}

    print(f"{args.topology}, {platform.machine()} CPU, {args.cpus} Ray CPUs, torch threads here "
          f"{torch.get_num_threads()}; run: batch {args.batch}, R={RUN['rounds']}, m={RUN['latent_steps']}, "
          f"{RUN['max_new_tokens']} tokens; eval: ARC-Easy {args.limit} at batch {args.eval_batch}")
    print(f"{'':<26} {'build s':>8} {'run s':>7} {'eval s':>7} {'q/hour':>7}  same as in process")
    for name, r in rows.items():
        rate = f"{3600 * args.limit / r['eval_s']:.0f}" if "eval_s" in r else "-"
        print(f"{name:<26} {r.get('build_s', float('nan')):>8.1f} {r.get('run_s', float('nan')):>7.1f} "
              f"{r.get('eval_s', float('nan')):>7.1f} {rate:>7}  {r.get('same', '-')}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"args": vars(args), "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
