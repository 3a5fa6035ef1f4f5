"""Many questions through a system, a batch at a time: what ``recmas run`` and evaluations share.

:func:`run_batches` yields each batch's :class:`Batch` as soon as it finishes, so callers write or
print finished work before the next batch starts. Question ``i`` of the whole list samples with
seed ``seed + i`` (or ``seeds[i]``), so an answer depends neither on the batch size nor on its
batch-mates. A batch that fails with an unexpected exception raises :class:`BatchError`, which
names the batch and its questions; recmas errors and Ctrl-C pass through unchanged.

With ``backoff=True`` a batch that runs out of memory (:mod:`.oom`) is run again in two halves,
each halved again while it runs out, down to single questions (where the
:class:`~recmas_graph.runtime.memory.oom.OutOfMemory` error is raised). Each half is yielded as its own
:class:`Batch` (the original batch's ``index``, its own ``start``), so the answers are those of
the same questions run in smaller batches.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...errors import RecmasError, RunError
from ..memory.oom import OutOfMemory, free_cached_memory, out_of_memory
from ..options import RunOptions

if TYPE_CHECKING:
    from .results import RunResult
    from ..agent.scoring import ScoreResult
    from ..system import RecursiveSystem

__all__ = ["Batch", "BatchError", "run_batches"]


@dataclass(frozen=True)
class Batch:
    """One finished batch: its number, where it starts in the question list, its ids, the result."""

    index: int
    start: int
    ids: tuple[str, ...]
    result: RunResult | ScoreResult
    wall_s: float

    @property
    def positions(self) -> range:
        """Positions of this batch's questions in the whole list."""
        return range(self.start, self.start + len(self.ids))


class BatchError(RunError):
    """A batch failed with an unexpected exception (kept as ``__cause__``); earlier batches finished."""

    def __init__(self, message: str, *, index: int = 0, ids: Sequence[str] = (), hint: str | None = None) -> None:
        # defaults: an exception is unpickled as cls(message) before its attributes come back (Ray workers)
        super().__init__(message, culprit=f"questions {', '.join(ids)}", hint=hint)
        self.index = index
        self.ids = tuple(ids)


def run_batches(system: RecursiveSystem, questions: Sequence[str | Mapping[str, str]], options: RunOptions | None = None, *,
                batch_size: int, ids: Sequence[str] | None = None, seeds: Sequence[int] | None = None,
                backoff: bool = False, continuations: Sequence[Sequence[str]] | None = None,
                **run_options: Any) -> Iterator[Batch]:
    """Run ``questions`` on ``system`` ``batch_size`` at a time, yielding each finished :class:`Batch`.

    ``ids`` name the questions in errors (default: their 1-based positions); ``options`` and
    ``run_options`` go to :meth:`~recmas_graph.runtime.RecursiveSystem.run` (``task``, ``rounds``,
    decoding, ...); question ``i`` samples with ``seeds[i]`` (default: ``seed + i``).
    ``backoff``: a batch that runs out of memory is retried in halves (see the module docstring).
    ``continuations`` (one list per question): score them instead of answering
    (:meth:`~recmas_graph.runtime.RecursiveSystem.score`; each batch's ``result`` is a
    :class:`~recmas_graph.runtime.agent.scoring.ScoreResult`).
    """
    if batch_size < 1:
        raise RunError(f"batch_size must be at least 1, got {batch_size}", culprit="--batch-size")
    opts = RunOptions.of(options, **run_options)
    names = [str(i) for i in ids] if ids is not None else [str(i + 1) for i in range(len(questions))]
    all_seeds = list(seeds) if seeds is not None else [(opts.seed or 0) + i for i in range(len(questions))]
    if len(names) != len(questions) or len(all_seeds) != len(questions):
        raise RunError("ids and seeds must have one entry per question", culprit="run_batches()")
    if continuations is not None and len(continuations) != len(questions):
        raise RunError("continuations must have one entry per question", culprit="run_batches()")
    for index, start in enumerate(range(0, len(questions), batch_size)):
        stop = min(start + batch_size, len(questions))
        yield from _run_batch(system, questions, names, all_seeds, index, start, stop, backoff, opts, continuations)


def _run_batch(system: RecursiveSystem, questions: Sequence[str | Mapping[str, str]], names: Sequence[str],
               seeds: Sequence[int], index: int, start: int, stop: int, backoff: bool,
               options: RunOptions, continuations: Sequence[Sequence[str]] | None = None) -> Iterator[Batch]:
    """Run (or score) questions ``start:stop`` as one batch, or (``backoff``, out of memory) as halves."""
    t0 = time.perf_counter()
    oom: OutOfMemory | None = None
    result: RunResult | ScoreResult
    try:
        if continuations is not None:
            result = system.score(list(questions[start:stop]), list(continuations[start:stop]), options)
        else:
            result = system.run(list(questions[start:stop]), options, seeds=list(seeds[start:stop]))
    except KeyboardInterrupt:
        raise
    except Exception as err:
        oom = out_of_memory(err, batch_size=stop - start) if backoff else None
        if oom is None:
            if isinstance(err, RecmasError):
                raise
            raise BatchError(f"batch {index + 1} failed: {type(err).__name__}: {err}", index=index,
                             ids=names[start:stop], hint="the batches before it finished") from err
        if stop - start == 1 or oom.loading:  # a model that does not load fits no smaller batch either
            if oom is err:
                raise
            raise oom from err
    if oom is None:
        yield Batch(index, start, tuple(names[start:stop]), result, time.perf_counter() - t0)
        return
    del oom  # its traceback holds the failed attempt's tensors
    free_cached_memory()
    middle = start + (stop - start + 1) // 2
    yield from _run_batch(system, questions, names, seeds, index, start, middle, backoff, options, continuations)
    yield from _run_batch(system, questions, names, seeds, index, middle, stop, backoff, options, continuations)
