"""Train a system's links: the inner loop or the outer loop, into a folder that resumes and runs.

:func:`train_links` sets up a :class:`~recmas_graph.train.loop.Trainer` for ``kind`` (``inner``:
every inner link on its agent's target text; ``outer``: every outer link on the answer loss),
holds out part of the data for validation, trains, and writes ``DIR/topology.json`` (the topology
with its links pointing at the trained weights in ``DIR/links/``) and ``DIR/report.json``. With
``workers=N`` (N > 1) it trains data-parallel over N local processes
(:mod:`recmas_graph.train.workers`), with the same losses and updates as one process.
"""

from __future__ import annotations

from dataclasses import asdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import RunError
from .data import TrainSample
from ..runtime.pretrained import save_pretrained
from .loop import StepInfo, TrainConfig, TrainReport
from .session import KINDS, TrainOptions, make_objective, run_identity, train_here

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ..runtime.system import RecursiveSystem

__all__ = ["KINDS", "train_links"]


def _logged(path: Path) -> dict[str, float | None]:
    """First and last loss and the last validation loss of a metrics file."""
    import json

    first = last = val = None
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            first = row["loss"] if first is None else first
            last = row["loss"]
            val = row.get("val_loss", val)
    return {"first": first, "last": last, "val": val}


def train_links(system: RecursiveSystem, kind: str, data: Sequence[TrainSample], out: str | Path, config: TrainConfig, *,
                heldout: float = 0.1, resume: bool = False, task: str = "math", rounds: int | None = None,
                latent_steps: int | None = None, max_tokens: int = 256,
                target_weights: Mapping[str, float] | None = None, gradient_checkpointing: bool = False,
                workers: int = 1, timeout_s: float | None = None,
                progress: Callable[[StepInfo], None] | None = None) -> TrainReport:
    """Train the ``kind`` links of ``system`` in place on ``data``; see the module docstring.

    ``heldout`` is the share of ``data`` kept for the validation loss (seeded by ``config.seed``).
    ``resume`` continues the run in ``out`` from its last checkpoint up to ``config.steps``.
    Outer loop only: ``target_weights[agent]`` adds that intermediate agent's loss on its own target
    text (see :class:`~recmas_graph.train.objectives.AnswerObjective`); ``gradient_checkpointing``
    trades one more forward pass for keeping no activations of the frozen models.

    ``workers`` > 1 trains data-parallel: each worker process rebuilds the system (its own copy of
    the frozen models) and computes its share of every global batch of ``config.batch_size``
    samples; the update is the one-process update on the same batch. ``timeout_s`` bounds how long
    a worker waits on the others (default 30 min). A run may resume with another number of workers.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise RunError(f"workers must be a positive integer, got {workers!r}", culprit="--workers")
    options = TrainOptions(heldout=heldout, resume=resume, task=task, rounds=rounds, latent_steps=latent_steps,
                           max_tokens=max_tokens, target_weights=dict(target_weights or {}),
                           gradient_checkpointing=gradient_checkpointing)
    if workers == 1:
        session = train_here(system, kind, data, out, config, options, progress=progress)
    else:
        from .workers import DEFAULT_TIMEOUT_S, train_in_workers

        make_objective(system, kind, data, options)  # the checks that need no model run, before any worker starts
        session = train_in_workers(system, kind, data, out, config, options, workers=workers,
                                   run_info=run_identity(system, kind, data, options), progress=progress,
                                   timeout_s=DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s)
    report, run_info = session.report, session.run_info
    folder = Path(out)
    logged = _logged(folder / "metrics.jsonl")  # the whole run's, across resumes
    report.first_loss, report.last_loss = logged["first"], logged["last"]
    report.val_loss = logged["val"] if report.val_loss is None else report.val_loss
    from .._files import write_json_atomic

    save_pretrained(system, folder, description=f"{system.spec.description} Links: {kind} loop, "
                                                f"{report.steps} steps.".strip())
    write_json_atomic(folder / "report.json", {
        "kind": kind, "steps": report.steps, "first_loss": report.first_loss, "last_loss": report.last_loss,
        "val_loss": report.val_loss, "wall_s": round(report.wall_s, 2), "resumed_from": report.resumed_from,
        "train_samples": session.train_samples, "heldout_samples": session.heldout_samples, "config": asdict(config),
        "run": run_info, **({"workers": workers} if workers > 1 else {})})
    return report
