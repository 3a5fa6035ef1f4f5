"""Benchmark: what the sandbox's OS boundary costs per code sample.

Scores HumanEval/0 (a correct solution typed with the prompt's imports, plus the gold test
program) with the ``code_tests`` metric (:func:`recmas_graph.eval.scoring.score_code_tests`, which
runs it with :func:`recmas_graph.tools.sandbox.run_python`) ``--runs`` times behind the audit layer
alone and ``--runs`` times behind bubblewrap + the audit layer, interleaved, after one warm-up
each, and prints the median and the spread side by side. Usage:

    .venv/bin/python benchmarks/bench_sandbox.py [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

from recmas_graph.eval.datasets import BUILTIN_DATASETS
from recmas_graph.eval.scoring import METRICS
from recmas_graph.tools.sandbox import os_boundary

SOLUTION = ("```python\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
            "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n```")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="scored runs per boundary (default 10)")
    args = parser.parse_args()
    sample = BUILTIN_DATASETS["humaneval"].load(1)[0]
    metric = METRICS["code_tests"]
    wall = os_boundary()
    modes = ["audit"] + (["strict"] if wall.name else [])
    if not wall.name:
        print(f"bubblewrap not available ({wall.detail}): timing the audit layer alone")
    times: dict[str, list[float]] = {m: [] for m in modes}
    for i in range(args.runs + 1):  # run 0 warms the page cache and the boundary check
        for mode in modes:
            os.environ["RECMAS_SANDBOX"] = mode
            start = time.perf_counter()
            score = metric.score(SOLUTION, sample.gold, sample.meta)
            elapsed = time.perf_counter() - start
            assert score.correct, score.detail
            if i:
                times[mode].append(elapsed)
    print(f"{sample.id}, code_tests, {args.runs} runs each, {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, {platform.platform()}")
    print(f"{'boundary':<28}{'median ms':>10}{'min ms':>9}{'max ms':>9}")
    names = {"audit": "audit layer alone", "strict": "bubblewrap + audit layer"}
    for mode in modes:
        t = [x * 1000 for x in times[mode]]
        print(f"{names[mode]:<28}{statistics.median(t):>10.1f}{min(t):>9.1f}{max(t):>9.1f}")
    if len(modes) == 2:
        extra = statistics.median(times["strict"]) - statistics.median(times["audit"])
        print(f"the OS boundary adds {extra * 1000:.1f} ms per sample "
              f"({statistics.median(times['strict']) / statistics.median(times['audit']):.2f}x)")


if __name__ == "__main__":
    main()
