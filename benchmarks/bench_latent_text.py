"""Benchmark: latent collaboration against the same topology with text edges (the paper's Recursive-TextMAS).

For R = 1, 2, 3 rounds, the ``--topology`` system (latent edges) and its ``text`` baseline (every
edge's medium set to text, :func:`recmas_graph.eval.baselines.all_text`) answer the same
``--questions`` GSM8K questions in one batch with the same decoding (greedy, answers up to
``--answer-tokens``, text messages up to ``--text-tokens``). The two are run alternately, best of
``--repeat``, in one process, so machine noise hits both alike. Prints, per R, the wall time of each,
the speed-up (text time / latent time) and the reduction in generated tokens (every token any
agent generated: text messages and answers), beside the paper's 1.2x / 1.9x / 2.4x and
34.6% / 65.5% / 75.6%; writes the figures as JSON. Usage:

    .venv/bin/python benchmarks/bench_latent_text.py [--topology sequential_light_mini] [--questions 4]
        [--latent-steps 8] [--text-tokens 64] [--answer-tokens 64] [--device cpu] [--json out.json]
        [--questions-file questions.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

import recmas_graph as rg
from recmas_graph.eval.baselines import all_text
from recmas_graph.eval.datasets import resolve_dataset
from recmas_graph.runtime.sources.loaded import ModelCache

PAPER = {1: (1.2, 34.6), 2: (1.9, 65.5), 3: (2.4, 75.6)}  # speed-up, % fewer tokens (RecursiveMAS paper)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(system, questions, rounds: int, args) -> tuple[float, int, list[str]]:
    _sync()
    t0 = time.perf_counter()
    result = system.run(questions, rounds=rounds, latent_steps=args.latent_steps, greedy=True,
                        max_new_tokens=args.answer_tokens, text_message_tokens=args.text_tokens)
    _sync()
    return time.perf_counter() - t0, sum(result.question_tokens), result.answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", default="sequential_light_mini")
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--rounds", default="1,2,3")
    parser.add_argument("--latent-steps", type=int, default=8)
    parser.add_argument("--text-tokens", type=int, default=64, help="longest text message (tokens)")
    parser.add_argument("--answer-tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default=None, help="'tiny' for a quick check on tiny random models")
    parser.add_argument("--json", default=None)
    parser.add_argument("--questions-file", default=None,
                        help="a JSON file with a list of questions (or {'questions': [...]}) instead of GSM8K")
    args = parser.parse_args()

    registry = rg.default_registry()
    if args.questions_file:
        loaded = json.loads(open(args.questions_file, encoding="utf-8").read())
        questions = list(loaded["questions"] if isinstance(loaded, dict) else loaded)[:args.questions]
    else:
        questions = [s.question for s in resolve_dataset("gsm8k", registry).load(args.questions)]
    cache = ModelCache()
    compiled = rg.compile(args.topology)
    latent = compiled.build(models=args.models, seed=0, device=args.device, model_cache=cache)
    text = rg.compile(all_text(compiled.spec)).build(models=args.models, seed=0, device=args.device, model_cache=cache)
    for system in (latent, text):
        _timed(system, questions[:1], 1, args)  # warm-up (first-call allocations)
    rows = []
    for rounds in [int(r) for r in args.rounds.split(",")]:
        best = {"latent": (float("inf"), 0), "text": (float("inf"), 0)}
        for _ in range(args.repeat):
            for name, system in (("latent", latent), ("text", text)):
                wall, tokens, _ = _timed(system, questions, rounds, args)
                if wall < best[name][0]:
                    best[name] = (wall, tokens)
        (lat_s, lat_tok), (txt_s, txt_tok) = best["latent"], best["text"]
        rows.append({"rounds": rounds, "latent_s": lat_s, "text_s": txt_s, "speedup": txt_s / lat_s,
                     "latent_tokens": lat_tok, "text_tokens": txt_tok,
                     "token_reduction": 1 - lat_tok / max(txt_tok, 1)})
    print(f"{args.topology} vs its text baseline: {args.questions} GSM8K questions in one batch, greedy, m = "
          f"{args.latent_steps}, text messages <= {args.text_tokens} tokens, answers <= {args.answer_tokens} "
          f"({args.device}, best of {args.repeat})")
    print(f"{'R':>2} {'latent s':>9} {'text s':>8} {'speed-up':>9} {'paper':>6} {'tokens latent':>14} "
          f"{'text':>6} {'fewer':>7} {'paper':>6}")
    for r in rows:
        paper = PAPER.get(r["rounds"], (None, None))
        print(f"{r['rounds']:>2} {r['latent_s']:9.2f} {r['text_s']:8.2f} {r['speedup']:8.2f}x "
              f"{paper[0] or '-':>5}x {r['latent_tokens']:14d} {r['text_tokens']:6d} "
              f"{100 * r['token_reduction']:6.1f}% {paper[1] or '-':>5}%")
    if args.json:
        figures = {"topology": args.topology, "questions": args.questions, "latent_steps": args.latent_steps,
                   "text_tokens": args.text_tokens, "answer_tokens": args.answer_tokens, "device": args.device,
                   "rows": rows, "torch": torch.__version__, "machine": platform.processor() or platform.machine()}
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
