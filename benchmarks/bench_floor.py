"""Benchmark: a whole run against the floor of the forward passes its schedule needs (the executor's own cost).

Runs ``--topology`` on ``--batch`` GSM8K questions (greedy) and records each pass's padded prompt
shape, latent steps and decode steps. The floor replays exactly those model calls alone, on inputs
of the same shapes: a prefill of the prompt, then ``m - 1`` cached one-position backbone calls for a
latent pass, or ``n - 1`` cached one-position LM calls (with an on-device argmax) for ``n`` decoded
tokens. A prefill that started from a reused prompt prefix (docs/running.md) is replayed as the
positions it computed, on a cache of the reused length built beforehand and not timed. Everything else a run does (templating, tokenising, splicing messages, links, sampling
logic, bookkeeping) is the executor's cost, ``run / floor - 1``. Run and floor are timed alternately,
best of ``--repeat``, in one process. Prints both per batch size and their ratio (target: within
1.05x at batch 1 and 8); writes the figures as JSON. Usage:

    .venv/bin/python benchmarks/bench_floor.py [--topology sequential_light_mini] [--batch 1,8]
        [--rounds 3] [--latent-steps 8] [--answer-tokens 32] [--text-tokens 16] [--device cpu]
        [--no-reuse-prefix] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass

import torch

import recmas_graph as rg
from recmas_graph.eval.datasets import resolve_dataset
from recmas_graph.runtime.agent import decoding, prefix, rollout
from recmas_graph.runtime.agent.agent import Agent
from recmas_graph.runtime.agent.forward import backbone_forward, lm_forward, position_ids_from_mask
from recmas_graph.runtime.sources.loaded import ModelCache


@dataclass
class Call:
    """One pass's model work: which agent, the padded prompt (B, T), and how many forwards follow the prefill."""

    agent: str
    kind: str  # "latent" or "decode"
    batch: int
    length: int  # prompt positions the prefill computed
    steps: int  # latent: m - 1 appended positions; decode: tokens decoded after the prefill's first
    cached: int = 0  # positions the prefill started from (a reused prefix; padded)


class Recorder:
    """Wraps Agent.think / Agent.decode to record the shapes of the calls a run makes."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._think, self._decode = Agent.think, Agent.decode
        self._prefill = prefix.prefill
        self._shapes: list[tuple[int, int]] = []  # (cached, computed) of each prefill

    def _shape(self, T: int) -> tuple[int, int]:
        """The first prefill the call made (cached, computed), or a full one of ``T`` positions."""
        found = self._shapes[0] if self._shapes else (0, T)
        self._shapes.clear()
        return found

    def __enter__(self) -> "Recorder":
        recorder = self

        def prefill(forward, prompt, config):
            out, cache, mask, positions = recorder._prefill(forward, prompt, config)
            recorder._shapes.append((mask.shape[1] - positions.shape[1], positions.shape[1]))
            return out, cache, mask, positions

        def think(agent, prompt, steps, inner, **kw):
            out = recorder._think(agent, prompt, steps, inner, **kw)
            B, T, _ = prompt.embeds.shape
            cached, length = recorder._shape(T)
            recorder.calls.append(Call(agent.name, "latent", B, length, max(steps - 1, 0), cached))
            return out

        def decode(agent, prompt, options, **kw):
            result = recorder._decode(agent, prompt, options, **kw)
            B, T, _ = prompt.embeds.shape
            most = max(result.generated_tokens, default=0)
            n = min(most + 1, options.max_new_tokens)  # the end-of-sequence token is a step too
            cached, length = recorder._shape(T)
            recorder.calls.append(Call(agent.name, "decode", B, length, max(n - 1, 0), cached))
            return result

        Agent.think, Agent.decode = think, decode
        rollout.prefill = decoding.prefill = prefill
        return self

    def __exit__(self, *exc) -> None:
        Agent.think, Agent.decode = self._think, self._decode
        rollout.prefill = decoding.prefill = self._prefill


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@torch.inference_mode()
def _floor(system, calls: list[Call]) -> float:
    """Time the model calls alone, on random inputs of the recorded shapes (a reused prefix's cache
    is built before the clock starts for its call)."""
    total = 0.0
    for call in calls:
        agent = system.agents[call.agent]
        embed = agent.model.get_input_embeddings()
        ids = torch.randint(0, embed.weight.shape[0], (call.batch, call.cached + call.length), device=agent.device)
        embeds = embed(ids)  # (B, L + T, H)
        mask = torch.ones(call.batch, call.cached + call.length, dtype=torch.long, device=agent.device)
        positions = position_ids_from_mask(mask)[:, call.cached:]  # (B, T)
        cache = None
        if call.cached:  # the reused prefix: not part of the floor
            _, cache = backbone_forward(agent.backbone, embeds[:, :call.cached], mask[:, :call.cached],
                                        position_ids_from_mask(mask[:, :call.cached]), use_cache=True)
        embeds = embeds[:, call.cached:]
        _sync()
        t0 = time.perf_counter()
        if call.kind == "latent":
            hidden, cache = backbone_forward(agent.backbone, embeds, mask, positions, cache=cache, use_cache=True)
            step = hidden[:, -1:]  # (B, 1, H): stands in for inner(h)
            for i in range(call.steps):
                mask = torch.cat([mask, mask.new_ones(call.batch, 1)], dim=1)
                hidden, cache = backbone_forward(agent.backbone, step, mask, positions[:, -1:] + 1 + i, cache=cache,
                                                 use_cache=True)
                step = hidden[:, -1:]
        else:
            logits, cache = lm_forward(agent.model, embeds, mask, positions, cache)
            for i in range(call.steps):
                token = logits[:, -1].argmax(-1, keepdim=True)  # (B, 1), on the device
                mask = torch.cat([mask, mask.new_ones(call.batch, 1)], dim=1)
                logits, cache = lm_forward(agent.model, embed(token), mask, positions[:, -1:] + 1 + i, cache=cache)
        _sync()
        total += time.perf_counter() - t0
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", default="sequential_light_mini")
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latent-steps", type=int, default=8)
    parser.add_argument("--answer-tokens", type=int, default=32)
    parser.add_argument("--text-tokens", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--models", default=None, help="'tiny' for a quick check on tiny random models")
    parser.add_argument("--no-reuse-prefix", action="store_true", help="prefill every prompt in full")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    registry = rg.default_registry()
    batches = [int(b) for b in args.batch.split(",")]
    questions = [s.question for s in resolve_dataset("gsm8k", registry).load(max(batches))]
    system = rg.compile(args.topology).build(models=args.models, seed=0, device=args.device, model_cache=ModelCache())
    options = dict(rounds=args.rounds, latent_steps=args.latent_steps, greedy=True, max_new_tokens=args.answer_tokens,
                   text_message_tokens=args.text_tokens, reuse_prefix=not args.no_reuse_prefix)
    system.run(questions[:1], **options)  # warm-up
    rows = []
    for batch in batches:
        qs = questions[:batch]
        best_run = best_floor = float("inf")
        for _ in range(args.repeat):
            with Recorder() as rec:
                _sync()
                t0 = time.perf_counter()
                system.run(qs, **options)
                _sync()
                best_run = min(best_run, time.perf_counter() - t0)
            best_floor = min(best_floor, _floor(system, rec.calls))
        forwards = sum(1 + c.steps for c in rec.calls)
        rows.append({"batch": batch, "run_s": best_run, "floor_s": best_floor, "ratio": best_run / best_floor,
                     "passes": len(rec.calls), "forwards": forwards, "questions_per_s": batch / best_run})
    print(f"{args.topology}: whole run vs the floor of its forward passes (R = {args.rounds}, m = "
          f"{args.latent_steps}, answers <= {args.answer_tokens}, text <= {args.text_tokens}, greedy, "
          f"{args.device}, best of {args.repeat})")
    print(f"{'batch':>5} {'passes':>6} {'forwards':>8} {'run s':>8} {'floor s':>8} {'run/floor':>9} {'q/s':>6}")
    for r in rows:
        print(f"{r['batch']:>5} {r['passes']:>6} {r['forwards']:>8} {r['run_s']:8.2f} {r['floor_s']:8.2f} "
              f"{r['ratio']:8.3f}x {r['questions_per_s']:6.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"topology": args.topology, "rows": rows, "options": vars(args), "torch": torch.__version__,
                       "machine": platform.processor() or platform.machine()}, handle, indent=2)


if __name__ == "__main__":
    main()
