"""One training session in this process: the objective, the trainer and the run's identity.

:func:`train_here` is the body of :func:`~recmas_graph.train.run.train_links` that one process
runs: in the caller's process for one worker, and in each worker of a data-parallel run
(:mod:`recmas_graph.train.workers`) on the system that worker rebuilt. :class:`TrainOptions`
holds the keywords of ``train_links`` that shape the losses, as plain picklable data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import RunError
from ..topology.spec import dump_topology
from .data import TrainSample, split_heldout
from .loop import StepInfo, TrainConfig, Trainer, TrainReport
from .objectives import AnswerObjective, InnerObjective, target_field
from .parallel import DataParallel

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ..runtime.system import RecursiveSystem

__all__ = ["KINDS", "TrainOptions", "Session", "check_kind", "make_objective", "run_identity", "train_here"]

KINDS = ("inner", "outer")


@dataclass(frozen=True)
class TrainOptions:
    """The keywords of :func:`~recmas_graph.train.run.train_links` besides the config (see there)."""

    heldout: float = 0.1
    resume: bool = False
    task: str = "math"
    rounds: int | None = None
    latent_steps: int | None = None
    max_tokens: int = 256
    target_weights: Mapping[str, float] = field(default_factory=dict)
    gradient_checkpointing: bool = False


@dataclass
class Session:
    """What :func:`train_here` did: the trainer's report, the run's identity (checked on resume) and the split."""

    report: TrainReport
    run_info: dict[str, Any]
    train_samples: int
    heldout_samples: int


def _fingerprint(samples: Sequence[TrainSample]) -> str:
    digest = hashlib.sha256()
    for s in samples:
        digest.update(repr((s.id, s.question, s.answer, sorted(s.targets.items()))).encode())
    return digest.hexdigest()[:16]


def check_kind(kind: str, options: TrainOptions) -> None:
    """Refuse an unknown loop, or target weights for the inner loop."""
    if options.target_weights and kind != "outer":
        raise RunError("target weights belong to the outer loop", culprit="--target-weight",
                       hint="the inner loop trains each agent on its own target text already")
    if kind not in KINDS:
        raise RunError(f"unknown training loop {kind!r}", culprit="recmas train", hint=f"use one of: {', '.join(KINDS)}")


def make_objective(system: RecursiveSystem, kind: str, data: Sequence[TrainSample], options: TrainOptions) -> Any:
    """The ``kind`` loop's objective on ``system``, after the checks that need no model run."""
    check_kind(kind, options)
    if kind == "inner":
        return InnerObjective(system, max_tokens=options.max_tokens)
    if not system.outer_links:
        raise RunError(f"topology {system.spec.name!r} has no latent edge: no outer link to train",
                       culprit="recmas train outer", hint="train its inner links instead (recmas train inner)")
    objective = AnswerObjective(system, task=options.task, rounds=options.rounds, latent_steps=options.latent_steps,
                                weights=options.target_weights, checkpoint=options.gradient_checkpointing)
    for agent in objective.weights:  # every sample must carry the weighted agents' texts, checked up front
        for sample in data:
            target_field(system, agent, sample)
    return objective


def run_identity(system: RecursiveSystem, kind: str, data: Sequence[TrainSample],
                 options: TrainOptions) -> dict[str, Any]:
    """What a checkpoint must share with the run that resumes it: the loop, the topology, the data,
    the options that change the losses, the models' device and dtype (not the number of workers)."""
    spec_text = dump_topology(system.spec.model_copy(update={"description": ""}))  # a description is not the run
    built = getattr(system, "build_options", {}) or {}
    weights = {k: float(v) for k, v in options.target_weights.items() if float(v) != 0.0}
    return {"kind": kind, "topology": hashlib.sha256(spec_text.encode()).hexdigest()[:16],
            "data": _fingerprint(data), "task": options.task, "rounds": options.rounds,
            "latent_steps": options.latent_steps, "heldout": options.heldout, "max_tokens": options.max_tokens,
            "target_weights": dict(sorted(weights.items())) if kind == "outer" else {},
            "build": {k: repr(built.get(k)) for k in ("device", "dtype")}}


def train_here(system: RecursiveSystem, kind: str, data: Sequence[TrainSample], out: str | Path, config: TrainConfig,
               options: TrainOptions, *, run_info: Mapping[str, Any] | None = None,
               progress: Callable[[StepInfo], None] | None = None, parallel: DataParallel | None = None) -> Session:
    """Train the ``kind`` links of ``system`` in place, in this process (one worker of ``parallel``
    when given). ``run_info`` overrides the run's identity (a worker's rebuilt system names its
    link files in its topology; the caller's identity is the run's)."""
    objective = make_objective(system, kind, data, options)
    train, val = split_heldout(data, options.heldout, config.seed)
    inner = {f"inner/{n}": m for n, m in system.inner_links.items()}
    outer = {f"outer/{e}": m for e, m in system.outer_links.items()}
    trained = inner if kind == "inner" else outer
    params = [p for m in trained.values() for p in m.parameters()]
    if run_info is None:
        run_info = run_identity(system, kind, data, options)
    before = {id(p): p.requires_grad for p in system.parameters()}  # put back when training ends
    try:
        for module in system.inner_links.values():
            module.requires_grad_(kind == "inner")
        for module in system.outer_links.values():
            module.requires_grad_(kind == "outer")
        trainer = Trainer(params, objective, train, out, config, modules={**inner, **outer}, val_data=val,
                          run_info=run_info, progress=progress, parallel=parallel)
        report = trainer.run(resume=options.resume)
    finally:
        for p in system.parameters():
            p.requires_grad_(before.get(id(p), p.requires_grad))
    return Session(report, dict(run_info), len(train), len(val))
