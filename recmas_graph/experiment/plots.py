"""The two figures of an experiment's report (matplotlib, Agg backend; skipped without matplotlib).

- ``training.png``: the training loss (lines) and the validation loss (dashed, markers) against the
  step, one panel per system and loop (``inner`` / ``outer``), the seeds overlaid, read from each
  training stage's ``metrics.jsonl``;
- ``accuracy_cost.png``: each row's accuracy (mean over seeds, bars: one standard deviation; x:
  ``acc_norm``) against its seconds per question and against its tokens (generated + latent
  steps) per question.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .plan import Plan

__all__ = ["plot_training", "plot_accuracy_cost", "training_curves"]


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def training_curves(plan: Plan) -> dict[tuple[str, str], dict[int, list[dict[str, Any]]]]:
    """(system label, loop) -> seed -> the lines of that training stage's ``metrics.jsonl``."""
    store = plan.store
    curves: dict[tuple[str, str], dict[int, list[dict[str, Any]]]] = {}
    for row in plan.rows:
        for seed, keys in row.trains.items():
            for key in keys:
                stage = plan.stage(key)
                path = store.final(stage) / "metrics.jsonl"
                if stage.kind not in ("inner", "outer") or not path.is_file():
                    continue
                lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
                curves.setdefault((row.label, stage.kind), {})[seed] = lines
    return curves


def plot_training(plan: Plan, path: Path) -> Path | None:
    """Write ``training.png`` (see the module docstring); ``None`` without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return None
    curves = training_curves(plan)
    panels = sorted(curves, key=lambda k: ([r.label for r in plan.rows].index(k[0]), k[1]))
    cols = min(3, max(1, len(panels)))
    rows = max(1, -(-len(panels) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    if not panels:
        axes.flat[0].text(0.5, 0.5, "no training stages (the recipe trains nothing)", ha="center", va="center")
    for ax, (label, kind) in zip(axes.flat, panels):
        for i, seed in enumerate(sorted(curves[(label, kind)])):
            lines = curves[(label, kind)][seed]
            colour = colours[i % len(colours)]
            ax.plot([x["step"] for x in lines], [x["loss"] for x in lines], color=colour, marker=".",
                    label=f"seed {seed}")
            val = [x for x in lines if x.get("val_loss") is not None]
            if val:
                ax.plot([x["step"] for x in val], [x["val_loss"] for x in val], color=colour, linestyle="--",
                        marker="o", label=f"seed {seed} validation")
        ax.set_title(f"{label}: {kind} loop", fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{plan.spec.name}: training loss (lines) and validation loss (dashed)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_accuracy_cost(report: Mapping[str, Any], path: Path) -> Path | None:
    """Write ``accuracy_cost.png`` (see the module docstring); ``None`` without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return None
    rows = report["rows"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for row in rows:
        acc = row["accuracy_mean"] or 0.0
        err = row["accuracy_std"] or 0.0
        tokens = (row["tokens_per_question"] or 0.0) + (row["latent_steps_per_question"] or 0.0)
        for ax, x in ((left, row["seconds_per_question"] or 0.0), (right, tokens)):
            line = ax.errorbar(x, acc, yerr=err, fmt="o", capsize=4, label=row["label"])
            if row.get("acc_norm_mean") is not None:
                ax.plot([x], [row["acc_norm_mean"]], marker="x", linestyle="none", color=line[0].get_color())
    norm = any(r.get("acc_norm_mean") is not None for r in rows)
    for ax, xlabel in ((left, "seconds per question (evaluation)"), (right, "tokens per question (generated + "
                                                                             "latent steps)")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy, mean over seeds (bars: sd" + ("; x: acc_norm)" if norm else ")"))
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    left.legend(fontsize=8, loc="best")
    left.set_title("accuracy against time", fontsize=10)
    right.set_title("accuracy against tokens", fontsize=10)
    fig.suptitle(f"{report['name']}: {len(report['seeds'])} seed(s), {report['eval']['questions']} questions",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
