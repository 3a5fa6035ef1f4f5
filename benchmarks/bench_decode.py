"""Benchmark: decoding of ``system.run`` on a one-agent topology against plain ``model.generate``.

Both decode the same prompt with the same model for the same number of new tokens (no early stop:
end-of-sequence tokens are suppressed in both so the lengths match), greedily and with the
reference's sampling settings (temperature 0.6, top-p 0.95, the model's top-k). The two are timed
alternately in one process, best of ``--repeat``, so machine noise hits both alike. ``system.run``
includes building the prompt; ``generate`` gets the embeddings ready-made. Prints tokens/s of each
and their ratio (target: ``system.run`` within 1.2x of ``generate``), and writes the figures as
JSON. Usage:

    .venv/bin/python benchmarks/bench_decode.py [--model pkg:smollm2-135m-instruct] [--tokens 64]
        [--batch 1] [--device cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

import recmas_graph as rg
from recmas_graph.runtime.sources.loaded import ModelCache

QUESTION = ("A farmer has 17 sheep and buys 3 times as many goats as sheep. He then sells a quarter of all "
            "his animals. How many animals does he have left? Explain each step.")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pkg:smollm2-135m-instruct")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

    spec = (rg.TopologyBuilder("solo", rounds=1, latent_steps=0)
            .agent("solo", role="assistant", model=args.model).output("solo").build())
    system = rg.compile(spec).build(device=args.device, model_cache=ModelCache())
    agent = system.agents["solo"]
    model, device = agent.model, agent.device
    questions = [QUESTION] * args.batch
    prompt = agent.build_prompts(questions, "math")
    eos = list(agent.eos_ids)
    saved = model.generation_config.eos_token_id
    try:
        agent.eos_ids = []  # decode exactly --tokens tokens in both
        model.generation_config.eos_token_id = None
        timings: dict[str, list[float]] = {}
        with torch.inference_mode():
            for mode in ("greedy", "sample"):
                sample = mode == "sample"
                ours_s, hf_s = float("inf"), float("inf")
                for i in range(args.repeat + 1):  # the first round warms both up
                    _sync(device)
                    t0 = time.perf_counter()
                    result = system.run(questions, greedy=not sample, max_new_tokens=args.tokens)
                    _sync(device)
                    ours = time.perf_counter() - t0
                    t0 = time.perf_counter()
                    extra = dict(temperature=0.6, top_p=0.95) if sample else {}
                    hf = model.generate(inputs_embeds=prompt.embeds, attention_mask=prompt.mask, do_sample=sample,
                                        max_new_tokens=args.tokens, min_new_tokens=args.tokens, **extra)
                    _sync(device)
                    theirs = time.perf_counter() - t0
                    if i > 0:
                        ours_s, hf_s = min(ours_s, ours), min(hf_s, theirs)
                timings[mode] = [ours_s, hf_s, sum(result.generated_tokens), hf.shape[0] * hf.shape[1]]
                if not sample:
                    same = result.answers == [agent.tokenizer.decode(r, skip_special_tokens=True) for r in hf.tolist()]
    finally:
        agent.eos_ids = eos
        model.generation_config.eos_token_id = saved
    figures: dict[str, object] = {
        "model": args.model, "device": str(device), "dtype": str(agent.dtype).removeprefix("torch."),
        "batch": args.batch, "new_tokens": args.tokens,
        "prompt_tokens": prompt.tokens // args.batch, "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "machine": platform.processor() or platform.machine(), "same_greedy_text": same,
    }
    print(f"model {args.model} on {device}, batch {args.batch}, prompt {figures['prompt_tokens']} tokens, "
          f"{args.tokens} new tokens, best of {args.repeat}, torch threads {figures['torch_threads']}")
    print(f"{'mode':8}{'system.run s':>14}{'tok/s':>8}{'generate s':>12}{'tok/s':>8}{'ratio':>8}")
    for mode, (ours_s, hf_s, n_ours, n_hf) in timings.items():
        ratio = ours_s / hf_s * n_hf / max(n_ours, 1)
        figures[mode] = {"system_run_s": round(ours_s, 4), "generate_s": round(hf_s, 4),
                         "system_run_tok_s": round(n_ours / ours_s, 2), "generate_tok_s": round(n_hf / hf_s, 2),
                         "ratio": round(ratio, 3)}
        print(f"{mode:8}{ours_s:>14.3f}{n_ours / ours_s:>8.1f}{hf_s:>12.3f}{n_hf / hf_s:>8.1f}{ratio:>8.3f}")
    print(f"ratio = time per token of system.run / generate (target <= 1.2); same greedy text: {same}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
