"""The accuracy-cost Pareto front of a search: which trials it holds, its files and its plot.

Only trials evaluated on every question of the search (Optuna state ``COMPLETE``) compete for the
front; a trial dominates another when it is at least as accurate and as cheap, and better in one.
A variant proposed twice counts once (its first trial). :func:`write_front` writes
``DIR/front.csv``, ``DIR/front.json`` and each member as a runnable topology in
``DIR/front/<name>.json``; :func:`plot_front` draws every trial (those stopped early faded, at their
last rung) with the front as a staircase in ``DIR/front.png``.

>>> rows = [{"trial": 0, "variant": "a", "accuracy": 0.5, "cost": 10.0, "state": "COMPLETE"},
...         {"trial": 1, "variant": "b", "accuracy": 0.4, "cost": 12.0, "state": "COMPLETE"},
...         {"trial": 2, "variant": "c", "accuracy": 0.7, "cost": 30.0, "state": "COMPLETE"}]
>>> [r["trial"] for r in pareto_front(rows)]
[0, 2]
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._files import write_json_atomic
from .rungs import pareto_ranks

__all__ = ["FRONT_KEYS", "pareto_front", "write_front", "plot_front"]

#: The columns of front.csv (front.json holds these and the parameters).
FRONT_KEYS = ("trial", "name", "label", "accuracy", "cost", "n", "rounds", "latent_steps", "topology")


def pareto_front(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The non-dominated rows among the completed ones (accuracy up, cost down), cheapest first; a
    variant that several trials evaluated appears once."""
    done: dict[str, Mapping[str, Any]] = {}
    for row in sorted(rows, key=lambda r: r["trial"]):
        if row.get("state") == "COMPLETE" and row.get("accuracy") is not None:
            done.setdefault(str(row["variant"]), row)
    members = list(done.values())
    ranks = pareto_ranks([(float(r["accuracy"]), float(r["cost"])) for r in members])
    front = [dict(r) for r, rank in zip(members, ranks) if rank == 0]
    return sorted(front, key=lambda r: (r["cost"], -r["accuracy"], r["trial"]))


def write_front(front: Sequence[dict[str, Any]], topologies: Mapping[str, str], folder: Path) -> list[Path]:
    """Write ``front.csv``, ``front.json`` and ``front/<name>.json`` (``topologies``: name -> topology
    JSON text; each row gets its file as ``topology``); return the paths."""
    members = folder / "front"
    members.mkdir(parents=True, exist_ok=True)
    rows = []
    for row in front:
        path = members / f"{row['name']}.json"
        path.write_text(topologies[row["name"]], encoding="utf-8")
        row["topology"] = str(path)
        rows.append(row)
    write_json_atomic(folder / "front.json", rows)
    with (folder / "front.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(FRONT_KEYS), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k) for k in FRONT_KEYS})
    return [folder / "front.csv", folder / "front.json", members]


def _tag(row: Mapping[str, Any]) -> str:
    """A front member's short name on the plot: its trial number."""
    return f"#{row['trial']}" if row.get("trial") is not None else str(row.get("name", "?"))


def plot_front(rows: Sequence[Mapping[str, Any]], front: Sequence[Mapping[str, Any]], path: Path, *,
               cost_label: str, base: Mapping[str, Any] | None = None) -> Path | None:
    """Every trial's accuracy against its cost, the front drawn as a staircase; ``None`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    height = 4.5 + 0.14 * len(front)  # room for the front's key under the plot
    fig, ax = plt.subplots(figsize=(7, height))
    complete = [r for r in rows if r.get("state") == "COMPLETE" and r.get("accuracy") is not None]
    stopped = [r for r in rows if r.get("state") == "PRUNED" and r.get("accuracy") is not None]
    if stopped:
        ax.scatter([r["cost"] for r in stopped], [r["accuracy"] for r in stopped], marker="x", color="#999999",
                   alpha=0.6, label="stopped early (at its last rung)")
    if complete:
        ax.scatter([r["cost"] for r in complete], [r["accuracy"] for r in complete], color="#4a6fa5", alpha=0.7,
                   label="evaluated on every question")
    if front:
        xs: list[float] = []
        ys: list[float] = []
        for r in front:  # cheapest first: a staircase that rises with cost
            if xs:
                xs.append(r["cost"])
                ys.append(ys[-1])
            xs.append(r["cost"])
            ys.append(r["accuracy"])
        ax.plot(xs, ys, color="#c0392b", linewidth=1.5, label="Pareto front")
        ax.scatter([r["cost"] for r in front], [r["accuracy"] for r in front], color="#c0392b", zorder=3)
        for r in front:  # a short tag by the point; the variants spelled out under the plot
            ax.annotate(_tag(r), (r["cost"], r["accuracy"]), fontsize=8, xytext=(4, -11), textcoords="offset points")
        key = "\n".join(f"{_tag(r)}: {r.get('label') or r['name']}" for r in front)
        fig.text(0.01, 0.01, key, fontsize=7, va="bottom", ha="left", family="monospace")
        fig.subplots_adjust(left=0.1, right=0.97, top=0.93, bottom=(0.65 + 0.14 * len(front)) / height)
    if base is not None and base.get("accuracy") is not None:
        ax.scatter([base["cost"]], [base["accuracy"]], marker="*", s=160, color="#f39c12", zorder=4,
                   label="base")
    ax.set_xlabel(cost_label)
    ax.set_ylabel("accuracy (search questions)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    ax.set_title(f"{len(rows)} trials, {len(front)} on the front")
    if not front:
        fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
