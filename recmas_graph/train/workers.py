"""Starting the workers of a data-parallel training run and reading how they ended.

:func:`train_in_workers` saves the caller's system (topology, current link weights: the folder
``save_pretrained`` writes) to a temporary folder, packs the caller's registry
(:func:`~recmas_graph.distributed.shipping.ship_registry`: a plugin that cannot travel is refused
here, named), and spawns N local processes with ``torch.multiprocessing`` (start method
``spawn``). Each worker rebuilds the system from that folder with the caller's build options (its
own copy of the frozen models), joins the ``gloo`` process group (``nccl`` with one GPU per worker
when the links are on CUDA) and runs :func:`~recmas_graph.train.session.train_here` as worker
``rank``. Rank 0 sends each :class:`~recmas_graph.train.loop.StepInfo` to the caller (its
``progress``), writes the metrics and checkpoints, and at the end the trained links, which the
caller loads into its system.

A worker that raises or is killed ends the run: the others are stopped at once (no worker waits
on a dead one), and the caller raises an error naming the worker's rank and the cause; the
checkpoints (written atomically by rank 0) stay as they were. A worker waiting on a hung one gives
up after ``timeout_s``.
"""

from __future__ import annotations

import os
import pickle
import queue as queue_module
import random
import shutil
import signal
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import RecmasError, RunError
from .data import TrainSample
from .loop import StepInfo, TrainConfig, TrainReport
from .parallel import DataParallel
from .session import Session, TrainOptions, train_here

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ..distributed.shipping import ShippedRegistry
    from ..runtime.system import RecursiveSystem

__all__ = ["DEFAULT_TIMEOUT_S", "train_in_workers"]

#: How long a worker waits in a collective (on the others) before giving up.
DEFAULT_TIMEOUT_S = 1800.0

_RESULT = "result.pt"


@dataclass(frozen=True)
class _Job:
    """Everything a worker needs, picklable."""

    work: str  # the temporary folder: saved system, rendezvous file, errors, result
    world: int
    registry: "ShippedRegistry"
    build: dict[str, Any]
    cuda: bool
    kind: str
    data: tuple[TrainSample, ...]
    out: str
    config: TrainConfig
    options: TrainOptions
    run_info: dict[str, Any]
    torch_rng: bytes
    python_rng: Any
    threads: int
    timeout_s: float


def _system_device(system: RecursiveSystem) -> torch.device:
    """The one device of the system's links and models; a system spread over several GPUs is refused."""
    devices = {p.device for p in system.parameters()} | {torch.device(a.device) for a in system.agents.values()
                                                          if getattr(a, "device", None) is not None}
    cuda = {d for d in devices if d.type == "cuda"}
    if not cuda:
        return torch.device("cpu")
    if len(devices) > 1:
        raise RunError(f"the system is spread over {', '.join(sorted(map(str, devices)))}; data-parallel training "
                       "gives each worker the whole system on one GPU", culprit="--workers",
                       hint="build it on one device (--device cuda), or train with --workers 1")
    return next(iter(cuda))


def train_in_workers(system: RecursiveSystem, kind: str, data: Sequence[TrainSample], out: str | Path,
                     config: TrainConfig, options: TrainOptions, *, workers: int, run_info: dict[str, Any],
                     progress: Callable[[StepInfo], None] | None = None,
                     timeout_s: float = DEFAULT_TIMEOUT_S) -> Session:
    """Train ``system``'s ``kind`` links over ``workers`` processes (see the module docstring); the
    trained links are loaded into ``system``. Returns rank 0's session."""
    import torch.multiprocessing as mp

    from ..distributed.shipping import ship_registry
    from ..runtime.pretrained import save_pretrained

    if config.batch_size < workers:
        raise RunError(f"a batch of {config.batch_size} samples cannot be shared by {workers} workers",
                       culprit="--workers", hint=f"use --batch-size {workers} or more (a multiple of {workers} gives "
                                                 "every worker the same share), or fewer workers")
    device = _system_device(system)
    if device.type == "cuda" and torch.cuda.device_count() < workers:
        raise RunError(f"{workers} workers need {workers} GPUs, {torch.cuda.device_count()} are visible",
                       culprit="--workers", hint="one worker per GPU: lower --workers")
    shipped = ship_registry(system.compiled.catalog, "the training workers")
    build = {k: v for k, v in (system.build_options or {}).items() if k not in ("models", "model", "device")}
    if device.type != "cuda":
        build["device"] = "cpu"
    work = Path(tempfile.mkdtemp(prefix="recmas-train-"))
    try:
        save_pretrained(system, work / "system")
        (work / "errors").mkdir()
        job = _Job(str(work), workers, shipped, build, device.type == "cuda", kind, tuple(data), str(out), config,
                   options, dict(run_info), bytes(torch.get_rng_state().numpy().tobytes()), random.getstate(),
                   max(1, torch.get_num_threads() // workers), float(timeout_s))
        context = mp.get_context("spawn")
        steps: Any = context.Queue()
        procs = mp.start_processes(_worker, args=(job, steps), nprocs=workers, join=False, start_method="spawn")
        try:
            while True:
                try:
                    done = procs.join(timeout=0.2)
                except (mp.ProcessRaisedException, mp.ProcessExitedException) as err:
                    raise _failure(err, procs.processes, work, workers, Path(out)) from None
                _drain(steps, progress)
                if done:
                    break
            _drain(steps, progress)
        except BaseException:
            _stop(procs.processes)
            raise
        finally:
            steps.close()
        return _result(work, system, Path(out))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _drain(steps: Any, progress: Callable[[StepInfo], None] | None) -> None:
    while True:
        try:
            info = steps.get_nowait()
        except queue_module.Empty:
            return
        if progress is not None:
            progress(info)


def _stop(processes: Sequence[Any]) -> None:
    """Stop every worker still running: SIGTERM, then SIGKILL after 10 s."""
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + 10
    for proc in processes:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join()


def _result(work: Path, system: RecursiveSystem, out: Path) -> Session:
    path = work / _RESULT
    if not path.is_file():
        raise RunError("the training workers stopped without finishing (interrupted?)", culprit="--workers",
                       hint=_resume_hint(out))
    state = torch.load(path, map_location="cpu", weights_only=True)
    links = {**{f"inner/{n}": m for n, m in system.inner_links.items()},
             **{f"outer/{e}": m for e, m in system.outer_links.items()}}
    with torch.no_grad():
        for name, module in links.items():
            module.load_state_dict(state["modules"][name])
    report = TrainReport(out=out, **state["report"])
    return Session(report, state["run_info"], int(state["train_samples"]), int(state["heldout_samples"]))


def _resume_hint(out: Path) -> str:
    saved = sorted((out / "checkpoints").glob("step_*.pt")) if (out / "checkpoints").is_dir() else []
    if saved:
        return f"the last checkpoint, {saved[-1].name}, is intact: rerun with --resume (resume=True) to continue from it"
    return "no checkpoint was written yet: run it again"


def _failure(err: Exception, processes: Sequence[Any], work: Path, world: int, out: Path) -> RecmasError:
    """The error that names the worker that ended the run first, and why."""
    codes = {rank: proc.exitcode for rank, proc in enumerate(processes)}
    index = int(getattr(err, "error_index", 0))
    killed = [r for r, c in codes.items() if c is not None and c < 0 and c != -signal.SIGTERM]
    code = codes.get(index)
    if code is not None and code < 0 and not os.access(work / "errors" / f"rank{index}.pkl", os.R_OK):
        killed.insert(0, index)  # the one the wait saw first, killed by a signal (SIGTERM from outside too)
    if killed:
        rank, code = killed[0], codes[killed[0]]
        assert code is not None
        return RunError(f"training worker {rank} of {world} was killed by signal {_signal_name(-code)}",
                        culprit=f"worker {rank}", hint=_resume_hint(out))
    reports = []
    for path in (work / "errors").glob("rank*.pkl"):
        try:
            reports.append(pickle.loads(path.read_bytes()))
        except Exception:  # noqa: BLE001 - a report cut short by the stop: the others say enough
            continue
    if not reports:
        return RunError(f"training worker {index} of {world} exited with code {code}", culprit=f"worker {index}",
                        hint=_resume_hint(out))
    first = min(reports, key=lambda r: r["time"])  # the cause; the others' errors follow from it
    rank = first["rank"]
    if first["recmas"] is not None:
        cls_name, message, culprit, hint = first["recmas"]
        import recmas_graph.errors as errors

        cls = getattr(errors, cls_name, RunError)
        found: RecmasError = cls(f"{message} (in training worker {rank} of {world})", culprit=culprit, hint=hint)
        return found
    return RunError(f"training worker {rank} of {world} failed: {first['error']}\n{first['traceback']}",
                    culprit=f"worker {rank}", hint=_resume_hint(out))


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _report_error(work: str, rank: int, err: BaseException) -> None:
    """Write what ended this worker where the caller reads it (atomically)."""
    recmas = (type(err).__name__, err.message, err.culprit, err.hint) if isinstance(err, RecmasError) else None
    record = {"time": time.time(), "rank": rank, "error": f"{type(err).__name__}: {err}", "recmas": recmas,
              "traceback": traceback.format_exc()}
    path = Path(work) / "errors" / f"rank{rank}.pkl"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(record))
    os.replace(tmp, path)


def _worker(rank: int, job: _Job, steps: Any) -> None:
    """One worker: rebuild the system, join the group, train its share; rank 0 writes the result."""
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(job.world), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(job.threads)
    parallel = None
    try:
        from ..runtime.pretrained import load_pretrained

        device = torch.device(f"cuda:{rank}") if job.cuda else torch.device("cpu")
        if job.cuda:
            torch.cuda.set_device(device)
        registry = job.registry.rebuild("a training worker")
        build = dict(job.build)
        if job.cuda:
            build["device"] = str(device)
        system = load_pretrained(Path(job.work) / "system", registry.compile, **build)
        parallel = DataParallel.start(rank, job.world, str(Path(job.work) / "rendezvous"), device=device,
                                      timeout_s=job.timeout_s)
        torch.set_rng_state(torch.frombuffer(bytearray(job.torch_rng), dtype=torch.uint8))
        random.setstate(job.python_rng)
        session = train_here(system, job.kind, job.data, job.out, job.config, job.options, run_info=job.run_info,
                             progress=steps.put if parallel.main else None, parallel=parallel)
        if parallel.main:
            links = {**{f"inner/{n}": m for n, m in system.inner_links.items()},
                     **{f"outer/{e}": m for e, m in system.outer_links.items()}}
            report = {k: v for k, v in asdict(session.report).items() if k != "out"}
            state = {"modules": {name: {k: v.detach().cpu() for k, v in m.state_dict().items()}
                                 for name, m in links.items()},
                     "report": report, "run_info": session.run_info, "train_samples": session.train_samples,
                     "heldout_samples": session.heldout_samples}
            path = Path(job.work) / _RESULT
            torch.save(state, path.with_suffix(".tmp"))
            os.replace(path.with_suffix(".tmp"), path)
    except Exception as err:
        _report_error(job.work, rank, err)
        raise
    finally:
        if parallel is not None:
            parallel.stop()
