"""Benchmark: what the links are worth. Random, calibrated and calibrated + briefly trained links of one topology.

On the packaged models, for ``--topology`` (default ``sequential_light_mini``):

1. calibrates its links on the first ``--corpus`` GSM8K samples (question + worked solution);
2. with ``--train-steps K``, trains the calibrated system's outer links for K steps of the outer
   loop (answer loss, batch ``--train-batch``) on those same GSM8K samples (with
   ``--train-random``, the random links too: is calibration a better start?);
3. measures the held-out answer NLL (``system.answer_loss``: teacher-forced cross-entropy per
   answer token of the output agent) on GSM8K samples neither step saw, for the random links, the
   calibrated links, the trained links and the output agent alone (``T:single``: no messages);
4. with ``--accuracy N``, compares them on the first N ARC-Easy questions (accuracy, 95%
   interval, McNemar's paired test against random links) with :func:`recmas_graph.compare`.

Prints one table and writes the figures as JSON. Usage:

    .venv/bin/python benchmarks/bench_links.py [--topology sequential_light_mini] [--corpus 64]
        [--heldout 16] [--train-steps 12] [--train-random] [--accuracy 24] [--out runs/bench_links] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import recmas_graph as rg
from recmas_graph.eval.baselines import single
from recmas_graph.eval.datasets import resolve_dataset
from recmas_graph.runtime.sources.loaded import ModelCache
from recmas_graph.train import calibrate, corpus_from_dataset
from recmas_graph.train.data import make_train_data
from recmas_graph.train.loop import TrainConfig
from recmas_graph.train.run import train_links


def _nll(system, questions, answers, batch: int = 4) -> float:
    """Mean answer NLL per token over the questions (batches weighted by their answer tokens)."""
    total, tokens = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(questions), batch):
            qs, ans = questions[i:i + batch], answers[i:i + batch]
            n = sum(len(system.agents[system.spec.output].tokenizer(a).input_ids) for a in ans)
            total += float(system.answer_loss(qs, ans)) * n
            tokens += n
    return total / tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", default="sequential_light_mini")
    parser.add_argument("--corpus", type=int, default=64, help="GSM8K samples to calibrate on")
    parser.add_argument("--heldout", type=int, default=16, help="GSM8K samples (after the corpus) to score")
    parser.add_argument("--accuracy", type=int, default=0, help="ARC-Easy questions to compare on (0: skip)")
    parser.add_argument("--train-steps", type=int, default=0, help="outer-loop steps after calibration (0: skip)")
    parser.add_argument("--train-batch", type=int, default=2)
    parser.add_argument("--train-random", action="store_true",
                        help="also train the random links for --train-steps (is calibration a better start?)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--out", default="runs/bench_links")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    registry = rg.default_registry()
    cache = ModelCache()
    out = Path(args.out)
    samples = resolve_dataset("gsm8k", registry).load(args.corpus + args.heldout)[args.corpus:]
    questions, answers = [s.question for s in samples], [s.meta["solution"] for s in samples]

    compiled = rg.compile(args.topology)
    random_links = compiled.build(seed=0, model_cache=cache)
    calibrated = compiled.build(seed=0, model_cache=cache)
    t0 = time.perf_counter()
    report = calibrate(calibrated, corpus_from_dataset("gsm8k", registry, limit=args.corpus), out=out / "calibrated")
    calibrate_s = time.perf_counter() - t0
    alone = rg.compile(single(compiled.spec)).build(seed=0, model_cache=cache)
    systems = [("random links", random_links, args.topology), ("calibrated links", calibrated, str(report.topology))]
    train_s = None
    if args.train_steps:
        data, _ = make_train_data("gsm8k", registry, train=args.corpus)
        config = TrainConfig(steps=args.train_steps, batch_size=args.train_batch, lr=args.lr, warmup=2,
                             save_every=args.train_steps, eval_every=args.train_steps)
        starts = [("calibrated", str(report.topology), "trained")]
        if args.train_random:
            starts.append(("random", args.topology, "trained_random"))
        for start, topology, folder in starts:
            trained = rg.compile(topology).build(seed=0, model_cache=cache)
            t0 = time.perf_counter()
            train_links(trained, "outer", data, out / folder, config, heldout=0)
            train_s = (train_s or {}) | {start: time.perf_counter() - t0}
            systems.append((f"{start} + {args.train_steps} outer steps", trained, str(out / folder / "topology.json")))

    rows = []
    for label, system in [(label, system) for label, system, _ in systems] + [("single (no messages)", alone)]:
        t0 = time.perf_counter()
        rows.append({"system": label, "heldout_nll": _nll(system, questions, answers),
                     "nll_s": time.perf_counter() - t0})
    link_loss = {f"{f.kind} {f.name}": (f.loss_before, f.loss_after) for f in report.links}

    accuracy = None
    if args.accuracy:
        cmp = rg.compare([(label, ref) for label, _, ref in systems], "arc_easy",
                         out=out / "compare", baselines=False, limit=args.accuracy, batch_size=args.accuracy,
                         generation={"greedy": True, "max_new_tokens": 32}, build={"model_cache": cache})
        accuracy = cmp.rows

    trained_note = "".join(f", {start} links trained {args.train_steps} outer steps in {s:.0f} s"
                           for start, s in (train_s or {}).items())
    print(f"{args.topology}: calibrated on {args.corpus} GSM8K texts in {calibrate_s:.0f} s{trained_note}; "
          f"held-out answer NLL on {args.heldout} other GSM8K solutions")
    print(f"{'system':34} {'held-out NLL':>13}")
    for row in rows:
        print(f"{row['system']:34} {row['heldout_nll']:13.4f}")
    print(f"{'link':28} {'loss random':>12} {'calibrated':>11}  (held-out corpus texts)")
    for name, (before, after) in link_loss.items():
        print(f"{name:28} {before:12.3f} {after:11.3f}")
    if accuracy:
        print(f"{'ARC-Easy':34} {'acc %':>6} {'95% CI':>12} {'p vs first':>11}")
        first = accuracy[0]["system"]
        for row in accuracy:
            p = (row.get("paired") or {}).get(first, {}).get("p_value") if row["system"] != first else None
            print(f"{row['system']:34} {100 * row['accuracy']:6.1f} {100 * row['ci_low']:5.1f}-{100 * row['ci_high']:<5.1f}"
                  f" {'-' if p is None else f'{p:.3f}':>11}")
    figures = {"topology": args.topology, "corpus": args.corpus, "heldout": args.heldout, "calibrate_s": calibrate_s, "train_steps": args.train_steps, "train_s": train_s,
               "nll": rows, "link_loss": link_loss, "accuracy": accuracy, "torch": torch.__version__,
               "machine": platform.processor() or platform.machine()}
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
