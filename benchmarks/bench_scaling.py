"""Benchmark: how a run's time and peak memory scale with batch size, rounds, latent steps and agents.

One process, the packaged models loaded once (``ModelCache``), GSM8K questions, greedy answers of
``--answer-tokens``. Four sweeps around a base setting (``--topology``, R = 3, m = 8, batch 4):

1. batch size 1-32 (questions per second at each: the throughput curve);
2. rounds 1-4;
3. latent steps 4-32 (R = 1);
4. agents: the ``_mini`` styles with 2, 3 and 4 agents (R = 1).

Peak memory is the largest per-pass figure of the run's trace (CUDA: the device's peak; CPU: the
increase of the resident set during the pass). Prints one table per sweep and writes the figures as
JSON. Usage:

    .venv/bin/python benchmarks/bench_scaling.py [--batches 1,2,4,8,16,32] [--answer-tokens 16]
        [--sweeps batch,rounds,latent,agents] [--device cpu] [--json out.json]
        [--questions-file questions.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

import recmas_graph as rg
from recmas_graph.eval.datasets import resolve_dataset
from recmas_graph.runtime.sources.loaded import ModelCache

AGENT_STYLES = {2: "distillation_mini", 3: "sequential_light_mini", 4: "mixture_mini"}


def _run(system, questions, *, rounds: int, latent_steps: int, answer_tokens: int) -> dict:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    result = system.run(questions, rounds=rounds, latent_steps=latent_steps, greedy=True,
                        max_new_tokens=answer_tokens)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "questions_per_s": len(questions) / wall,
            "peak_mb": max((r.peak_mem_bytes for r in result.trace), default=0) / 2**20,
            "passes": len(result.trace)}


def _table(title: str, key: str, rows: list[dict]) -> None:
    print(title)
    print(f"{key:>8} {'wall s':>8} {'q/s':>7} {'peak MB':>8} {'passes':>6}")
    for r in rows:
        print(f"{r[key]:>8} {r['wall_s']:8.2f} {r['questions_per_s']:7.3f} {r['peak_mb']:8.0f} {r['passes']:>6}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", default="sequential_light_mini")
    parser.add_argument("--batches", default="1,2,4,8,16,32")
    parser.add_argument("--answer-tokens", type=int, default=16)
    parser.add_argument("--sweeps", default="batch,rounds,latent,agents")
    parser.add_argument("--models", default=None, help="'tiny' for a quick check on tiny random models")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None)
    parser.add_argument("--questions-file", default=None,
                        help="a JSON file with a list of questions (or {'questions': [...]}) instead of GSM8K")
    args = parser.parse_args()

    registry = rg.default_registry()
    batches = [int(b) for b in args.batches.split(",")]
    if args.questions_file:
        loaded = json.loads(open(args.questions_file, encoding="utf-8").read())
        questions = list(loaded["questions"] if isinstance(loaded, dict) else loaded)[:max(batches + [4])]
    else:
        questions = [s.question for s in resolve_dataset("gsm8k", registry).load(max(batches + [4]))]
    cache = ModelCache()
    build = dict(models=args.models, seed=0, device=args.device, model_cache=cache)
    system = rg.compile(args.topology).build(**build)
    tokens = args.answer_tokens
    _run(system, questions[:1], rounds=1, latent_steps=2, answer_tokens=2)  # warm-up
    sweeps = args.sweeps.split(",")
    figures: dict[str, list[dict]] = {}
    if "batch" in sweeps:
        figures["batch"] = [{"batch": b, **_run(system, questions[:b], rounds=3, latent_steps=8, answer_tokens=tokens)}
                            for b in batches]
        _table(f"{args.topology}, R = 3, m = 8, answers <= {tokens}: batch size", "batch", figures["batch"])
    if "rounds" in sweeps:
        figures["rounds"] = [{"rounds": r, **_run(system, questions[:4], rounds=r, latent_steps=8, answer_tokens=tokens)}
                             for r in (1, 2, 3, 4)]
        _table(f"{args.topology}, batch 4, m = 8: rounds", "rounds", figures["rounds"])
    if "latent" in sweeps:
        figures["latent"] = [{"m": m, **_run(system, questions[:4], rounds=1, latent_steps=m, answer_tokens=tokens)}
                             for m in (4, 8, 16, 32)]
        _table("batch 4, R = 1: latent steps", "m", figures["latent"])
    if "agents" in sweeps:
        figures["agents"] = []
        for n, name in AGENT_STYLES.items():
            other = rg.compile(name).build(**build)
            figures["agents"].append({"agents": n, "topology": name,
                                      **_run(other, questions[:4], rounds=1, latent_steps=8, answer_tokens=tokens)})
        _table("batch 4, R = 1, m = 8: agents (distillation_mini, sequential_light_mini, mixture_mini)", "agents",
               figures["agents"])
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"topology": args.topology, "answer_tokens": tokens, "device": args.device, **figures,
                       "torch": torch.__version__, "machine": platform.processor() or platform.machine()},
                      handle, indent=2)


if __name__ == "__main__":
    main()
