"""The executor: walk a schedule wave by wave, feeding each pass from the message store.

It knows nothing about models: a :class:`~recmas_graph.runtime.execution.backends.PassRunner` runs the
passes. Run hooks (``recmas_run_start``, ``recmas_before_pass``, ``recmas_after_pass``,
``recmas_run_end``) are called here, through pluggy's hook relay.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ...topology.schedule import Schedule
from .backends import PassRequest, PassRunner, RunSettings
from .messages import MessageStore
from .results import RunResult

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ..system import RecursiveSystem

__all__ = ["execute", "NO_HOOKS"]


class _NoHooks:
    """A hook relay whose every hook does nothing (for systems built without plugins)."""

    def __getattr__(self, name: str) -> Any:
        return lambda **kwargs: []


#: The hook relay of a system without plugins.
NO_HOOKS: Any = _NoHooks()


def execute(schedule: Schedule, runner: PassRunner, settings: RunSettings, *, hooks: Any = NO_HOOKS,
            system: RecursiveSystem | None = None, keep: bool = False) -> RunResult:
    """Run ``schedule`` with ``runner``; return the answers (or the loss), the trace and kept messages.

    ``keep`` keeps every message and the thoughts (on the CPU) in the result.
    """
    questions = list(settings.questions)
    store = MessageStore(schedule.consumer_counts(), keep=keep)
    result = RunResult(questions, [], [], [], 0.0, question_tokens=[0] * len(questions))
    start = time.perf_counter()
    hooks.recmas_run_start(system=system, questions=questions)
    begin, end = getattr(runner, "begin_run", None), getattr(runner, "end_run", None)
    if begin is not None:
        begin(settings)
    try:
        _walk(schedule, runner, settings, store, result, start, hooks, system, keep)
    finally:
        if end is not None:
            end()
    result.wall_s = time.perf_counter() - start
    hooks.recmas_run_end(system=system, result=result)
    return result


def _walk(schedule: Schedule, runner: PassRunner, settings: RunSettings, store: MessageStore, result: RunResult,
          start: float, hooks: Any, system: RecursiveSystem | None, keep: bool) -> None:
    """Run the waves in order, putting each pass's messages in ``store`` and its outcome in ``result``."""
    for wave in schedule.waves:
        requests = [PassRequest(step, settings, store.gather(step.inputs)) for step in wave]
        for step in wave:
            hooks.recmas_before_pass(system=system, step=step)
        outcomes = runner.run_wave(requests)
        for step, outcome in zip(wave, outcomes, strict=True):
            for edge_id, message in outcome.messages.items():
                store.put(edge_id, step.round, message)
                if isinstance(message, list):
                    result.texts[(edge_id, step.round)] = list(message)
                elif keep:
                    result.messages[(edge_id, step.round)] = message.detach().cpu()
            store.release(step.inputs)
            if keep and outcome.thoughts is not None:
                result.thoughts[(step.agent, step.round)] = outcome.thoughts.detach().cpu()
            if step.decode:
                result.answers = outcome.answers or []
                result.generated_tokens = outcome.generated_tokens or []
                result.loss = outcome.loss
                result.scores = outcome.scores
                if outcome.loss is not None:
                    result.target_losses[step.agent] = (outcome.loss, outcome.loss_tokens)
            if outcome.target_loss is not None:
                result.target_losses[step.agent] = outcome.target_loss
            if outcome.row_tokens:
                result.question_tokens = [a + b for a, b in zip(result.question_tokens, outcome.row_tokens)]
            outcome.record.start_s = max(0.0, outcome.record.start_s - start)  # a runner's perf_counter() time
            result.trace.append(outcome.record)
            hooks.recmas_after_pass(system=system, step=step, record=outcome.record.as_dict())
