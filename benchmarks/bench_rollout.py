"""Benchmark: KV-cached latent rollout against the reference full recompute.

Prints, for m = 16, 48, 80 latent steps on a packaged real model, the wall time of each method,
the speed-up, and the relative error between their thoughts. Usage:

    .venv/bin/python benchmarks/bench_rollout.py [--model pkg:smollm2-135m-instruct] [--steps 16 48 80]
        [--device cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from recmas_graph.plugins.builtin_roles import BUILTIN_ROLES
from recmas_graph.runtime.agent.agent import Agent
from recmas_graph.runtime.agent.decoding import GenerationOptions
from recmas_graph.runtime.links.modules import InnerLnRes
from recmas_graph.runtime.sources.loaded import load_model
from recmas_graph.topology.spec import AgentSpec

QUESTION = (
    "A farmer has 17 sheep and buys 3 times as many goats as sheep. He then sells a quarter of all his "
    "animals and buys 12 chickens. Later, a storm scares away one third of the chickens, and his "
    "neighbour gives him as many ducks as the number of goats he has left divided by four. "
) * 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pkg:smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, nargs="+", default=[16, 48, 80])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

    torch.manual_seed(0)
    lm = load_model(args.model, device=args.device)
    inner = InnerLnRes(lm.hidden_size).to(lm.device)
    agent = Agent(AgentSpec(name="planner", role="planner", model=args.model), lm, BUILTIN_ROLES["planner"])
    prompt = agent.build_prompts([QUESTION], "math")
    print(f"model {args.model} on {args.device}, prompt {prompt.tokens} tokens, torch threads {torch.get_num_threads()}")
    print(f"{'m':>4} {'cached s':>10} {'recompute s':>12} {'speed-up':>9} {'ms/step cached':>15} {'rel err':>9}")
    rows = []
    for m in args.steps:
        timings = {}
        outs = {}
        for use_cache in (True, False):
            best = float("inf")
            for _ in range(args.repeat):
                if lm.device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                with torch.inference_mode():
                    outs[use_cache] = agent.think(prompt, m, inner, use_cache=use_cache)
                if lm.device.type == "cuda":
                    torch.cuda.synchronize()
                best = min(best, time.perf_counter() - t0)
            timings[use_cache] = best
        rel = ((outs[True] - outs[False]).float().norm() / outs[False].float().norm()).item()
        rows.append({"m": m, "cached_s": timings[True], "recompute_s": timings[False],
                     "speedup": timings[False] / timings[True], "ms_per_step_cached": 1000 * timings[True] / m,
                     "rel_err": rel})
        print(f"{m:>4} {timings[True]:>10.3f} {timings[False]:>12.3f} {timings[False] / timings[True]:>8.1f}x "
              f"{1000 * timings[True] / m:>15.1f} {rel:>9.1e}")
    # The floor to aim at: one cached plain decode step (prefill subtracted).
    n = 48
    with torch.inference_mode():
        t0 = time.perf_counter()
        agent.decode(prompt, GenerationOptions(max_new_tokens=1, do_sample=False), seeds=[0])
        prefill = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = agent.decode(prompt, GenerationOptions(max_new_tokens=n, do_sample=False), seeds=[0])
    steps = max(out.generated_tokens[0], 1)
    per_token = (time.perf_counter() - t0 - prefill) / steps
    print(f"plain cached decode: {1000 * per_token:.1f} ms/token over {steps} tokens (prefill {prefill:.3f} s)")
    if args.json:
        figures = {"model": args.model, "device": str(lm.device), "dtype": str(lm.dtype).removeprefix("torch."),
                   "prompt_tokens": prompt.tokens, "repeat": args.repeat, "rows": rows,
                   "decode_ms_per_token": 1000 * per_token, "decode_tokens": steps, "prefill_s": prefill,
                   "torch": torch.__version__}
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
