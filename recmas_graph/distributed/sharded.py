"""Data-parallel evaluation: an evaluation's batches answered by Ray workers, each running a whole system.

The caller (:func:`recmas_graph.evaluate` with ``workers=N``) keeps the run folder: it cuts the
pending samples into the same batches as in one process, :class:`ShardedAnswerer` hands them to
``N`` :class:`EvalWorker` actors and yields each batch's records as it finishes, and the caller
appends them to ``results.jsonl``. Each question keeps its own seed, so a record does not depend on
which worker answered it; a worker that dies costs only its unfinished batch, and running the
evaluation again resumes from the records written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from ..errors import RunError
from ..topology.compile import CompiledTopology
from ..topology.spec import dump_topology
from .cluster import connect, worker_setup
from .ray_backend import _compile

__all__ = ["EvalWorker", "ShardedAnswerer"]


class EvalWorker:
    """Ray actor body: one whole system, answering and scoring batches of samples."""

    def __init__(self, spec_json: str, base_dir: str | None, build: Mapping[str, Any], threads: int = 1) -> None:
        from ..plugins.manager import default_registry

        worker_setup(threads)
        self.registry = default_registry()
        self.system = self.registry.build_system(_compile(spec_json, base_dir), **dict(build))

    def answer(self, batch: Sequence[tuple[str, Any]], options: Mapping[str, Any],
               fn: Callable[..., list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """The records of one batch: ``fn(system, batch, scorer=..., **options)`` (the caller's
        :func:`recmas_graph.eval.evaluate.answer_batch`), scored with the metric ``options["metric"]``."""
        from ..eval.scoring import get_metric

        options = dict(options)
        scorer = get_metric(options.pop("metric"), self.registry)
        return fn(self.system, list(batch), scorer=scorer, **options)

    def pid(self) -> int:
        """This worker's process id."""
        import os

        return os.getpid()


class ShardedAnswerer:
    """``workers`` Ray actors each holding ``compiled`` built with ``build``; :meth:`answer` spreads batches."""

    def __init__(self, compiled: CompiledTopology, build: Mapping[str, Any], *, workers: int,
                 address: str | None = None, cpus_per_worker: int = 1) -> None:
        if workers < 1:
            raise RunError(f"workers must be at least 1, got {workers}", culprit="--workers")
        self.ray = connect(address)
        build = {k: v for k, v in dict(build).items() if k not in ("model_cache", "on_model")}  # this process's
        spec_json = dump_topology(compiled.spec)
        base = str(compiled.base_dir) if compiled.base_dir is not None else None
        gpu = str(dict(build).get("device") or "").startswith("cuda")
        have = self.ray.cluster_resources()
        for kind, each in (("CPU", cpus_per_worker), ("GPU", 1 if gpu else 0)):
            if workers * each > have.get(kind, 0):
                raise RunError(f"{workers} workers need {workers * each} {kind}s; the Ray cluster has "
                               f"{int(have.get(kind, 0))}", culprit="--workers",
                               hint="use fewer --workers, or join a larger cluster with --ray-address")
        options = {"num_cpus": cpus_per_worker, **({"num_gpus": 1} if gpu else {})}
        remote = self.ray.remote(EvalWorker).options(**options)
        self.workers = [remote.remote(spec_json, base, dict(build), cpus_per_worker) for _ in range(workers)]

    def answer(self, batches: Sequence[list[tuple[str, Any]]], options: Mapping[str, Any],
               fn: Callable[..., list[dict[str, Any]]]) -> Iterator[list[dict]]:
        """Each batch's records (``fn`` as :meth:`EvalWorker.answer`), as batches finish (two in
        flight per worker). A dead worker's batches raise :class:`RunError` after the batches still
        running elsewhere are yielded."""
        ray = self.ray
        queue = list(enumerate(batches))
        running: dict[Any, tuple[int, int]] = {}  # ref -> (worker, batch index)
        failed: dict[int, list[str]] = {}  # dead worker -> the ids it did not answer
        reasons: dict[int, str] = {}
        alive = set(range(len(self.workers)))

        def submit(worker: int) -> None:
            if queue and not failed:
                index, batch = queue.pop(0)
                running[self.workers[worker].answer.remote(batch, dict(options), fn)] = (worker, index)

        for worker in range(len(self.workers)):
            submit(worker)
            submit(worker)
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            worker, index = running.pop(ready[0])
            try:
                records = ray.get(ready[0])
            except ray.exceptions.RayActorError as err:
                alive.discard(worker)
                failed.setdefault(worker, []).extend(sid for sid, _ in batches[index])
                reasons[worker] = str(err).splitlines()[0]
                continue
            yield records
            if worker in alive:
                submit(worker)
        if failed:
            words = [f"Ray worker {w + 1} died ({reasons[w]}) before answering {', '.join(ids)}"
                     for w, ids in sorted(failed.items())]
            raise RunError("; ".join(words), culprit="--workers",
                           hint="the finished records are saved: run the same command again to resume")

    def shutdown(self) -> None:
        """Stop the workers."""
        for worker in self.workers:
            self.ray.kill(worker)
