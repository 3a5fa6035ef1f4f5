"""``experiment``: run an experiment file's stages (reusing finished ones) and write its report.

:func:`run_experiment` plans first (:mod:`.plan`: every check that needs no weights, then the
keyed stages), then runs each stage that has no finished folder (:mod:`.execute`), in this process
(``backend="local"``: one after another, sharing loaded models) or as Ray tasks
(``backend="ray"``: every stage whose inputs are finished runs at once, one CPU each), and writes
the report (:mod:`.report`). Rerunning the same command after a kill, after adding a system or
after changing one resumes: only stages without a finished folder run, a killed training stage
continues from its last checkpoint and a killed evaluation from its records.

``DIR`` holds::

    experiment.json         the experiment as resolved (what ran: systems, recipe, build override)
    runs.jsonl              one line per stage started and finished (pid, time): the run's log
    stages/<kind>-<key16>/  each finished stage (done.json: kind, key, inputs, result)
        data-*/train.jsonl                      the training samples
        calibrate-*/ inner-*/ outer-*/          runnable folders (topology.json, links/; training: metrics.jsonl)
        eval-*/eval/ eval-*/questions.jsonl     an ordinary eval folder; per question right/wrong and NLL
    stages/<kind>-<key16>.partial/              a stage at work (or killed: resumed by the next run)
    report.md  report.csv  report.json  training.png  accuracy_cost.png

The library never prints: ``progress`` receives an :class:`ExperimentProgress` when the plan is
made, when each stage starts and finishes, and when the report is written.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._files import lock_folder, make_output_folder, write_json_atomic
from ..errors import RunError
from .execute import run_stage
from .plan import Plan, estimate_seconds, plan_experiment
from .report import write_report
from .spec import ExperimentSpec
from .stages import Stage

__all__ = ["BACKENDS", "ExperimentProgress", "ExperimentReport", "run_experiment", "stage_resources"]

#: Where the stages run: this process, or Ray tasks (the extra ``ray``).
BACKENDS: tuple[str, ...] = ("local", "ray")


@dataclass(frozen=True)
class ExperimentProgress:
    """An event of a run: ``plan`` (the stages: ``total`` to run, ``cached`` reused), ``start`` and
    ``finish`` of a stage (``done`` of ``total`` finished; ``wall_s`` of that stage), ``within`` a
    stage running in this process (``text``: a training step, a batch of questions), ``report``."""

    event: str
    stage: Stage | None
    done: int
    total: int
    cached: int
    wall_s: float | None = None
    text: str = ""


@dataclass
class ExperimentReport:
    """An experiment's outcome: its plan, each stage's status before the run, the stages it ran, the
    report (``rows``: one per system and baseline, see :mod:`.report`) and the files written. A dry
    run has no rows and ran nothing; ``estimate_s`` is the rough cost of what was (or is) to run."""

    plan: Plan
    out: Path
    statuses: dict[str, str]
    ran: list[str] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    dry_run: bool = False
    estimate_s: float = 0.0

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The report's rows (empty for a dry run)."""
        return list(self.report.get("rows", []))

    def row(self, label: str) -> dict[str, Any]:
        """The report row of ``label``."""
        return next(r for r in self.rows if r["label"] == label)


def _log(out: Path, stage: Stage, event: str) -> None:
    with (out / "runs.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"event": event, "stage": stage.name, "label": stage.label, "seed": stage.seed,
                                 "pid": os.getpid(), "time": round(time.time(), 3)}) + "\n")


def run_experiment(experiment: ExperimentSpec | Mapping[str, Any] | str | Path, *, out: str | Path, registry: Any,
                   models: str | None = None, device: Any = None, dtype: str | None = None, dry_run: bool = False,
                   backend: str = "local", ray_address: str | None = None,
                   progress: Callable[[ExperimentProgress], None] | None = None) -> ExperimentReport:
    """Run ``experiment`` (a spec, a dict or a JSON file) into the folder ``out``; see the module docstring.

    ``models="tiny"`` gives every agent the tiny random model of its family (as ``recmas run
    --models tiny``); ``device`` and ``dtype`` are build options. All three are part of every key.
    ``dry_run`` plans and returns without running or writing anything. ``backend``: ``"local"`` or
    ``"ray"`` (``ray_address``: the cluster to join; default a local Ray instance).
    """
    if backend not in BACKENDS:
        raise RunError(f"unknown backend {backend!r}", culprit="--backend", hint=f"use one of: {', '.join(BACKENDS)}")
    plan = plan_experiment(experiment, out=out, registry=registry, models=models, device=device, dtype=dtype)
    if backend == "ray" and not dry_run:
        from ..distributed.cluster import require_ray

        require_ray()  # before anything runs
    statuses = plan.statuses()
    todo = [s for s in plan.stages if statuses[s.key] != "done"]
    cached = len(plan.stages) - len(todo)
    estimate = sum(estimate_seconds(s) for s in todo)
    result = ExperimentReport(plan, plan.out, statuses, dry_run=dry_run, estimate_s=estimate)

    def emit(event: str, stage: Stage | None, done: int, wall: float | None = None, text: str = "") -> None:
        if progress is not None:
            progress(ExperimentProgress(event, stage, done, len(todo), cached, wall, text))

    emit("plan", None, 0)
    if dry_run:
        return result
    folder = plan.out
    make_output_folder(folder / "stages", error=RunError)
    lock = lock_folder(folder, ".experiment.lock", what="experiment", error=RunError)
    try:
        write_json_atomic(folder / "experiment.json", {"spec": plan.spec.model_dump(mode="json", by_alias=True),
                                                      "build": plan.build, "reference": plan.reference})
        if backend == "ray":
            result.ran = _run_on_ray(plan, todo, registry, ray_address, emit)
        else:
            result.ran = _run_here(plan, todo, registry, emit)
        result.report, result.files = write_report(plan)
        emit("report", None, len(todo), text=", ".join(str(p) for p in result.files))
        return result
    finally:
        lock.release()


def _run_here(plan: Plan, todo: list[Stage], registry: Any,
              emit: Callable[..., None]) -> list[str]:
    from ..runtime.sources.loaded import ModelCache

    cache = ModelCache(registry.model_sources)  # the frozen models, shared by every stage of this process
    ran: list[str] = []
    for stage in todo:
        emit("start", stage, len(ran))
        _log(plan.out, stage, "start")
        start = time.perf_counter()

        def within(text: str, stage: Stage = stage, start: float = start) -> None:
            emit("within", stage, len(ran), time.perf_counter() - start, text)

        run_stage(stage, plan.out, registry, model_cache=cache, progress=within)
        ran.append(stage.key)
        _log(plan.out, stage, "finish")
        emit("finish", stage, len(ran), time.perf_counter() - start)
    return ran


def stage_resources(device: Any, cluster: Mapping[str, float]) -> dict[str, Any]:
    """What a stage reserves on Ray: one CPU, and one GPU when the cluster has GPUs and the build's
    ``device`` may use one (``None``/``"auto"``, ``"cuda..."``, or a map naming a CUDA device); a
    stage that reserves no GPU sees none, so it cannot take one another task reserved.

    >>> stage_resources(None, {"CPU": 8, "GPU": 2})
    {'num_cpus': 1, 'num_gpus': 1}
    >>> stage_resources("cpu", {"CPU": 8, "GPU": 2})["runtime_env"]
    {'env_vars': {'CUDA_VISIBLE_DEVICES': ''}}
    """
    if isinstance(device, Mapping):
        wants = any(str(d).startswith(("cuda", "auto")) for d in device.values())
    else:
        wants = device is None or str(device).startswith(("cuda", "auto"))
    from ..distributed.cluster import task_resources

    return task_resources(1, 1 if wants and cluster.get("GPU", 0) >= 1 else 0)


def _ray_stage(stage: Stage, root: str, shipped: Any) -> dict[str, Any]:
    """Ray task body: one stage, with the caller's registry rebuilt here."""
    from ..distributed.cluster import worker_setup

    worker_setup(1)
    return run_stage(stage, root, shipped.rebuild())


def _run_on_ray(plan: Plan, todo: list[Stage], registry: Any, address: str | None,
                emit: Callable[..., None]) -> list[str]:
    from ..distributed.cluster import connect
    from ..distributed.ray_backend import unwrap
    from ..distributed.shipping import ship_registry

    ray = connect(address)
    shipped = ship_registry(registry)
    task = ray.remote(max_retries=0)(_ray_stage).options(**stage_resources(plan.build.get("device"),
                                                                          ray.cluster_resources()))
    finished = {s.key for s in plan.stages} - {s.key for s in todo}
    pending = list(todo)
    running: dict[Any, tuple[Stage, float]] = {}
    ran: list[str] = []
    try:
        while pending or running:
            for stage in [s for s in pending if all(d in finished for d in s.deps)]:
                pending.remove(stage)
                emit("start", stage, len(ran))
                _log(plan.out, stage, "start")
                running[task.remote(stage, str(plan.out), shipped)] = (stage, time.perf_counter())
            if not running:  # pragma: no cover - a plan's stages always come after their deps
                raise RunError("stages wait on stages that never run", culprit="experiment plan")
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                stage, start = running.pop(ref)
                try:
                    ray.get(ref)
                except ray.exceptions.RayTaskError as err:
                    raise unwrap(ray, err) from None
                finished.add(stage.key)
                ran.append(stage.key)
                _log(plan.out, stage, "finish")
                emit("finish", stage, len(ran), time.perf_counter() - start)
    finally:
        for ref in running:  # a failed stage stops the run; what finished stays finished
            ray.cancel(ref, force=True)
    return ran
