"""Train a system's links: the inner loop or the outer loop, into a folder that resumes and runs.

:func:`train_links` sets up a :class:`~recmas_graph.train.loop.Trainer` for ``kind`` (``inner``:
every inner link on its agent's target text; ``outer``: every outer link on the answer loss),
holds out part of the data for validation, trains, and writes ``DIR/topology.json`` (the topology
with its links pointing at the trained weights in ``DIR/links/``) and ``DIR/report.json``.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import RunError
from ..topology.spec import dump_topology
from .data import TrainSample, split_heldout
from ..runtime.pretrained import save_pretrained
from .loop import StepInfo, TrainConfig, Trainer, TrainReport
from .objectives import AnswerObjective, InnerObjective, target_field

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ..runtime.system import RecursiveSystem

__all__ = ["KINDS", "train_links"]

KINDS = ("inner", "outer")


def _fingerprint(samples: Sequence[TrainSample]) -> str:
    digest = hashlib.sha256()
    for s in samples:
        digest.update(repr((s.id, s.question, s.answer, sorted(s.targets.items()))).encode())
    return digest.hexdigest()[:16]


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
                progress: Callable[[StepInfo], None] | None = None) -> TrainReport:
    """Train the ``kind`` links of ``system`` in place on ``data``; see the module docstring.

    ``heldout`` is the share of ``data`` kept for the validation loss (seeded by ``config.seed``).
    ``resume`` continues the run in ``out`` from its last checkpoint up to ``config.steps``.
    Outer loop only: ``target_weights[agent]`` adds that intermediate agent's loss on its own target
    text (see :class:`~recmas_graph.train.objectives.AnswerObjective`); ``gradient_checkpointing``
    trades one more forward pass for keeping no activations of the frozen models.
    """
    if target_weights and kind != "outer":
        raise RunError("target weights belong to the outer loop", culprit="--target-weight",
                       hint="the inner loop trains each agent on its own target text already")
    if kind not in KINDS:
        raise RunError(f"unknown training loop {kind!r}", culprit="recmas train", hint=f"use one of: {', '.join(KINDS)}")
    train, val = split_heldout(data, heldout, config.seed)
    inner = {f"inner/{n}": m for n, m in system.inner_links.items()}
    outer = {f"outer/{e}": m for e, m in system.outer_links.items()}
    if kind == "inner":
        trained = inner
        objective: Any = InnerObjective(system, max_tokens=max_tokens)
    else:
        trained = outer
        if not trained:
            raise RunError(f"topology {system.spec.name!r} has no latent edge: no outer link to train",
                           culprit="recmas train outer", hint="train its inner links instead (recmas train inner)")
        objective = AnswerObjective(system, task=task, rounds=rounds, latent_steps=latent_steps,
                                    weights=target_weights, checkpoint=gradient_checkpointing)
        for agent in objective.weights:  # every sample must carry the weighted agents' texts, checked up front
            for sample in data:
                target_field(system, agent, sample)
    params = [p for m in trained.values() for p in m.parameters()]
    spec_text = dump_topology(system.spec.model_copy(update={"description": ""}))  # a description is not the run
    built = getattr(system, "build_options", {}) or {}
    run_info = {"kind": kind, "topology": hashlib.sha256(spec_text.encode()).hexdigest()[:16],
                "data": _fingerprint(data), "task": task, "rounds": rounds, "latent_steps": latent_steps,
                "heldout": heldout, "max_tokens": max_tokens,
                "target_weights": dict(sorted(objective.weights.items())) if kind == "outer" else {},
                "build": {k: repr(built.get(k)) for k in ("device", "dtype")}}
    before = {id(p): p.requires_grad for p in system.parameters()}  # put back when training ends
    try:
        for module in system.inner_links.values():
            module.requires_grad_(kind == "inner")
        for module in system.outer_links.values():
            module.requires_grad_(kind == "outer")
        trainer = Trainer(params, objective, train, out, config, modules={**inner, **outer}, val_data=val,
                          run_info=run_info, progress=progress)
        report = trainer.run(resume=resume)
    finally:
        for p in system.parameters():
            p.requires_grad_(before.get(id(p), p.requires_grad))
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
        "train_samples": len(train), "heldout_samples": len(val), "config": asdict(config), "run": run_info})
    return report
