"""Successive halving on the number of questions: rungs, chunked evaluations that are never repeated.

The questions a search may use are cut into chunks at the rung sizes (e.g. 4, 12, 36): a variant
evaluated up to rung ``k`` has run the chunks ``0..k``, each an ordinary evaluation folder
(``DIR/evals/<variant>/q<a>-<b>/``, the records format of :func:`recmas_graph.eval.evaluate`).
Growing to the next rung runs only the next chunk; a variant proposed again, a resumed search or
the final front reads the records back. Nothing is scored twice.

>>> rung_sizes(36, min_questions=4, eta=3)
[4, 12, 36]
>>> rung_sizes(30, min_questions=4, eta=3)
[4, 12, 30]
>>> rung_sizes(5, min_questions=8, eta=3)
[5]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..eval.datasets import Dataset, Sample
from ..eval.evaluate import EvalProgress, evaluate

__all__ = ["COSTS", "rung_sizes", "default_min_questions", "Chunks", "objectives", "promote", "pareto_ranks"]

#: Cost objectives: mean seconds per question, or mean generated tokens + latent steps per question.
COSTS: tuple[str, ...] = ("tokens", "seconds")


def rung_sizes(limit: int, *, min_questions: int, eta: int) -> list[int]:
    """The question counts of the rungs: ``min_questions`` times powers of ``eta``, ending at ``limit``."""
    sizes, n = [], max(1, min(min_questions, limit))
    while n < limit:
        sizes.append(n)
        n *= max(eta, 2)
    sizes.append(limit)
    return sizes


def default_min_questions(limit: int, eta: int) -> int:
    """The first rung when none is given: ``limit / eta**2`` (three rungs), at least 4 questions."""
    return min(limit, max(4, math.ceil(limit / max(eta, 2) ** 2)))


@dataclass(frozen=True)
class Chunks:
    """The search's questions cut at the rung sizes, and how each chunk is evaluated."""

    dataset: Dataset
    samples: tuple[Sample, ...]
    sizes: tuple[int, ...]
    folder: Path
    evaluation: Mapping[str, Any]  # keywords of evaluate (registry, build, options, batch_size, scoring, ...)

    def bounds(self, rung: int) -> list[tuple[int, int]]:
        """The ``(start, end)`` of the chunks up to ``rung``."""
        edges = (0, *self.sizes)
        return [(edges[i], edges[i + 1]) for i in range(rung + 1)]

    def run(self, variant: Any, rung: int, *, progress: Callable[[EvalProgress], None] | None = None,
            on_chunk: Callable[[str, int], None] | None = None) -> list[dict[str, Any]]:
        """The records of ``variant`` (a :class:`~.space.Variant`) on the questions of rungs ``0..rung``;
        only chunks not yet in its folders run. ``on_chunk(chunk, new)`` hears how many questions each
        chunk newly scored."""
        records: list[dict[str, Any]] = []
        for start, end in self.bounds(rung):
            part = self.samples[start:end]
            data = Dataset(self.dataset.name, self.dataset.task, f"{self.dataset.name} questions {start}-{end}",
                           loader=_loader(part), metric=self.dataset.metric, size=len(part))
            seen: dict[str, int] = {}

            def heard(event: EvalProgress, seen: dict[str, int] = seen) -> None:
                if event.stage is None:
                    seen.setdefault("first", event.done)
                    seen["last"] = event.done
                if progress is not None:
                    progress(event)

            chunk = f"q{start}-{end}"
            report = evaluate(variant.compiled, data, out=self.folder / variant.name / chunk, label=variant.name,
                              progress=heard, **self.evaluation)
            if on_chunk is not None:
                on_chunk(chunk, seen.get("last", len(part)) - seen.get("first", 0))
            records += report.records
        return records


def _loader(part: Sequence[Sample]) -> Callable[[], list[Sample]]:
    return lambda: list(part)


def objectives(records: Sequence[Mapping[str, Any]], cost: str) -> tuple[float, float]:
    """(accuracy, cost) of some records: the fraction correct, and per question the mean wall seconds
    (``cost="seconds"``) or generated tokens plus latent steps (``"tokens"``)."""
    n = max(len(records), 1)
    accuracy = sum(1 for r in records if r["correct"]) / n
    if cost == "seconds":
        return accuracy, sum(float(r["wall_s"]) for r in records) / n
    return accuracy, sum(int(r["generated_tokens"]) + int(r["latent_steps"]) for r in records) / n


def _dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """``a`` is at least as accurate and as cheap as ``b``, and better in one (accuracy up, cost down)."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def pareto_ranks(points: Sequence[tuple[float, float]]) -> list[int]:
    """Non-dominated sorting: 0 for the front, 1 for the front of the rest, ...

    >>> pareto_ranks([(0.5, 10), (0.6, 20), (0.4, 30), (0.5, 10)])
    [0, 0, 1, 0]
    """
    ranks = [-1] * len(points)
    left = set(range(len(points)))
    level = 0
    while left:
        front = {i for i in left if not any(_dominates(points[j], points[i]) for j in left if j != i)}
        for i in front:
            ranks[i] = level
        left -= front
        level += 1
    return ranks


def promote(point: tuple[float, float], peers: Sequence[tuple[float, float]], eta: int) -> bool:
    """Whether a trial at ``point`` goes on to the next rung, among ``peers`` (the other trials that
    reached this rung): it must be in the best ``1/eta`` of them all by Pareto rank, then accuracy,
    then cost (asynchronous successive halving, ranked on both objectives; ties promote).

    >>> promote((0.9, 5.0), [(0.1, 5.0), (0.2, 6.0)], eta=3)
    True
    >>> promote((0.1, 9.0), [(0.9, 5.0), (0.8, 6.0)], eta=3)
    False
    """
    everyone = [point, *peers]
    ranks = pareto_ranks(everyone)
    order = sorted(range(len(everyone)), key=lambda i: (ranks[i], -everyone[i][0], everyone[i][1], i))
    keep = math.ceil(len(everyone) / max(eta, 2))
    return order.index(0) < keep
