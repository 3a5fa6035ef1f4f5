"""Compare systems (and their baselines) on one dataset: a table, CSV, JSON, a plot and paired tests.

:func:`compare` evaluates each system resumably into ``DIR/<system>/`` (see :func:`evaluate`),
adds the ``single`` and ``text`` baselines of each topology when asked, and writes
``DIR/compare.json`` (one row per system), ``DIR/compare.csv`` and ``DIR/compare.png``. Every pair of
systems evaluated on the same samples gets McNemar's exact test, so a real difference can be told
from noise. Systems scored by likelihood (multiple-choice datasets) add ``acc_norm``, its interval
and its own paired test (``paired[other]["norm"]``). Systems sampled repeatedly (``samples=N``) add
``pass_at_k`` (k = 1..N) and ``majority_accuracy``; their paired tests are exact sign tests per
question on pass@1 (``paired[other]``) and on each pass@k (``paired[other]["pass_at_k"][k]``); a
judge adds ``judge_accuracy`` and McNemar's test on its verdicts (``paired[other]["judge"]``).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..plugins.manager import Registry, default_registry
from ..topology.compile import compile_topology
from .baselines import BASELINES, baseline, baseline_label
from .datasets import Dataset
from .evaluate import EvalProgress, EvalReport, evaluate
from .records import write_json_atomic
from .stats import mcnemar_exact, paired_counts, paired_sign_counts

__all__ = ["CompareReport", "compare", "ROW_KEYS"]

#: The keys of every row of compare.json / compare.csv.
ROW_KEYS = ("system", "accuracy", "ci_low", "ci_high", "n", "wall_s", "per_sample_s", "generated_tokens",
            "latent_steps", "peak_mem_bytes", "scoring", "acc_norm", "acc_norm_ci_low", "acc_norm_ci_high",
            "samples", "majority_accuracy", "judge_accuracy")


@dataclass
class CompareReport:
    """A comparison: one row per system (``ROW_KEYS`` + ``paired``), the evaluations, the files written."""

    rows: list[dict[str, Any]]
    reports: dict[str, EvalReport]
    out: Path
    plot: Path | None

    def row(self, system: str) -> dict[str, Any]:
        """The row of ``system``."""
        return next(r for r in self.rows if r["system"] == system)


def _folder_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]+", "-", label)


def _compile(ref: Any, registry: Registry) -> Any:
    """``ref`` compiled; ``"T:single"`` / ``"T:text"`` (a baseline's label) is that baseline of topology ``T``."""
    if isinstance(ref, str) and ref.rpartition(":")[2] in BASELINES and ref not in registry.topologies \
            and not Path(ref).is_file():
        base, _, name = ref.rpartition(":")
        compiled = registry.compile(base)
        return compile_topology(baseline(compiled.spec, name), registry, base_dir=compiled.base_dir)
    return registry.compile(ref)


def _entries(systems: Sequence[Any], registry: Registry, baselines: bool) -> list[tuple[str, Any]]:
    entries: list[tuple[str, Any]] = []
    for item in systems:
        label, ref = item if isinstance(item, tuple) else (None, item)
        compiled = ref.compiled if hasattr(ref, "compiled") else _compile(ref, registry)
        if label is None and isinstance(ref, str) and compiled.spec.name != ref and ref.rpartition(":")[2] in BASELINES:
            label = ref  # "T:single", as --baselines labels it
        name = label or compiled.spec.name
        entries.append((name, ref if hasattr(ref, "compiled") else compiled))
        if baselines:  # compiled against the same registry and folder (relative link weights keep working)
            entries += [(baseline_label(name, b), compile_topology(baseline(compiled.spec, b), registry,
                                                                   base_dir=compiled.base_dir)) for b in BASELINES]
    seen: set[str] = set()
    for name, _ in entries:
        if name in seen:
            raise ValueError(f"two systems are called {name!r}; give them labels: compare([('a', ...), ('b', ...)])")
        seen.add(name)
    return entries


def _built_as(systems: Sequence[Any], entries: list[tuple[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each baseline of a built system -> how that system was built (its ``build_options``)."""
    out: dict[str, dict[str, Any]] = {}
    names = [name for name, _ in entries]
    for item in systems:
        label, ref = item if isinstance(item, tuple) else (None, item)
        if hasattr(ref, "compiled"):
            name = label or ref.compiled.spec.name
            # its compiled spec already names the models it runs; placement, dtype and seed come along
            built = dict(getattr(ref, "build_options", {}) or {})
            options = {k: built[k] for k in ("device", "dtype", "seed") if built.get(k) is not None}
            for b in BASELINES:
                label_b = baseline_label(name, b)
                if label_b not in names:
                    continue
                agents = {a.name for a in baseline(ref.compiled.spec, b).agents}
                device = options.get("device")
                out[label_b] = {**options, **({"device": {k: v for k, v in device.items() if k in agents}}
                                              if isinstance(device, Mapping) else {})}
    return out


def compare(
    systems: Sequence[Any],
    dataset: str | Path | Dataset,
    *,
    out: str | Path,
    baselines: bool = True,
    registry: Registry | None = None,
    build: Mapping[str, Any] | None = None,
    progress: Callable[[EvalProgress], None] | None = None,
    on_system: Callable[[str, int, int], None] | None = None,
    **options: Any,
) -> CompareReport:
    """Evaluate every system of ``systems`` (topology references, built systems, or ``(label, ref)``
    pairs) on ``dataset`` and compare them; ``baselines`` adds each topology's ``single`` and
    ``text`` baselines. ``options`` go to :func:`evaluate` (``limit``, ``batch_size``, ``generation``,
    ...). One model cache serves every system, so a model shared by several loads once."""
    from ..runtime.sources.loaded import ModelCache

    registry = registry or default_registry()
    folder = Path(out)
    entries = _entries(systems, registry, baselines)
    built_as = _built_as(systems, entries)
    build = dict(build or {})
    build.setdefault("model_cache", ModelCache(registry.model_sources))
    reports: dict[str, EvalReport] = {}
    for i, (name, ref) in enumerate(entries):
        if on_system is not None:
            on_system(name, i, len(entries))
        # a built system's baselines are built as it was (models, placement, dtype, seed)
        how = {**built_as.get(name, {}), **build}
        reports[name] = evaluate(ref, dataset, out=folder / _folder_name(name), registry=registry, build=how,
                                 label=name, progress=progress, **options)
    rows = _rows(reports)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "compare.json", rows)
    with (folder / "compare.csv").open("w", encoding="utf-8", newline="") as handle:
        ks = sorted({int(k) for row in rows for k in (row.get("pass_at_k") or {})})
        extra = [f"pass@{k}" for k in ks] + sorted({f"metric:{m}" for row in rows for m in row.get("metrics") or {}})
        writer = csv.DictWriter(handle, fieldnames=list(ROW_KEYS) + extra)
        writer.writeheader()
        for row in rows:
            flat = {f"pass@{k}": v for k, v in (row.get("pass_at_k") or {}).items()}
            flat.update({f"metric:{m}": v for m, v in (row.get("metrics") or {}).items()})
            writer.writerow({**{k: row[k] for k in ROW_KEYS}, **flat})
    plot = _plot(rows, folder / "compare.png")
    return CompareReport(rows, reports, folder, plot)


def _test(n: int, b: int, c: int) -> dict[str, Any]:
    return {"n": n, "only_this": b, "only_other": c, "p_value": mcnemar_exact(b, c)}


def _rows(reports: Mapping[str, EvalReport]) -> list[dict[str, Any]]:
    correct = {name: r.correct_by_id for name, r in reports.items()}
    normed = {name: r.correct_norm_by_id for name, r in reports.items()}
    judged = {name: r.judged_by_id for name, r in reports.items()}
    rows = []
    for name, report in reports.items():
        s = report.summary
        row: dict[str, Any] = {"system": name, **{k: s.get(k) for k in ROW_KEYS if k != "system"}}
        row["scoring"] = s.get("scoring") or "generate"
        row["samples"] = report.samples
        if s.get("pass_at_k"):
            row["pass_at_k"] = dict(s["pass_at_k"])
        if s.get("metrics"):
            row["metrics"] = dict(s["metrics"])
        row["paired"] = {}
        for other in reports:
            if other == name:
                continue
            if report.samples > 1 or reports[other].samples > 1:  # per question: sign tests on pass@k
                ks = range(1, min(report.samples, reports[other].samples) + 1)
                tests = {str(k): _test(*paired_sign_counts(report.pass_at_k_by_question(k),
                                                           reports[other].pass_at_k_by_question(k))) for k in ks}
                row["paired"][other] = {**tests["1"], "test": "sign", "pass_at_k": tests}
            else:
                row["paired"][other] = _test(*paired_counts(correct[name], correct[other]))
            if judged[name] and judged[other]:
                row["paired"][other]["judge"] = _test(*paired_counts(judged[name], judged[other]))
            if normed[name] and normed[other]:
                n, b, c = paired_counts(normed[name], normed[other])
                row["paired"][other]["norm"] = {"n": n, "only_this": b, "only_other": c,
                                                "p_value": mcnemar_exact(b, c)}
        rows.append(row)
    return rows


def _plot(rows: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    """Accuracy (with its interval) against wall time, and generated tokens per system; ``None`` without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = [r["system"] for r in rows]
    acc = [r["accuracy"] or 0.0 for r in rows]
    lo = [max(0.0, a - (r["ci_low"] if r["ci_low"] is not None else a)) for a, r in zip(acc, rows)]
    hi = [max(0.0, (r["ci_high"] if r["ci_high"] is not None else a) - a) for a, r in zip(acc, rows)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, row in enumerate(rows):
        line = left.errorbar(row["wall_s"], acc[i], yerr=[[lo[i]], [hi[i]]], fmt="o", capsize=4, label=names[i])
        if row.get("acc_norm") is not None:  # likelihood scoring: acc_norm beside acc, same colour
            left.plot([row["wall_s"]], [row["acc_norm"]], marker="x", linestyle="none", color=line[0].get_color())
    left.legend(fontsize=8, loc="best")
    left.set_xlabel("wall time (s, all samples)")
    left.set_ylabel("accuracy (95% bootstrap interval; x: acc_norm)"
                    if any(r.get("acc_norm") is not None for r in rows) else "accuracy (95% bootstrap interval)")
    left.set_ylim(-0.02, 1.02)
    left.set_title("accuracy against time")
    left.grid(alpha=0.3)
    right.bar(range(len(rows)), [r["generated_tokens"] for r in rows], color="#4a6fa5")
    right.set_xticks(range(len(rows)), names, rotation=30, ha="right", fontsize=8)
    right.set_ylabel("generated tokens (all samples)")
    right.set_title("tokens per system")
    right.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{rows[0]['n'] if rows else 0} samples per system", fontsize=10)
    fig.savefig(path, dpi=120, bbox_inches="tight")  # grows to hold long rotated names (tight_layout gave up on them)
    plt.close(fig)
    return path
