"""Data-parallel evaluation: an evaluation's batches answered by Ray workers, each running a whole system.

The caller (:func:`recmas_graph.evaluate` with ``workers=N``) keeps the run folder: it cuts the
pending samples into the same batches as in one process, :class:`ShardedAnswerer` hands them to
``N`` :class:`EvalWorker` actors and yields each batch's records as it finishes, and the caller
appends them to ``results.jsonl``. Each question keeps its own seed, so a record does not depend on
which worker answered it. A worker that dies hands its unfinished batches to the others; only when
every worker is gone does the evaluation stop, and running it again resumes from the records
written (a record is written once, by the caller, when its batch has finished).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from ..errors import RunError
from ..topology.compile import CompiledTopology
from ..topology.spec import dump_topology
from .cluster import connect, task_resources, worker_setup
from .ray_backend import _compile, unwrap
from .shipping import ShippedRegistry, ship_registry

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ..plugins.manager import Registry

__all__ = ["EvalWorker", "ShardedAnswerer"]


class EvalWorker:
    """Ray actor body: one whole system, answering and scoring batches of samples."""

    def __init__(self, spec_json: str, base_dir: str | None, build: Mapping[str, Any], threads: int = 1,
                 shipped: ShippedRegistry = ShippedRegistry()) -> None:
        self.error: BaseException | None = None
        try:  # an actor whose constructor raises dies with a garbled message: keep the error for ready()
            worker_setup(threads)
            compiled = _compile(spec_json, base_dir, shipped)
            self.registry = cast("Registry", compiled.catalog)  # a shipped registry compiles it
            self.system = self.registry.build_system(compiled, **dict(build))
        except Exception as err:  # noqa: BLE001 - re-raised by ready()
            self.error = err

    def ready(self) -> bool:
        """Raise the error that stopped this worker's build, if any."""
        if self.error is not None:
            raise self.error
        return True

    def answer(self, batch: Sequence[tuple[str, Any]], options: Mapping[str, Any],
               fn: Callable[..., list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """The records of one batch: ``fn(system, batch, scorer=..., **options)`` (the caller's
        :func:`recmas_graph.eval.evaluate.answer_batch`), scored with the metric ``options["metric"]``."""
        options = dict(options)
        name = options.pop("metric")
        scorer = self.registry.metrics.get(name)
        if scorer is None:  # the caller resolved it: a metric of a plugin this worker's registry lacks
            raise RunError(f"the metric {name!r} is not registered on the Ray worker", culprit=f"metric {name!r}",
                           hint="install the plugin that registers it where the Ray workers run")
        return fn(self.system, list(batch), scorer=scorer, **options)


def _wants_gpu(device: Any, compiled: CompiledTopology) -> bool:
    """Whether a build's ``device`` option (one for all, or a map agent -> device over the spec's
    own ``device``) may place some agent on a GPU."""
    if isinstance(device, str):
        return device.startswith(("cuda", "auto"))
    chosen = dict(device or {})
    return any(str(chosen.get(a.name) or a.device or "auto").startswith(("cuda", "auto"))
               for a in compiled.spec.agents)


class ShardedAnswerer:
    """``workers`` Ray actors each holding ``compiled`` built with ``build``; :meth:`answer` spreads batches.

    Each worker reserves ``cpus_per_worker`` CPUs and ``gpus_per_worker`` GPUs (default: one when
    the cluster has GPUs and ``build["device"]`` may use one, else none, and then it sees no GPU);
    inside a worker the GPUs it reserved are ``cuda:0``, ``cuda:1``, ... The workers are built (and
    any build error raised as itself) before :meth:`answer` is called.
    """

    def __init__(self, compiled: CompiledTopology, build: Mapping[str, Any], *, workers: int,
                 address: str | None = None, cpus_per_worker: int = 1, gpus_per_worker: int | None = None) -> None:
        if workers < 1:
            raise RunError(f"workers must be at least 1, got {workers}", culprit="--workers")
        self.ray = connect(address)
        build = {k: v for k, v in dict(build).items() if k not in ("model_cache", "on_model")}  # this process's
        have = self.ray.cluster_resources()
        if gpus_per_worker is None:
            gpus_per_worker = 1 if have.get("GPU", 0) and _wants_gpu(build.get("device"), compiled) else 0
        for kind, each in (("CPU", cpus_per_worker), ("GPU", gpus_per_worker)):
            if workers * each > have.get(kind, 0):
                raise RunError(f"{workers} workers need {workers * each} {kind}s; the Ray cluster has "
                               f"{int(have.get(kind, 0))}", culprit="--workers",
                               hint="use fewer --workers, or join a larger cluster with --ray-address")
        remote = self.ray.remote(EvalWorker).options(**task_resources(cpus_per_worker, gpus_per_worker))
        spec_json = dump_topology(compiled.spec)
        base = str(compiled.base_dir) if compiled.base_dir is not None else None
        shipped = ship_registry(compiled.catalog)
        self.workers = [remote.remote(spec_json, base, build, cpus_per_worker, shipped) for _ in range(workers)]
        try:
            self.ray.get([w.ready.remote() for w in self.workers])
        except self.ray.exceptions.RayTaskError as err:
            self.shutdown()
            raise unwrap(self.ray, err) from None
        except self.ray.exceptions.RayActorError as err:
            self.shutdown()
            raise RunError(f"a Ray worker died while building the system: {str(err).splitlines()[0]}",
                           culprit="--workers", hint="see the Ray logs (/tmp/ray/session_latest/logs); out of memory? "
                                                     "use fewer --workers per machine") from None
        except BaseException:
            self.shutdown()
            raise

    def answer(self, batches: Sequence[list[tuple[str, Any]]], options: Mapping[str, Any],
               fn: Callable[..., list[dict[str, Any]]]) -> Iterator[list[dict]]:
        """Each batch's records (``fn`` as :meth:`EvalWorker.answer`), as batches finish (two in
        flight per worker). ``options["order"]`` (sample id -> position) is sent per batch for its
        own samples only. A dead worker's batches go to the others; when none is left,
        :class:`RunError` is raised after the batches still running are yielded."""
        ray = self.ray
        order = dict(options.get("order") or {})
        queue = list(range(len(batches)))
        running: dict[Any, tuple[int, int]] = {}  # ref -> (worker, batch index)
        alive = set(range(len(self.workers)))
        deaths: list[str] = []
        tried: dict[int, int] = {}  # batch -> workers that died answering it
        lost: list[int] = []  # batches that killed two workers: not tried again in this run

        def submit(worker: int) -> None:
            if queue and worker in alive:
                index = queue.pop(0)
                mine = {**options, "order": {sid: order[sid] for sid, _ in batches[index] if sid in order}}
                running[self.workers[worker].answer.remote(batches[index], mine, fn)] = (worker, index)

        for worker in range(len(self.workers)):
            submit(worker)
            submit(worker)
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            worker, index = running.pop(ready[0])
            try:
                records = ray.get(ready[0])
            except ray.exceptions.RayActorError as err:
                if worker in alive:
                    deaths.append(f"Ray worker {worker + 1} died ({str(err).splitlines()[0]})")
                alive.discard(worker)
                tried[index] = tried.get(index, 0) + 1
                if tried[index] < 2:
                    queue.insert(0, index)  # answered by another worker, or by the next run
                else:
                    lost.append(index)  # it may be what kills workers: do not let it take them all
                for other in sorted(alive):
                    while queue and sum(1 for w, _ in running.values() if w == other) < 2:
                        submit(other)
                continue
            except ray.exceptions.RayTaskError as err:
                raise unwrap(ray, err) from None
            yield records
            submit(worker)
        if queue or lost:
            left = sum(len(batches[i]) for i in queue + lost)
            why = "every worker is gone" if queue else "batches that killed two workers: " + "; ".join(
                ", ".join(sid for sid, _ in batches[i]) for i in lost)
            raise RunError("; ".join(deaths) + f": {why}, {left} question(s) unanswered", culprit="--workers",
                           hint="the finished records are saved: run the same command again to resume")

    def shutdown(self) -> None:
        """Stop the workers."""
        for worker in self.workers:
            self.ray.kill(worker)
