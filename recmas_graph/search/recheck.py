"""The front re-evaluated on held-out questions the search never saw, with paired tests against the base.

A search picks its front on its own questions, so part of what it finds is their noise. Each front
member and the base topology are evaluated again on the next questions of the dataset
(``DIR/heldout/<name>/``, the records format of :func:`recmas_graph.eval.evaluate`, resumable), and
each member gets McNemar's exact test against the base on the same questions (and on ``acc_norm``
when scored by likelihood). ``DIR/heldout.json`` and ``DIR/heldout.csv`` hold one row per system.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .._files import write_json_atomic
from ..eval.datasets import Dataset, Sample
from ..eval.evaluate import EvalProgress, EvalReport, evaluate
from ..eval.stats import mcnemar_exact, paired_counts
from .rungs import objectives

__all__ = ["HELDOUT_KEYS", "recheck"]

#: The columns of heldout.csv.
HELDOUT_KEYS = ("system", "label", "accuracy", "ci_low", "ci_high", "acc_norm", "n", "cost", "only_this",
                "only_base", "p_value", "p_norm")


def recheck(members: Sequence[tuple[str, str, Any]], base: Any, dataset: Dataset, samples: Sequence[Sample], *,
            folder: Path, cost: str, evaluation: Mapping[str, Any],
            progress: Callable[[EvalProgress], None] | None = None,
            on_system: Callable[[str, int, int], None] | None = None) -> list[dict[str, Any]]:
    """Evaluate ``base`` (a compiled topology) and each of ``members`` (``(name, label, compiled)``) on
    ``samples``; one row each, the base first, members with their paired test against it."""
    data = Dataset(dataset.name, dataset.task, f"{dataset.name}: held-out questions", loader=lambda: list(samples),
                   metric=dataset.metric, size=len(samples))
    systems = [(f"base-{base.spec.name}", "base", base), *members]
    reports: dict[str, EvalReport] = {}
    for i, (name, _, compiled) in enumerate(systems):
        if on_system is not None:
            on_system(name, i, len(systems))
        reports[name] = evaluate(compiled, data, out=folder / name, label=name, progress=progress, **evaluation)
    first = systems[0][0]
    rows = []
    for name, label, _ in systems:
        report = reports[name]
        summary = report.summary
        row: dict[str, Any] = {"system": name, "label": label, "accuracy": summary["accuracy"],
                               "ci_low": summary["ci_low"], "ci_high": summary["ci_high"],
                               "acc_norm": summary.get("acc_norm"), "n": summary["n"],
                               "cost": objectives(report.records, cost)[1], "only_this": None, "only_base": None,
                               "p_value": None, "p_norm": None}
        if name != first:
            _, b, c = paired_counts(report.correct_by_id, reports[first].correct_by_id)
            row.update(only_this=b, only_base=c, p_value=mcnemar_exact(b, c))
            if report.correct_norm_by_id and reports[first].correct_norm_by_id:
                _, b, c = paired_counts(report.correct_norm_by_id, reports[first].correct_norm_by_id)
                row["p_norm"] = mcnemar_exact(b, c)
        rows.append(row)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder.parent / "heldout.json", rows)
    with (folder.parent / "heldout.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(HELDOUT_KEYS))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row[k] for k in HELDOUT_KEYS})
    return rows
