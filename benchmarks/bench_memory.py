"""Benchmark: low-memory mode against a normal build, on the packaged models (time, peak memory, loads).

Each mode runs in its own Python process (so each peak is that process's own): it builds
``--topology`` (normal, or ``low_memory=True``), answers ``--batch`` GSM8K questions greedily, and
reports the build and run times, the resident set after the imports, its peak (``ru_maxrss``), and
how many times low-memory mode loaded a model. The answers of both modes are compared. Usage:

    .venv/bin/python benchmarks/bench_memory.py [--topology sequential_light_mini] [--batch 4]
        [--rounds 2] [--latent-steps 8] [--answer-tokens 32] [--device cpu|cuda] [--json out.json]

On a GPU (``--device cuda``, the default when one is present) it also prints each mode's CUDA peak
(``torch.cuda.max_memory_allocated``), the figure low-memory mode is for.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys

import torch

CHILD = r"""
import json, resource, sys, time
import torch
import recmas_graph as rg
from recmas_graph.eval.datasets import resolve_dataset
from recmas_graph.runtime.memory.peak import resident_bytes
args = json.loads(sys.argv[1])
from recmas_graph.plugins.manager import default_registry
questions = [s.question for s in resolve_dataset("gsm8k", default_registry()).load(args["batch"])]
base = resident_bytes()
t0 = time.perf_counter()
system = rg.compile(args["topology"]).build(low_memory=args["low_memory"], device=args["device"])
built = time.perf_counter()
after_build = resident_bytes()
result = system.run(questions, greedy=True, max_new_tokens=args["answer_tokens"], rounds=args["rounds"],
                    latent_steps=args["latent_steps"])
done = time.perf_counter()
cuda = torch.cuda.max_memory_allocated() / 2**20 if args["device"].startswith("cuda") else None
print(json.dumps({"cuda_peak_mb": cuda, "build_s": built - t0, "run_s": done - built, "base_mb": base / 2**20,
                  "after_build_mb": after_build / 2**20,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "loads": system.residency.loads if system.residency else None, "answers": result.answers}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--topology", default="sequential_light_mini")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--latent-steps", type=int, default=8)
    parser.add_argument("--answer-tokens", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    figures = {}
    for mode in ("normal", "low-memory"):
        options = {"topology": args.topology, "batch": args.batch, "rounds": args.rounds,
                   "latent_steps": args.latent_steps, "answer_tokens": args.answer_tokens,
                   "low_memory": mode == "low-memory", "device": args.device}
        out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(options)], capture_output=True, text=True,
                             check=True)
        figures[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    same = figures["normal"]["answers"] == figures["low-memory"]["answers"]
    print(f"{args.topology}: batch {args.batch}, R={args.rounds}, m={args.latent_steps}, "
          f"{args.answer_tokens} answer tokens ({platform.machine()}, {args.device})")
    print(f"{'mode':<11} {'build s':>8} {'run s':>7} {'RSS after imports MB':>21} {'peak RSS MB':>12} "
          f"{'peak - imports MB':>18} {'loads':>6}")
    for mode, f in figures.items():
        print(f"{mode:<11} {f['build_s']:>8.1f} {f['run_s']:>7.1f} {f['base_mb']:>21.0f} {f['peak_mb']:>12.0f} "
              f"{f['peak_mb'] - f['base_mb']:>18.0f} {f['loads'] if f['loads'] is not None else '-':>6}")
    if args.device.startswith("cuda"):
        for mode, f in figures.items():
            print(f"{mode}: CUDA peak allocated {f['cuda_peak_mb']:.0f} MB")
    print(f"same answers: {same}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"args": vars(args), "figures": figures, "same_answers": same}, handle, indent=2)


if __name__ == "__main__":
    main()
